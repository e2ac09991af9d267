"""One writer per run directory: an advisory `flock` on `<run>/.edge-distill.lock`.

Two `edge-distill run` processes on the same directory used to both proceed, interleave their stage
outputs and pay the teacher twice. The lock is taken before anything in the directory is read or
deleted; a second process fails at once with a message naming the holder (pid, host, command, since).
The kernel drops a flock when its holder dies, so a lock left by a killed run never blocks: the file
stays, its stale contents are simply overwritten by the next holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from edge_distill.errors import StageError, clip
from edge_distill.io import open_regular

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not guarded there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".edge-distill.lock"


def holder_text(info: dict[str, object]) -> str:
    if not info:
        return "another process (it has not written its details yet)"
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(`{clip(info.get('command', '?'), 120)}`, since {info.get('since', '?')})"
    )


class RunLock:
    """An exclusive, non-blocking lock on a run directory, held until `release()` or process exit."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        if fcntl is None:
            log.warning("no flock on this platform: %s is not guarded against concurrent runs", self.path)
            return
        # O_CLOEXEC (child processes must not keep the lock alive after us) and never through a link
        # planted in the run directory: it would be truncated and overwritten below.
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            os.close(fd)
            raise StageError(
                f"run directory {self.path.parent} is in use by {holder_text(info)}: wait for it to "
                "finish or stop it, or choose another name=<name>. Two runs in one directory would mix "
                "their outputs and pay the teacher twice"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500],
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as e:  # a full disk: the flock still guards, only the holder's details are missing
            log.warning("could not record the lock holder in %s: %s", self.path, e.strerror)

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it could race a process that just opened it)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def _read_info(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
