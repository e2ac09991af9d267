"""The sandbox worker process and its per-program children (see `edge_distill.sandbox` for the host).

Started by the host as a fresh interpreter with a scrubbed environment in an empty private directory.
It enters private network, IPC and PID namespaces (before anything starts threads; it is PID 1 of its
PID namespace), imports the allowed modules once, builds the OS boundary (`sandbox_os.Boundary`), checks
strict mode's plan and probes it, reports `ready`, then forks one child per program. A child applies the
rlimits and the OS boundary, then the Python layer, runs the program, writes one JSON result to its pipe
and exits. The worker kills it at its CPU budget plus `CPU_GRACE_S` (whatever signals it ignores) or at
its wall-clock limit, sleeping included.

The Python layer is a tripwire, not the boundary: the allowed modules themselves reach `os` and `sys`
(`random._os`, `().__class__.__base__.__subclasses__()`), so whatever a program reaches, the kernel
must still refuse. What the Python layer does guarantee: the names a program is given (`__import__`,
`solve_it`, builtins) are defined in throwaway namespaces that hold nothing but safe builtins, never
this module; the audit policy is compiled into the hook's code as constants, so there is no variable
for a program to rebind; and frame-reaching attributes (`tb_frame`, `gi_frame`, ...) are refused. What it cannot stop:
`object.__subclasses__()` lists every class in the process (`os._wrap_close`, `sandbox_os.Boundary`),
and builtin functions' `__self__` is the real builtins module (scrubbed of `open`, `input`, ... in each
child). Hence the tests run the whole hostile corpus with this layer switched off as well.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from edge_distill.sandbox_os import (
    Boundary,
    enter_namespaces,
    no_new_privs,
    read_roots,
)
from edge_distill.sandbox_probe import probe
from edge_distill.sandbox_protocol import (
    MAX_ERROR_CHARS,
    NO_ANSWER,
    read_frame_bytes,
    result_fields,
    write_frame,
)

ALLOWED_MODULES = frozenset(
    {
        "math", "cmath", "fractions", "decimal", "itertools", "functools", "statistics", "operator",
        "collections", "datetime", "calendar", "numbers", "random", "heapq", "bisect", "string", "re",
        "sympy", "numpy",
    }
)  # fmt: skip
_MAX_CHILD_OUTPUT = 1 << 16
# THE rule for where a PoT program's answer is (one place, used for teacher data, sampling and eval):
# the first of these module-level variables the program assigned, in this order (ours, then the
# Program-of-Thoughts data sets' `ans`, then `result`); else, if it defines a function `solution`, what
# `solution()` returns (ReFT / GSM8K-PAL style), called here in the same child under the same limits.
ANSWER_NAMES = ("answer", "ans", "result")
SOLUTION_FUNCTION = "solution"
SIMULATE_NO_BOUNDARY_ENV = "EDGE_DISTILL_SANDBOX_SIMULATE_NO_BOUNDARY"  # tests only: "kernel says no"
# A program is killed at its CPU budget plus this, whatever signals it ignores (the CPU timer that gives
# the clean "CPU time limit" error fires at the budget itself); RLIMIT_CPU backs the worker up.
CPU_GRACE_S = 0.25

_SAFE_BUILTINS = (
    "abs all any ascii bin bool bytes callable chr complex dict divmod enumerate filter float format frozenset "
    "getattr hasattr hash hex id int isinstance issubclass iter len list map max min next object oct ord pow "
    "print property range repr reversed round set slice sorted staticmethod classmethod str sum super tuple "
    "type zip __build_class__ BaseException Exception ArithmeticError AssertionError AttributeError "
    "IndexError KeyError LookupError NameError NotImplementedError OverflowError RecursionError "
    "RuntimeError StopIteration TypeError ValueError ZeroDivisionError NotImplemented Ellipsis ImportError "
    "ModuleNotFoundError UnboundLocalError MemoryError FloatingPointError"
).split()
# Removed from the real builtins module in each child: `len.__self__` is that module.
_SCRUBBED_BUILTINS = (
    "open",
    "input",
    "breakpoint",
    "help",
    "exit",
    "quit",
    "copyright",
    "credits",
    "license",
)
# Audit events a PoT program never needs: files, processes, network, threads, native code, limits.
_DENIED_EVENT_PREFIXES = (
    "open", "os.", "subprocess.", "socket.", "shutil.", "ctypes.", "_thread.", "pty.", "fcntl.", "mmap.",
    "resource.", "signal.", "urllib.", "http.", "ftplib.", "smtplib.", "webbrowser.", "glob.", "tempfile.",
    "sqlite3.", "builtins.input", "sys._getframe", "sys._current_frames", "sys.settrace", "sys.setprofile",
    "gc.", "pickle.", "marshal.", "cpython.", "_posixsubprocess.", "syslog.", "winreg.",
)  # fmt: skip
_FRAME_ATTRS = frozenset(
    {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals", "f_builtins"}
)

# Compiled in each child with the policy as literal constants: the hook has no globals worth having
# and no variables to rebind; it is unreachable from Python (no API lists audit hooks).
_AUDIT_SRC = f"""
def audit(event, args):
    if event == "import":
        if str(args[0]).partition(".")[0] not in {set(ALLOWED_MODULES | {"mpmath", "encodings"})!r}:
            raise ImportError("import of " + repr(args[0]) + " is blocked in the PoT sandbox")
    elif event == "object.__getattr__":
        if len(args) > 1 and args[1] in {set(_FRAME_ATTRS)!r}:
            raise PermissionError("reading ." + str(args[1]) + " is not allowed in the PoT sandbox")
    elif event == "object.__setattr__":
        if len(args) > 1 and args[1] == "__code__":
            raise PermissionError("replacing __code__ is not allowed in the PoT sandbox")
    elif event.startswith({_DENIED_EVENT_PREFIXES!r}):
        raise PermissionError(event + " is not allowed in the PoT sandbox")
