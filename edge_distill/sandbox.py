"""Run untrusted PoT programs (teacher or student output) safely and fast.

Layout: the host keeps a pool of persistent worker processes (`python -m edge_distill.sandbox`, never a
fork of the host, which may hold torch threads and gigabytes). Each worker imports the allowed modules
once (sympy takes a second) and then forks one short-lived child per program, so a fork costs a few
milliseconds and no program can leave state (a patched `math.pi`) behind for the next one.

The child, before running the program:
- sets kernel limits: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE=0 (no file writes), RLIMIT_NPROC=0,
  RLIMIT_CORE=0, and closes every file descriptor but the result pipe;
- installs an audit hook (`sys.addaudithook`, irremovable) that refuses opening files, sockets,
  fork/exec/system/subprocess, threads, and loading modules outside the allow-list; this also covers
  escapes through object introspection, which restricted builtins alone cannot stop;
- runs the program with restricted builtins (no open/eval/exec/input) and an `__import__` that admits
  only `ALLOWED_MODULES`.
The worker kills a child at the wall-clock timeout; the host kills and replaces a worker that stops
answering. RLIMIT_NPROC does not bind root, which is why fork is refused by the audit hook as well.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edge_distill.answers import normalize_number

__all__ = ["ALLOWED_MODULES", "PotResult", "SandboxPool", "run_program", "run_programs"]

log = logging.getLogger(__name__)

ALLOWED_MODULES = frozenset(
    {
        "math", "cmath", "fractions", "decimal", "itertools", "functools", "statistics", "operator",
        "collections", "datetime", "calendar", "numbers", "random", "heapq", "bisect", "string", "re",
        "sympy", "numpy",
    }
)  # fmt: skip
_MAX_PROGRAM_CHARS = 100_000
_MAX_RESULT_BYTES = 1 << 20
_WORKER_START_S = 120.0  # importing sympy on a loaded 2-core box can take many seconds
_HOST_GRACE_S = 5.0  # the worker enforces the timeout; the host only catches a hung worker


@dataclass(frozen=True)
class PotResult:
    """Outcome of one program: `answer` is normalized (`answers.normalize_number`) when ok."""

    ok: bool
    answer: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------- framing (host and worker)
def _write_frame(fd: int, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    data = struct.pack("<I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> dict[str, Any] | None:
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack("<I", head)[0])
    return None if body is None else json.loads(body)


# --------------------------------------------------------------------------- host side
class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_distill.sandbox"],
            # `-m` puts the cwd first on sys.path: run next to the package so a stray math.py in the
            # user's directory cannot shadow what the programs import.
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the terminal is the host's business, not the worker's
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: BinaryIO = self.proc.stdin  # type: ignore[assignment]
        self.out_fd = self.proc.stdout.fileno()
        self.ready = False

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.stdin.close()
        self.proc.stdout.close()  # type: ignore[union-attr]


class SandboxPool:
    """A pool of pre-started sandbox workers. Thread-safe; one batch runs at a time."""

    def __init__(self, workers: int | None = None) -> None:
        if not hasattr(os, "fork"):
            raise OSError("the PoT sandbox needs os.fork (Linux or macOS)")
        env_n = os.environ.get("EDGE_DISTILL_SANDBOX_WORKERS")
        n = workers or (int(env_n) if env_n else min(4, os.cpu_count() or 1))
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._workers = [_Worker() for _ in range(max(1, n))]
        self.restarts = 0

    def close(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        self.restarts += 1
        new = _Worker()
        self._workers[self._workers.index(w)] = new
        return new

    def run(self, programs: list[str], timeout_s: float = 2.0, memory_mb: int = 512) -> list[PotResult]:
        """Run every program (in parallel across workers); results in input order."""
        with self._lock:
            return _Batch(self, programs, timeout_s, memory_mb).run()


class _Batch:
    """One `SandboxPool.run`: keeps every ready worker busy, collects results, replaces dead/hung workers."""

    def __init__(self, pool: SandboxPool, programs: list[str], timeout_s: float, memory_mb: int) -> None:
        self.pool, self.programs, self.timeout_s, self.memory_mb = pool, programs, timeout_s, memory_mb
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
            if len(self.programs[i]) > _MAX_PROGRAM_CHARS:
                self.results[i] = PotResult(False, error=f"program longer than {_MAX_PROGRAM_CHARS} chars")
                continue
            try:
                req = {"code": self.programs[i], "timeout": self.timeout_s, "memory_mb": self.memory_mb}
                _write_frame(w.stdin.fileno(), req)
            except OSError:  # the worker died between jobs: run the program on its replacement
                self.pending.appendleft(i)
                self._swap(w)
                continue
            self.busy[w] = (i, time.monotonic() + self.timeout_s + _HOST_GRACE_S)

    def _receive(self, w: _Worker) -> None:
        frame = _read_frame(w.out_fd)
        if frame is not None and frame.get("ready"):
            w.ready = True
            self.starting.pop(w, None)
        elif frame is not None:
            i, _ = self.busy.pop(w)
            self.results[i] = _to_result(frame)
        else:  # EOF: the worker itself died
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

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for w, (i, deadline) in list(self.busy.items()):
            if now > deadline:
                self.busy.pop(w)
                self.results[i] = PotResult(
                    False, error=f"timeout: worker unresponsive after {self.timeout_s}s"
                )
                log.warning("sandbox worker %d hung; replacing it", w.proc.pid)
                self._swap(w)
        if any(now > d for d in self.starting.values()):
            raise RuntimeError(f"sandbox worker did not start within {_WORKER_START_S}s")


def _to_result(frame: dict[str, Any]) -> PotResult:
    if not frame.get("ok"):
        return PotResult(False, error=str(frame.get("error") or "unknown error"))
    value = frame.get("value")
    answer = normalize_number(value) if isinstance(value, str) else None
    if answer is None:
        return PotResult(False, error=f"`answer` is not a number: {str(value)[:80]!r}")
    return PotResult(True, answer=answer)


_POOL: SandboxPool | None = None
_POOL_LOCK = threading.Lock()


def _default_pool() -> SandboxPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():  # a forked host must not share the parent's pipes
            _POOL = SandboxPool()
            atexit.register(_POOL.close)
        return _POOL


def run_programs(programs: list[str], timeout_s: float = 2.0, memory_mb: int = 512) -> list[PotResult]:
    """Run PoT programs in the shared sandbox pool; each must assign the variable `answer`."""
    if not programs:
        return []
    return _default_pool().run(list(programs), timeout_s=timeout_s, memory_mb=memory_mb)


def run_program(program: str, timeout_s: float = 2.0, memory_mb: int = 512) -> PotResult:
    return run_programs([program], timeout_s=timeout_s, memory_mb=memory_mb)[0]


# --------------------------------------------------------------------------- worker side
# Everything below runs in the worker (`python -m edge_distill.sandbox`) and its per-program children.
_SAFE_BUILTINS = (
    "abs all any ascii bin bool bytes callable chr complex dict divmod enumerate filter float format frozenset "
    "getattr hasattr hash hex id int isinstance issubclass iter len list map max min next object oct ord pow "
    "print property range repr reversed round set slice sorted staticmethod classmethod str sum super tuple "
    "type zip __build_class__ BaseException Exception ArithmeticError AssertionError AttributeError "
    "IndexError KeyError LookupError NameError NotImplementedError OverflowError RecursionError "
    "RuntimeError StopIteration TypeError ValueError ZeroDivisionError NotImplemented Ellipsis"
).split()
# Audit events a PoT program never needs: files, processes, network, threads, native code, limits.
_DENIED_EVENT_PREFIXES = (
    "open", "os.", "subprocess.", "socket.", "shutil.", "ctypes.", "_thread.", "pty.", "fcntl.", "mmap.",
    "resource.", "signal.", "urllib.", "http.", "ftplib.", "smtplib.", "webbrowser.", "glob.", "tempfile.",
    "sqlite3.", "builtins.input", "sys._getframe", "sys.settrace", "sys.setprofile", "gc.",
)  # fmt: skip


def _solve_it(equation: Any, variable: Any) -> dict[Any, Any]:
    """SIKeD's prelude helper: solve one equation (sympy Eq, expression = 0, or "lhs = rhs") for a variable.

    Returns {variable: value} like SIKeD's, with None when there is no solution.
    """
    import sympy

    if isinstance(variable, str):
        variable = sympy.Symbol(variable)
    if isinstance(equation, str):
        lhs, _, rhs = equation.partition("=")
        equation = sympy.Eq(sympy.sympify(lhs), sympy.sympify(rhs or "0"))
    solutions = sympy.solve(equation, variable, dict=True)
    if not solutions:
        return {v: None for v in variable} if isinstance(variable, (list, tuple)) else {variable: None}
    return solutions[0]


def _value_text(value: Any, depth: int = 0) -> str:
    """Text of a program's `answer` that `normalize_number` reads exactly (ints, floats, Fraction,
    Decimal, sympy numbers, numpy scalars, numeric strings, one-element containers, solve_it's {x: 5})."""
    import fractions
    import math

    if isinstance(value, bool) or depth > 3:
        raise TypeError(f"`answer` is a {type(value).__name__}, not a number")
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, fractions.Fraction) or getattr(value, "is_Rational", False):
        return f"{int(value.numerator)}/{int(value.denominator)}"
    if isinstance(value, (list, tuple, set, dict)) and len(value) == 1:
        return _value_text(next(iter(value.values() if isinstance(value, dict) else value)), depth + 1)
    if isinstance(value, complex) and value.imag == 0:
        value = value.real
    if type(value).__name__ == "Decimal":
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`answer` has type {type(value).__name__}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"`answer` is {number}")
    return repr(number)


