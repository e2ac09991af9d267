"""The start probe of the PoT sandbox's OS boundary: does every guarantee hold, shown by a real child?

`probe(boundary)` forks a throwaway child that applies the boundary (`sandbox_os.Boundary`) and checks each
guarantee of `sandbox_os.GUARANTEES` for real: the calls must fail with a permission error, a SIGIO
aimed at another process must not be delivered. Strict mode trusts only that (`sandbox_worker`). The
syscall helpers are `sandbox_os`'s.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import time
from collections.abc import Callable
from typing import Any

from edge_distill.sandbox_os import (
    _F_SETOWN,
    _F_SETOWN_EX,
    _FIOSETOWN,
    _LIBC,
    _TIOCSTI,
    GUARANTEES,
    Boundary,
    _syscall,
    drop_root,
)

_SYS_PIDFD_OPEN, _SYS_PIDFD_SEND_SIGNAL = 434, 424


def _refused(call: Callable[[], Any]) -> bool:
    """Whether `call` failed with a permission error (EPERM from seccomp, EACCES from Landlock)."""
    try:
        call()
    except OSError as e:
        return e.errno in (errno.EPERM, errno.EACCES)
    return False


def _libc_refused(name: str, *args: Any) -> Callable[[], bool]:
    def call() -> bool:
        fn = getattr(_LIBC, name)
        return fn(*args) == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES)

    return call


def _raw_refused(nr: int, *args: Any) -> Callable[[], bool]:
    def call() -> bool:
        return _syscall(nr, *args) == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES)

    return call


def _sigio_held(target: int, how: str) -> Callable[[], bool]:
    """Make `target` the signal owner of a pipe and trigger SIGIO (default action: terminate): held if
    the owner cannot be set (refused; FIOSETOWN works on sockets only), or if the target is still alive
    after the signal would have been delivered."""
    import fcntl

    def call() -> bool:
        r, w = os.pipe()
        try:
            if how == "F_SETOWN_EX":
                owner = (ctypes.c_int * 2)(1, target)  # F_OWNER_PID
                rc = _LIBC.fcntl(r, _F_SETOWN_EX, owner)
            elif how == "FIOSETOWN":
                rc = _LIBC.ioctl(r, _FIOSETOWN, ctypes.byref(ctypes.c_int(target)))
            else:
                rc = _LIBC.fcntl(r, _F_SETOWN, target)
            if rc == -1:
                return True
            fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
            os.write(w, b"x")
            time.sleep(0.05)
            return os.waitpid(target, os.WNOHANG)[0] == 0
        finally:
            os.close(r)
            os.close(w)

    return call


def _pidfd_held(target: int) -> bool:
    """pidfd_open refused, or a signal through the pidfd refused (Landlock scopes the signal, not the fd)."""
    fd = _syscall(_SYS_PIDFD_OPEN, target, 0)
    if fd == -1:
        return ctypes.get_errno() in (errno.EPERM, errno.EACCES)
    try:
        return _raw_refused(_SYS_PIDFD_SEND_SIGNAL, fd, 0, None, 0)()
    finally:
        os.close(fd)


def _probe_checks(target: int, canary: str) -> dict[str, dict[str, Callable[[], bool]]]:
    """Per guarantee, calls that must be refused in a child under the boundary (True: held). Built
    before the boundary is applied (the imports); object ids are -1, so without a filter nothing that
    exists is touched (the kernel answers EINVAL, which is not a refusal)."""
    import _socket
    import resource
    import signal

    ipc = {name: _libc_refused(name, *args) for name, args in (
        ("msgget", (0x5EC22, 0)), ("msgrcv", (-1, None, 8, 0, 0o4000)), ("msgsnd", (-1, None, 8, 0o4000)),
        ("msgctl", (-1, 2, None)), ("semget", (0x5EC22, 0, 0)), ("semop", (-1, None, 0)),
        ("semctl", (-1, 0, 2)), ("shmget", (0x5EC22, 0, 0)), ("shmat", (-1, None, 0)),
        ("shmctl", (-1, 2, None)), ("shmdt", (None,)),
    )}  # fmt: skip
    return {
        "processes": {
            "exec": lambda: _refused(lambda: os.execv("/bin/true", ["true"])),
            "fork": lambda: _refused(lambda: os._exit(0) if os.fork() == 0 else None),
            "ptrace": _libc_refused("ptrace", 16, target, None, None),  # PTRACE_ATTACH
        },
        "network": {"socket": lambda: _refused(_socket.socket)},
        "file writes": {
            "create": lambda: _refused(lambda: os.open(canary, os.O_WRONLY | os.O_CREAT, 0o600)),
            "mkdir": lambda: _refused(lambda: os.mkdir(canary + ".d")),
        },
        "file reads": {"read /proc": lambda: _refused(lambda: os.open("/proc/self/status", os.O_RDONLY))},
        "signals": {
            "kill worker": lambda: _refused(lambda: os.kill(os.getppid() or 1, 0)),
            "kill": lambda: _refused(lambda: os.kill(target, 0)),
            "pidfd": lambda: _pidfd_held(target),
            "F_SETOWN": _sigio_held(target, "F_SETOWN"),
            "F_SETOWN_EX": _sigio_held(target, "F_SETOWN_EX"),
            "FIOSETOWN": _sigio_held(target, "FIOSETOWN"),
        },
        "ipc": ipc,
        "scheduling": {
            "sched_setaffinity": lambda: _refused(lambda: os.sched_setaffinity(target, {0})),
            "sched_setscheduler": lambda: _refused(
                lambda: os.sched_setscheduler(target, os.SCHED_OTHER, os.sched_param(0))
            ),
            "sched_setparam": lambda: _refused(lambda: os.sched_setparam(target, os.sched_param(0))),
            "setpriority": lambda: _refused(lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
        },
        "terminal": {"TIOCSTI": _libc_refused("ioctl", 0, _TIOCSTI, ctypes.c_char_p(b"x"))},
        "limits": {
            "setrlimit": _libc_refused(
                "setrlimit", resource.RLIMIT_CORE, ctypes.byref((ctypes.c_ulong * 2)(0, 0))
            ),
            "setitimer": lambda: _refused(lambda: signal.setitimer(signal.ITIMER_PROF, 100.0)),
        },
    }


def _probe_child(boundary: Boundary, out_fd: int) -> None:
    """The throwaway child of `probe`: a target process first (outside the boundary, same uid as a
    program child), then the boundary, then every check. Writes {guarantee: [failed checks]}."""
    report: dict[str, Any]
    try:
        ctl_r, ctl_w = os.pipe()
        ready_r, ready_w = os.pipe()
        target = os.fork()
        if target == 0:  # lives until the probe child closes ctl_w; SIGIO's default action kills it
            os.close(ctl_w)
            os.close(ready_r)
            if os.geteuid() == 0:
                drop_root()
            os.write(ready_w, b"1")
            os.read(ctl_r, 1)
            os._exit(0)
        os.close(ctl_r)
        os.close(ready_w)
        # Checks start only once the target runs as a program child would: a target still root (not
        # yet through drop_root) refuses a nobody caller by itself, and the probe would pass vacuously.
        if os.read(ready_r, 1) != b"1":
            raise RuntimeError("probe target did not start")
        os.close(ready_r)
        checks_by_guarantee = _probe_checks(target, os.path.join(os.getcwd(), "probe-canary"))
        boundary.apply(require=True)
        failed: dict[str, list[str]] = {}
        for guarantee, checks in checks_by_guarantee.items():
            for name, held in checks.items():
                try:
                    ok = held()
                except BaseException:  # noqa: BLE001 - a check that blew up did not show the guarantee
                    ok = False
                if not ok:
                    failed.setdefault(guarantee, []).append(name)
        os.close(ctl_w)
        try:
            os.waitpid(target, 0)
        except ChildProcessError:  # a check already reaped it: SIGIO reached it
            pass
        report = {"failed": failed}
    except BaseException as e:  # noqa: BLE001
        report = {"error": f"{type(e).__name__}: {e}"[:300]}
    os.write(out_fd, json.dumps(report).encode()[:4000])


def probe(boundary: Boundary, required: list[str] | None = None) -> str:
    """'' if every guarantee in `required` (default all) demonstrably holds in a child, else why not.
    Runs once per worker start."""
    required = [g.name for g in GUARANTEES] if required is None else required
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _probe_child(boundary, w)
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    if select.select([r], [], [], 30)[0]:
        out = os.read(r, 4000)
    os.close(r)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    for name in ("probe-canary", "probe-canary.d"):
        try:  # only if the probe itself created it in our private directory
            (os.rmdir if name.endswith(".d") else os.unlink)(name)
            return "file creation was not refused"
        except FileNotFoundError:
            pass
    try:
        report = json.loads(out or b"{}")
    except ValueError:
        return "probe child sent garbage"
    if "error" in report or "failed" not in report:
        return str(report.get("error") or "probe child died")
    failed = {g: calls for g, calls in report["failed"].items() if g in required}
    return "; ".join(f"{g} not held ({', '.join(calls)} not refused)" for g, calls in failed.items())