"""
# The names a program gets. Their __globals__ is a dict holding only safe builtins, sympy and the
# real import (which reaches nothing the builtins do not already: see the module docstring).
_HELPERS_SRC = f"""
def __import__(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0 or str(name).partition(".")[0] not in {set(ALLOWED_MODULES)!r}:
        raise ImportError("import of " + repr(name) + " is not allowed (allowed: {", ".join(sorted(ALLOWED_MODULES))})")
    return _real_import(name, globals, locals, fromlist, level)

def solve_it(equation, variable):
    '''SIKeD's prelude helper: solve one equation (sympy Eq, expression = 0, or "lhs = rhs") for a
    variable; {{variable: value}}, with None when there is no solution.'''
    if isinstance(variable, str):
        variable = sympy.Symbol(variable)
    if isinstance(equation, str):
        lhs, _, rhs = equation.partition("=")
        equation = sympy.Eq(sympy.sympify(lhs), sympy.sympify(rhs or "0"))
    solutions = sympy.solve(equation, variable, dict=True)
    if not solutions:
        return {{v: None for v in variable}} if isinstance(variable, (list, tuple)) else {{variable: None}}
    return solutions[0]
"""


# Compiled once here, executed in each child: compiling per program cost about a millisecond.
_HELPERS_CODE = compile(_HELPERS_SRC, "<pot-helpers>", "exec")
_AUDIT_CODE = compile(_AUDIT_SRC, "<pot-audit>", "exec")


# --------------------------------------------------------------------------- child side
def _value_text(value: Any, depth: int = 0, name: str = "answer") -> str:
    """Text of a program's answer that `normalize_number` reads exactly (ints, floats, Fraction,
    Decimal, sympy numbers, numpy scalars, numeric strings, one-element containers, solve_it's {x: 5})."""
    import fractions
    import math

    if isinstance(value, bool) or depth > 3:
        raise TypeError(f"`{name}` is a {type(value).__name__}, not a number")
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, fractions.Fraction) or getattr(value, "is_Rational", False):
        return f"{int(value.numerator)}/{int(value.denominator)}"
    if isinstance(value, (list, tuple, set, dict)) and len(value) == 1:
        inner = next(iter(value.values() if isinstance(value, dict) else value))
        return _value_text(inner, depth + 1, name)
    if isinstance(value, complex) and value.imag == 0:
        value = value.real
    if type(value).__name__ == "Decimal":
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` has type {type(value).__name__}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` is {number}")
    return repr(number)


def _program_answer(scope: dict[str, Any]) -> str:
    """The answer of a program that ran in `scope`, by the rule at ANSWER_NAMES (runs in the child)."""
    for name in ANSWER_NAMES:
        if name in scope:
            return _value_text(scope[name], name=name)
    solution = scope.get(SOLUTION_FUNCTION)
    if callable(solution):
        return _value_text(solution(), name=f"{SOLUTION_FUNCTION}()")
    raise NameError(NO_ANSWER)