def _child(code: str, timeout_s: float, memory_mb: int, result_fd: int) -> None:
    """Runs in a fresh fork of the worker; reports on `result_fd` and never returns."""
    import builtins
    import io
    import math
    import resource
    import signal

    payload: dict[str, Any]
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file write then fails with EFBIG, no kill
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = {0, 1, 2, result_fd}
        for fd in [int(x) for x in os.listdir("/proc/self/fd")] if os.path.isdir("/proc/self/fd") else []:
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        limits = {
            resource.RLIMIT_CPU: math.ceil(timeout_s) + 1,
            resource.RLIMIT_FSIZE: 0,
            resource.RLIMIT_CORE: 0,
            resource.RLIMIT_NPROC: 0,
            resource.RLIMIT_NOFILE: result_fd + 1,
        }
        if os.path.exists("/proc/self/statm"):  # Linux; macOS does not enforce RLIMIT_AS anyway
            with open("/proc/self/statm") as f:  # the worker's own mappings count against RLIMIT_AS too
                limits[resource.RLIMIT_AS] = (
                    int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + memory_mb * 2**20
                )
        for res, value in limits.items():
            hard = resource.getrlimit(res)[1]  # never ask above an existing hard limit (that would fail)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(res, (value, value))
        allowed = ALLOWED_MODULES | {"sympy", "mpmath", "encodings"}
        real_import = builtins.__import__

        def audit(event: str, args: tuple[Any, ...]) -> None:
            if event == "import":
                if str(args[0]).split(".")[0] not in allowed:
                    raise ImportError(f"import of {args[0]!r} is blocked in the PoT sandbox")
            elif event.startswith(_DENIED_EVENT_PREFIXES):
                raise PermissionError(f"{event} is not allowed in the PoT sandbox")

        def guarded_import(name: str, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002, ANN001
            if level != 0 or name.split(".")[0] not in ALLOWED_MODULES:
                raise ImportError(
                    f"import of {name!r} is not allowed (allowed: {', '.join(sorted(ALLOWED_MODULES))})"
                )
            return real_import(name, globals, locals, fromlist, level)

        safe = {name: getattr(builtins, name) for name in _SAFE_BUILTINS if hasattr(builtins, name)}
        safe["__import__"] = guarded_import
        scope: dict[str, Any] = {"__builtins__": safe, "__name__": "__pot__", "math": math}
        scope.update(lcm=math.lcm, gcd=math.gcd)
        if "sympy" in sys.modules:
            scope.update(sympy=sys.modules["sympy"], solve_it=_solve_it)
        sys.stdout = sys.stderr = io.StringIO()  # print() is allowed; its output is discarded
        compiled = compile(code, "<pot>", "exec")
        sys.addaudithook(audit)
        exec(compiled, scope)
        if "answer" not in scope:
            raise NameError("the program did not assign the variable `answer`")
        payload = {"ok": True, "value": _value_text(scope["answer"])}
    except BaseException as e:  # noqa: BLE001 - any failure of the program is a result, not a crash
        payload = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    try:
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(result_fd, data) :]
    finally:
        os._exit(0)


