"""Run untrusted PoT programs (teacher or student output): isolated, bounded, and fast.

Threat model: whoever wrote the program (teacher, student) is hostile. The README's "Security" section
says what each mode guarantees; in short:

- The host keeps a pool of persistent worker processes (`edge_distill.sandbox_worker`, a fresh
  interpreter, never a fork of the host, which may hold torch threads, gigabytes and API keys). A worker
  gets a scrubbed environment (`_WORKER_ENV`: no secrets, no HOME) and an empty private directory as
  its cwd, imports the allowed modules once, and forks one child per program.
- The child is confined by the kernel (`sandbox_os`): uid nobody when the host is root, no new
  privileges, Landlock (reads only beneath the Python installation, no writes anywhere), a seccomp
  filter (no exec, fork, sockets, signals, ptrace or file changes), a private network namespace, and
  rlimits (CPU, address space, file size 0, processes 0, open files, no core). A CPU-time limit of
  `timeout_s` decides timeouts, so a label does not depend on machine load; a wall-clock limit of
  `_WALL_FACTOR * timeout_s + 1` catches programs that sleep.
- On top of that, a Python layer (restricted builtins, an import allow-list, an audit hook) turns the
  common attempts into readable errors. It is a tripwire, not the boundary.
- `strict` mode (the default) refuses to run anything unless a probe at worker start shows the seccomp
  filter working; `weak` runs with whatever the platform offers (`sandbox.mode: weak` in the config,
  or `EDGE_DISTILL_SANDBOX_MODE=weak` where no config is read).
- Every byte from a worker is hostile to the host: frames are size-capped and schema-checked, answers
  capped in length and digits and normalised without exceptions; anything else becomes a failed
  `PotResult`, and a worker that sent it is killed and replaced.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

from edge_distill.errors import EdgeDistillError
from edge_distill.sandbox_protocol import (
    MAX_ERROR_CHARS,
    MAX_FRAME_BYTES,
    PotResult,
    send_frame,
    to_result,
)
from edge_distill.sandbox_worker import ALLOWED_MODULES, SIMULATE_NO_BOUNDARY_ENV

__all__ = [
    "ALLOWED_MODULES",
    "MODES",
    "PotResult",
    "SandboxPool",
    "SandboxUnavailable",
    "run_program",
    "run_programs",
]

log = logging.getLogger(__name__)

MODES = ("strict", "weak")
MODE_ENV = "EDGE_DISTILL_SANDBOX_MODE"
_MAX_PROGRAM_CHARS = 100_000
_WALL_FACTOR = 10.0  # generous: on a loaded machine the CPU limit, not the wall clock, must decide
_WORKER_START_S = 120.0  # importing sympy on a loaded 2-core box can take many seconds
_HOST_GRACE_S = 5.0  # the worker enforces the limits; the host only catches a hung worker
# The whole environment a worker sees: nothing the host holds (API keys, tokens, HOME) gets in.
_WORKER_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",  # set iteration order, hence some answers, is the same on every run
    "PYTHONDONTWRITEBYTECODE": "1",
}
# The worker imports exactly what the host can (venv, PYTHONPATH, user site: its environment is
# scrubbed, so it gets the host's sys.path as an argument), with this edge_distill first. `-c` rather
# than `-m`, and the user's cwd left out: nothing in the user's directory can shadow a module.
_BOOTSTRAP = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from edge_distill.sandbox_worker import main; main()"


def _worker_sys_path() -> str:
    cwd = os.getcwd()
    paths = [str(Path(__file__).resolve().parents[1])]
    for p in sys.path:  # absolute: the worker runs in another directory
        p = os.path.abspath(p) if p else cwd
        if p != cwd and p not in paths and os.path.exists(p):
            paths.append(p)
    return json.dumps(paths)


class SandboxUnavailable(EdgeDistillError):
    """The strong isolation boundary cannot be established here and weak mode was not chosen."""


def _default_mode() -> str:
    """The mode where the caller passes none: $EDGE_DISTILL_SANDBOX_MODE, else strict. A run passes its
    `sandbox.mode` (Judging.sandbox_mode) explicitly; there is no process-wide setting."""
    mode = os.environ.get(MODE_ENV, "strict")
    if mode not in MODES:
        raise SandboxUnavailable(f"{MODE_ENV}={mode!r}: must be one of {', '.join(MODES)}")
    return mode


# --------------------------------------------------------------------------- host side
class _Worker:
    def __init__(self, cwd: str, simulate_no_boundary: bool) -> None:
        env = dict(_WORKER_ENV)
        if simulate_no_boundary:
            env[SIMULATE_NO_BOUNDARY_ENV] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, _worker_sys_path()],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal is the host's business, not the worker's
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        self.out_fd = self.proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        os.set_blocking(self.stdin.fileno(), False)
        self.buf = bytearray()  # bytes received that do not yet form a whole frame
        self.ready = False
        self.request_id = 0

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.stdin.close()
        self.proc.stdout.close()  # type: ignore[union-attr]


class SandboxPool:
    """A pool of pre-started sandbox workers. Thread-safe; one batch runs at a time.

    `mode`: "strict" (default: refuse to run programs unless the OS boundary is proven to work) or
    "weak". The underscored arguments exist for tests of the layers in isolation."""

    def __init__(
        self,
        workers: int | None = None,
        mode: str | None = None,
        *,
        _python_layer: bool = True,
        _simulate_no_boundary: bool = False,
    ) -> None:
        if not hasattr(os, "fork"):
            raise SandboxUnavailable("the PoT sandbox needs os.fork (Linux or macOS)")
        self.mode = mode or _default_mode()
        if self.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {MODES}, not {self.mode!r}")
        env_n = os.environ.get("EDGE_DISTILL_SANDBOX_WORKERS")
        n = workers or (int(env_n) if env_n and env_n.isdigit() else min(4, os.cpu_count() or 1))
        self.pid = os.getpid()
        self.python_layer = _python_layer
        self.layers: list[str] = []  # what the last ready worker reported (e.g. netns, landlock, seccomp)
        self._simulate = _simulate_no_boundary
        self._lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="edge-distill-sandbox-")
        self._workers = [self._new_worker() for _ in range(max(1, n))]
        self.restarts = 0
        self.seq = 0  # request ids, unique per pool: a frame answering any other request is a lie
        self._announced = False
        self.unavailable = ""  # why strict mode refused, once a worker's probe failed

    def _new_worker(self) -> _Worker:
        return _Worker(self._dir, self._simulate)

    def close(self) -> None:
        with self._lock:  # a batch running in another thread finishes first (its deadlines bound it)
            for w in self._workers:
                w.kill()
            self._workers = []
            shutil.rmtree(self._dir, ignore_errors=True)  # our own mkdtemp directory, nothing else

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        self.restarts += 1
        new = self._new_worker()
        self._workers[self._workers.index(w)] = new
        return new

    def _on_ready(self, frame: dict[str, Any]) -> None:
        """A worker finished starting: enforce the mode against what its probe found."""
        layers = frame.get("layers")
        self.layers = [str(x)[:40] for x in layers][:8] if isinstance(layers, list) else []
        if frame.get("strict_ok") is True:
            if not self._announced:
                log.info("PoT sandbox: %s mode, OS boundary: %s", self.mode, ", ".join(self.layers))
                self._announced = True
            return
        why = str(frame.get("why_not") or "unknown reason")[:MAX_ERROR_CHARS]
        if self.mode == "strict":
            self.unavailable = (
                f"the PoT sandbox cannot establish its OS isolation boundary here ({why}); refusing to run "
                "model-written code. To run with weaker isolation (see README, 'Security'), set "
                "`sandbox.mode: weak` in the run config (CLI override: sandbox.mode=weak), or "
                f"{MODE_ENV}=weak for commands without a config (edge-distill bench)."
            )
            raise SandboxUnavailable(self.unavailable)
        if not self._announced:
            log.warning(
                "PoT sandbox in WEAK mode: no OS boundary (%s); Python-level checks and rlimits only", why
            )
            self._announced = True

    def run(self, programs: list[str], timeout_s: float = 2.0, memory_mb: int = 512) -> list[PotResult]:
        """Run every program (in parallel across workers); results in input order.
        `timeout_s` is CPU time per program; wall clock is capped at a generous multiple of it."""
        with self._lock:
            if self.unavailable:  # every later call refuses too (children would refuse anyway)
                raise SandboxUnavailable(self.unavailable)
            return _Batch(self, programs, timeout_s, memory_mb).run()


class _Batch:
    """One `SandboxPool.run`: keeps every ready worker busy, collects results, replaces dead/hung workers."""

    def __init__(self, pool: SandboxPool, programs: list[str], timeout_s: float, memory_mb: int) -> None:
        self.pool, self.programs, self.memory_mb = pool, programs, memory_mb
        self.cpu_s = float(timeout_s)
        self.wall_s = _WALL_FACTOR * self.cpu_s + 1.0
        self.results: list[PotResult | None] = [None] * len(programs)
        self.pending = deque(range(len(programs)))
        self.attempts = [0] * len(programs)
        self.busy: dict[_Worker, tuple[int, float]] = {}  # worker -> (program index, host deadline)
        self.starting: dict[_Worker, float] = {}  # worker -> start deadline
        self.sel = selectors.DefaultSelector()

    def run(self) -> list[PotResult]:
        try:
            for w in self.pool._workers:
                self._watch(w)
            while self.pending or self.busy:
                self._dispatch()
                deadlines = [d for _, d in self.busy.values()] + list(self.starting.values())
                wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
                for key, _ in self.sel.select(timeout=wait):
                    self._receive(key.data)
                self._check_deadlines()
        finally:
            self.sel.close()
        return [r if r is not None else PotResult(False, error="not run") for r in self.results]

    def _watch(self, w: _Worker) -> None:
        self.sel.register(w.out_fd, selectors.EVENT_READ, w)
        if not w.ready:
            self.starting[w] = time.monotonic() + _WORKER_START_S

    def _swap(self, w: _Worker) -> None:
        self.sel.unregister(w.out_fd)
        self.starting.pop(w, None)
        self._watch(self.pool._replace(w))

    def _dispatch(self) -> None:
        for w in list(self.pool._workers):
            if not (self.pending and w.ready and w not in self.busy):
                continue
            i = self.pending.popleft()
            code = self.programs[i]
            if not isinstance(code, str) or len(code) > _MAX_PROGRAM_CHARS:
                self.results[i] = PotResult(
                    False, error=f"program is not text or longer than {_MAX_PROGRAM_CHARS} chars"
                )
                continue
            self.pool.seq += 1
            req = {
                "id": self.pool.seq,
                "code": code,
                "cpu_s": self.cpu_s,
                "wall_s": self.wall_s,
                "memory_mb": self.memory_mb,
                "strict": self.pool.mode == "strict",
                "python_layer": self.pool.python_layer,
            }
            try:
                send_frame(w.stdin.fileno(), req, timeout_s=_HOST_GRACE_S)
            except OSError:  # the worker died or stopped reading: run the program on its replacement
                self.pending.appendleft(i)
                self._swap(w)
                continue
            self.busy[w] = (i, time.monotonic() + self.wall_s + _HOST_GRACE_S)
            w.request_id = self.pool.seq

    def _receive(self, w: _Worker) -> None:
        """Read what the worker sent so far (never blocking: a worker that stalls mid-frame is caught
        by the deadlines) and handle every complete frame in it."""
        try:
            chunk = os.read(w.out_fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._died(w)
            return
        w.buf += chunk
        while len(w.buf) >= 4:
            size = struct.unpack_from("<I", w.buf)[0]
            if size > MAX_FRAME_BYTES:
                self._misbehaved(w, f"frame of {size} bytes")
                return
            if len(w.buf) < 4 + size:
                return
            body = bytes(w.buf[4 : 4 + size])
            del w.buf[: 4 + size]
            try:
                frame = json.loads(body)
            except (ValueError, RecursionError) as e:  # garbage, undecodable, too deep, huge ints
                self._misbehaved(w, f"unreadable frame ({type(e).__name__})")
                return
            if not w.ready and isinstance(frame, dict) and frame.get("ready") is True:
                w.ready = True
                self.starting.pop(w, None)
                self.pool._on_ready(frame)
            elif w in self.busy and (result := to_result(frame, w.request_id)) is not None:
                i, _ = self.busy.pop(w)
                self.results[i] = result
            else:
                self._misbehaved(w, "malformed or unexpected frame")
                return

    def _died(self, w: _Worker) -> None:
        log.warning("sandbox worker %d died (rc=%s); replacing it", w.proc.pid, w.proc.poll())
        if w in self.busy:
            # Programs run in the worker's children, so a dead worker was killed from outside
            # (OOM killer, a user): retry once before calling it a failure.
            i, _ = self.busy.pop(w)
            self.attempts[i] += 1
            if self.attempts[i] < 2:
                self.pending.appendleft(i)
            else:
                self.results[i] = PotResult(False, error="sandbox worker died running the program")
        self._swap(w)

    def _misbehaved(self, w: _Worker, why: str) -> None:
        log.warning("sandbox worker %d sent a %s; replacing it", w.proc.pid, why)
        if w in self.busy:
            i, _ = self.busy.pop(w)
            self.results[i] = PotResult(False, error=f"sandbox: {why}")
        self._swap(w)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for w, (i, deadline) in list(self.busy.items()):
            if now > deadline:
                self.busy.pop(w)
                self.results[i] = PotResult(
                    False, error=f"timeout: worker unresponsive after {self.wall_s:g}s"
                )
                log.warning("sandbox worker %d hung; replacing it", w.proc.pid)
                self._swap(w)
        if any(now > d for d in self.starting.values()):
            raise RuntimeError(f"sandbox worker did not start within {_WORKER_START_S}s")


_POOLS: dict[str, SandboxPool] = {}  # one shared pool per mode
_POOL_LOCK = threading.Lock()


def _default_pool(mode: str | None = None) -> SandboxPool:
    mode = mode or _default_mode()
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {MODES}, not {mode!r}")
    with _POOL_LOCK:
        pool = _POOLS.get(mode)
        if pool is None or pool.pid != os.getpid():  # a forked host must not share the parent's pipes
            pool = _POOLS[mode] = SandboxPool(mode=mode)
            atexit.register(pool.close)
        return pool


def run_programs(
    programs: list[str], timeout_s: float = 2.0, memory_mb: int = 512, *, mode: str | None = None
) -> list[PotResult]:
    """Run PoT programs in the shared sandbox pool of `mode` (strict | weak; None: $EDGE_DISTILL_SANDBOX_MODE,
    else strict); each must leave an answer (`answer`, `ans`, `result` or `solution()`: the rule at
    `sandbox_worker.ANSWER_NAMES`)."""
    if not programs:
        return []
    return _default_pool(mode).run(list(programs), timeout_s=timeout_s, memory_mb=memory_mb)


def run_program(
    program: str, timeout_s: float = 2.0, memory_mb: int = 512, *, mode: str | None = None
) -> PotResult:
    return run_programs([program], timeout_s=timeout_s, memory_mb=memory_mb, mode=mode)[0]