def _python_layer() -> dict[str, Any]:
    """The program's globals (restricted builtins, helpers from throwaway namespaces) and, under
    `__audit__`, the audit hook to install just before the program runs."""
    import builtins
    import math

    real = vars(builtins)
    safe = {name: real[name] for name in _SAFE_BUILTINS if name in real}
    helpers: dict[str, Any] = {"__builtins__": safe, "_real_import": real["__import__"]}
    helpers["sympy"] = sys.modules.get("sympy")
    exec(_HELPERS_CODE, helpers)
    safe["__import__"] = helpers["__import__"]
    for name in _SCRUBBED_BUILTINS:
        real.pop(name, None)
    scope: dict[str, Any] = {"__builtins__": safe, "__name__": "__pot__", "math": math}
    scope.update(lcm=math.lcm, gcd=math.gcd)
    if helpers["sympy"] is not None:
        scope.update(sympy=helpers["sympy"], solve_it=helpers["solve_it"])
    hook_ns: dict[str, Any] = {"__builtins__": {n: real[n] for n in ("str", "repr", "len")}}
    hook_ns.update(ImportError=ImportError, PermissionError=PermissionError)
    exec(_AUDIT_CODE, hook_ns)
    scope["__audit__"] = hook_ns.pop("audit")  # popped from scope again just before exec
    return scope


def _child(req: dict[str, Any], boundary: Boundary, result_fd: int) -> None:
    """Runs in a fresh fork of the worker; reports on `result_fd` and never returns."""
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
        keep = {0, 1, 2, result_fd} | boundary.keep_fds()
        for fd in [int(x) for x in os.listdir("/proc/self/fd")] if os.path.isdir("/proc/self/fd") else []:
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        cpu_s = float(req["cpu_s"])
        # The CPU timer is exact (SIGPROF ends the program with a clean error); a program that ignores it
        # is killed by the worker at cpu_s + CPU_GRACE_S, and by the kernel (SIGKILL: soft = hard) at
        # the next whole second after that, should the worker not be scheduled in time.
        cpu_cap = math.ceil(cpu_s + CPU_GRACE_S) + 1
        limits = {
            resource.RLIMIT_CPU: (cpu_cap, cpu_cap),
            resource.RLIMIT_FSIZE: (0, 0),
            resource.RLIMIT_CORE: (0, 0),
            resource.RLIMIT_NPROC: (0, 0),
            resource.RLIMIT_NOFILE: (max(keep) + 1, max(keep) + 1),
        }
        if os.path.exists("/proc/self/statm"):  # Linux; macOS does not enforce RLIMIT_AS anyway
            with open("/proc/self/statm") as f:  # the worker's own mappings count against RLIMIT_AS too
                limit = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + int(req["memory_mb"]) * 2**20
                limits[resource.RLIMIT_AS] = (limit, limit)
        for res, (soft, hard) in limits.items():
            cur = resource.getrlimit(res)[1]  # never ask above an existing hard limit (that would fail)
            soft, hard = (soft, hard) if cur == resource.RLIM_INFINITY else (min(soft, cur), min(hard, cur))
            resource.setrlimit(res, (soft, hard))
        signal.setitimer(signal.ITIMER_PROF, cpu_s)
        boundary.apply(require=bool(req["strict"]))
        layer = bool(req.get("python_layer", True))
        scope = _python_layer() if layer else {"__name__": "__pot__", "math": math}
        hook = scope.pop("__audit__", None)
        sys.stdout = sys.stderr = io.StringIO()  # print() is allowed; its output is discarded
        compiled = compile(str(req["code"]), "<pot>", "exec")
        if hook is not None:
            sys.addaudithook(hook)
        exec(compiled, scope)
        payload = {"ok": True, "value": _program_answer(scope)}
    except BaseException as e:  # noqa: BLE001 - any failure of the program is a result, not a crash
        try:
            payload = {"ok": False, "error": f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS]}
        except BaseException:  # noqa: BLE001 - a hostile __str__
            payload = {"ok": False, "error": "the program raised an exception that cannot be printed"}
    try:
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(result_fd, data) :]
    finally:
        os._exit(0)


# --------------------------------------------------------------------------- worker side
def _error(text: str) -> dict[str, Any]:
    return {"ok": False, "error": text[:MAX_ERROR_CHARS]}


def _check_child_output(raw: bytes) -> dict[str, Any] | None:
    """The child's result if it is exactly what `_child` writes; None for anything else (a program
    that wrote to its result pipe itself, or died half-way)."""
    try:
        parsed = result_fields(json.loads(raw))
    except (ValueError, RecursionError):
        return None
    return None if parsed is None else {"ok": parsed[0], "value" if parsed[0] else "error": parsed[1]}