def _run_in_child(code: str, timeout_s: float, memory_mb: int) -> dict[str, Any]:
    import select
    import signal

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(code, timeout_s, memory_mb, w)
    os.close(w)
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    size, timed_out = 0, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_RESULT_BYTES:
                break
    finally:
        os.close(r)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if timed_out:
        return {"ok": False, "error": f"timeout: exceeded {timeout_s:g}s wall clock"}
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            why = {signal.SIGXCPU: "CPU time limit", signal.SIGSEGV: "crash (stack/memory exhausted)"}.get(
                sig, ""
            )
            return {"ok": False, "error": f"killed by signal {signal.Signals(sig).name} {why}".strip()}
        return {"ok": False, "error": f"program exited without a result (status {status})"}


def _worker_main() -> None:
    import gc

    for name in sorted(ALLOWED_MODULES):  # imported once here so children never touch the file system
        try:
            __import__(name)
        except ImportError:
            pass
    if "sympy" in sys.modules:  # warm the solver so its lazy imports happen here, not in a child
        x = sys.modules["sympy"].Symbol("x")
        _value_text(_solve_it(sys.modules["sympy"].Eq(2 * x + 1, 7), x))
    out_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the framed protocol on stdout
    in_fd = sys.stdin.fileno()
    gc.freeze()  # keeps forked children from dirtying (copying) the shared module pages during GC
    _write_frame(out_fd, {"ready": True})
    while (req := _read_frame(in_fd)) is not None:
        _write_frame(out_fd, _run_in_child(req["code"], float(req["timeout"]), int(req["memory_mb"])))


if __name__ == "__main__":
    _worker_main()