def _cpu_seconds(pid: int) -> float:
    """CPU time of child `pid` so far, from its CPU clock (the pid as this PID namespace sees it)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except OSError:  # already reaped
        return 0.0


def _run_in_child(req: dict[str, Any], boundary: Boundary) -> dict[str, Any]:
    import select
    import signal

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(req, boundary, w)
    os.close(w)
    cpu_s, wall_s = float(req["cpu_s"]), float(req["wall_s"])
    kill_at = cpu_s + CPU_GRACE_S
    deadline = time.monotonic() + wall_s
    chunks: list[bytes] = []
    size, timed_out, cpu_killed = 0, False, False
    try:
        while size <= _MAX_CHILD_OUTPUT:
            left = deadline - time.monotonic()
            # A child (one thread: RLIMIT_NPROC 0) cannot burn CPU faster than the wall clock runs, so
            # waking when it could first have reached `kill_at` is enough: no polling for quick programs.
            cpu_left = kill_at - _cpu_seconds(pid)
            if cpu_left <= 0:
                cpu_killed = True
                break
            if left <= 0:
                timed_out = True
                break
            if not select.select([r], [], [], max(0.005, min(left, cpu_left)))[0]:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)  # also after a result: nothing of a program outlives it
        except ProcessLookupError:
            pass
        _, status, usage = os.wait4(pid, 0)
    cpu_used = usage.ru_utime + usage.ru_stime
    if (
        cpu_killed
        or os.WIFSIGNALED(status)
        and os.WTERMSIG(status) in (signal.SIGPROF, signal.SIGXCPU)
        or (os.WIFSIGNALED(status) and cpu_used >= cpu_s)
    ):
        return _error(f"timeout: CPU time limit of {cpu_s:g}s exceeded (killed at {cpu_used:.2f}s of CPU)")
    if timed_out:
        return _error(f"timeout: wall-clock limit of {wall_s:g}s exceeded (CPU used {cpu_used:.2f}s)")
    if size > _MAX_CHILD_OUTPUT:
        return _error("the program wrote more than 64 KiB to its result channel")
    result = _check_child_output(b"".join(chunks))
    if result is not None:
        return result
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
        sig = os.WTERMSIG(status)
        why = " (stack/memory exhausted)" if sig == signal.SIGSEGV else ""
        return _error(f"killed by signal {signal.Signals(sig).name}{why}")
    return _error("the program exited without a valid result (it may have written to the result channel)")


def check_boundary(boundary: Boundary) -> tuple[str, dict[str, str]]:
    """('' or why strict mode must refuse, {guarantee: the layer relied on}): the plan first (a
    guarantee no layer here can give), then the probe of every guarantee a kernel layer gives."""
    if boundary.seccomp is None:
        return "; ".join(boundary.notes) or "no seccomp filter", {}
    relies, missing = boundary.plan()
    if missing:
        return "; ".join(missing), relies
    return probe(boundary, [g for g, layer in relies.items() if not layer.endswith("ns")]), relies


def main() -> None:
    import gc

    no_boundary = (
        os.environ.get(SIMULATE_NO_BOUNDARY_ENV) == "1"
    )  # no kernel layer at all, namespaces included
    namespaces = [] if no_boundary else enter_namespaces()  # first: unshare is refused once threads exist
    if sys.platform.startswith("linux"):
        no_new_privs()  # the worker itself can never gain privileges either (e.g. a setuid binary)
    for name in sorted(ALLOWED_MODULES):  # imported once here so children never touch the file system
        try:
            __import__(name)
        except ImportError:
            pass
    if "sympy" in sys.modules:  # warm the solver so its lazy imports happen here, not in a child
        ns: dict[str, Any] = {"sympy": sys.modules["sympy"]}
        exec(_HELPERS_CODE, ns)
        x = sys.modules["sympy"].Symbol("x")
        _value_text(ns["solve_it"](sys.modules["sympy"].Eq(2 * x + 1, 7), x))
        ns["solve_it"]("3*x - 2 = 10", "x")
    boundary = Boundary.build(read_roots(), disabled=no_boundary)
    boundary.namespaces = namespaces
    why_not, relies = check_boundary(boundary)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the framed protocol on stdout
    in_fd = sys.stdin.fileno()
    gc.freeze()  # keeps forked children from dirtying (copying) the shared module pages during GC
    layers = boundary.layers() if not why_not else []
    ready = {"ready": True, "strict_ok": not why_not, "layers": layers, "why_not": why_not[:600]}
    try:  # our pid as the host sees it: /proc is the host's
        pid = int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        pid = os.getpid()
    write_frame(out_fd, {**ready, "relies": relies if not why_not else {}, "pid": pid})
    while (raw := read_frame_bytes(in_fd)) is not None:
        req = json.loads(raw)
        write_frame(out_fd, {**_run_in_child(req, boundary), "id": req["id"]})


if __name__ == "__main__":
    main()
