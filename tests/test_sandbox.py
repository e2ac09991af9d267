"""PoT sandbox: correct answers, and hostile programs that fail cleanly without hanging or touching the host."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from edge_distill.sandbox import PotResult, SandboxPool, run_program, run_programs, wall_limit_s

# Introspection reaches modules the program may not import; the audit hook must still stop the action.
_SUBCLASS = "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == {name!r}][0]"
_REAL_BUILTINS = _SUBCLASS.format(name="catch_warnings") + "()._module.__builtins__"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2) as p:
        yield p


@pytest.mark.parametrize(
    ("program", "answer"),
    [
        ("clips_april = 48\nclips_may = clips_april / 2\nanswer = clips_april + clips_may", "72"),
        ("answer = 0.1 + 0.2", "0.3"),
        ("from fractions import Fraction\nanswer = Fraction(3, 4)", "0.75"),
        ("import decimal\nanswer = decimal.Decimal('1.50')", "1.5"),
        ("import math\nanswer = math.ceil(7 / 2)", "4"),
        ("answer = lcm(4, 6) + gcd(12, 18)", "18"),  # prelude helpers
        ("import itertools, functools, statistics\nanswer = statistics.mean([1, 2, 3, 6])", "3"),
        ("answer = [42]", "42"),
        ("answer = '$1,000'", "1000"),
        ("answer = -7", "-7"),
        ("answer = 10 ** 20", "100000000000000000000"),
        ("def solution():\n    return 5\nanswer = solution()", "5"),
        ("class A:\n    n = 3\nanswer = A.n * 2", "6"),
        ("print('debug output is ignored')\nanswer = 1", "1"),
    ],
)
def test_correct_programs(pool: SandboxPool, program: str, answer: str) -> None:
    assert pool.run([program]) == [PotResult(True, answer=answer)]


def test_sympy_prelude(pool: SandboxPool) -> None:
    pytest.importorskip("sympy")
    programs = [
        "x = sympy.Symbol('x')\nanswer = solve_it(sympy.Eq(2 * x + 1, 7), x)[x]",
        "answer = solve_it('3*x - 2 = 10', 'x')",
        "import sympy\nanswer = sympy.Rational(1, 4)",
    ]
    assert [r.answer for r in pool.run(programs)] == ["3", "4", "0.25"]


@pytest.mark.parametrize(
    ("name", "program", "error"),
    [
        ("no answer", "x = 5", "NameError"),
        ("syntax", "answer = (", "SyntaxError"),
        ("runtime", "answer = 1 / 0", "ZeroDivisionError"),
        ("bool", "answer = True", "bool"),
        ("non-number", "answer = 'many'", "not a number"),
        ("nan", "answer = float('nan')", "nan"),
        ("infinite loop", "while True:\n    pass", "timeout"),
        ("C-level loop", "answer = sum(range(10 ** 13))", "timeout"),
        ("10 GB list", "x = [0] * (10 ** 10)\nanswer = 1", "MemoryError"),
        ("10 GB string", "x = ' ' * (10 * 2 ** 30)\nanswer = 1", "MemoryError"),
        ("growing memory", "x = []\nwhile True:\n    x.append(' ' * 10 ** 6)", "MemoryError"),
        ("deep recursion", "def f(n):\n    return f(n + 1)\nanswer = f(0)", "RecursionError"),
        ("import os", "import os\nos.system('true')", "not allowed"),
        ("import subprocess", "import subprocess\nsubprocess.run(['true'])", "not allowed"),
        ("import socket", "import socket\nsocket.socket()", "not allowed"),
        ("relative import", "from . import x", "not allowed"),
        ("open builtin", "open('/tmp/x', 'w')", "NameError"),
        ("eval builtin", "eval('1')", "NameError"),
        ("os.system via introspection", f"{_SUBCLASS.format(name='_wrap_close')}.__init__.__globals__['system']('true')", "os.system"),
        ("fork bomb via introspection", f"fork = {_SUBCLASS.format(name='_wrap_close')}.__init__.__globals__['fork']\nwhile True:\n    fork()", "os.fork"),
        ("open via real builtins", f"{_REAL_BUILTINS}['open']('/tmp/edge_distill_pwned', 'w')", "open"),
        ("socket via real import", f"{_REAL_BUILTINS}['__import__']('socket')", "blocked"),
        ("ctypes libc call", f"c = {_REAL_BUILTINS}['__import__']('ctypes')\nc.CDLL(None).system(b'true')", "ctypes."),
        ("ctypes pythonapi", f"c = {_REAL_BUILTINS}['__import__']('ctypes')\nanswer = c.pythonapi.Py_GetVersion()", "ctypes."),
        ("raise own limits", f"r = {_REAL_BUILTINS}['__import__']('resource')\nr.setrlimit(r.RLIMIT_AS, (-1, -1))", "resource.setrlimit"),
        ("gc walk", f"g = {_REAL_BUILTINS}['__import__']('gc')\nanswer = len(g.get_objects())", "gc.get_objects"),
        ("kill the worker", f"{_SUBCLASS.format(name='_wrap_close')}.__init__.__globals__['kill'](0, 9)", "os.kill"),
    ],
)  # fmt: skip
def test_hostile_programs_fail_cleanly(pool: SandboxPool, name: str, program: str, error: str) -> None:
    # Programs that must reach an error of their own get CPU time to spare: on a starved machine the wall
    # clock (2 x budget + 1 s) would end them first.
    timeout = 4.0 if error in ("MemoryError", "RecursionError") else 1.0
    t0 = time.monotonic()
    [res] = pool.run([program], timeout_s=timeout, memory_mb=256)
    assert not res.ok and res.answer is None, name
    assert error.lower() in (res.error or "").lower(), (name, res.error)
    assert time.monotonic() - t0 < wall_limit_s(timeout) + 6, f"{name} took too long"


def test_no_file_is_written_and_host_unharmed(pool: SandboxPool, tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    programs = [
        f"{_REAL_BUILTINS}['open']({str(target)!r}, 'w').write('x')",
        f"{_SUBCLASS.format(name='_wrap_close')}.__init__.__globals__['system']('touch {target}')",
        f"{_SUBCLASS.format(name='_wrap_close')}.__init__.__globals__['remove']({str(tmp_path / 'keep.txt')!r})",
    ]
    (tmp_path / "keep.txt").write_text("keep")
    results = pool.run(programs)
    assert all(not r.ok for r in results)
    assert not target.exists()
    assert (tmp_path / "keep.txt").read_text() == "keep"


def test_no_state_leaks_between_programs(pool: SandboxPool) -> None:
    results = pool.run(["import math\nmath.pi = 3\nanswer = math.pi"] + ["import math\nanswer = math.pi"] * 4)
    assert results[0].answer == "3"
    assert all(r.answer == "3.1415926536" for r in results[1:])


def test_order_is_kept_under_mixed_outcomes(pool: SandboxPool) -> None:
    programs = [f"answer = {i}" if i % 3 else "while True: pass" for i in range(12)]
    results = pool.run(programs, timeout_s=0.5)
    for i, r in enumerate(results):
        assert r == (PotResult(True, answer=str(i)) if i % 3 else PotResult(False, error=r.error))
    assert all("timeout" in (r.error or "") for i, r in enumerate(results) if i % 3 == 0)


def test_dead_worker_is_replaced(pool: SandboxPool) -> None:
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    results = pool.run([f"answer = {i}" for i in range(6)])
    assert [r.answer for r in results] == [str(i) for i in range(6)]
    assert victim not in pool.worker_pids()


def test_hung_worker_is_killed_and_replaced() -> None:
    """A worker that stops answering (here: SIGSTOP) costs one result, not a hang."""
    with SandboxPool(workers=1) as p:
        assert p.run(["answer = 1"])[0].ok
        victim = p.worker_pids()[0]
        os.kill(victim, signal.SIGSTOP)
        t0 = time.monotonic()
        [res] = p.run(["answer = 2"], timeout_s=0.2)  # host gives up after 2 x 0.2 + 1 + 5 s
        assert not res.ok and "unresponsive" in (res.error or "")
        assert time.monotonic() - t0 < 15
        assert p.worker_pids() != [victim] and p.restarts == 1
        assert p.run(["answer = 3"])[0].answer == "3"


def test_too_long_program_is_refused(pool: SandboxPool) -> None:
    [res] = pool.run(["answer = 1\n" + "#" * 200_000])
    assert not res.ok and "longer than" in (res.error or "")


def test_user_cwd_cannot_shadow_allowed_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "statistics.py").write_text("def mean(xs):\n    return 99\n")  # pure-Python stdlib module
    monkeypatch.chdir(tmp_path)
    with SandboxPool(workers=1) as p:
        assert p.run(["import statistics\nanswer = statistics.mean([1, 3])"])[0].answer == "2"


def test_module_level_helpers() -> None:
    assert run_programs([]) == []
    assert run_program("answer = 6 * 7") == PotResult(True, answer="42")
    results = run_programs([f"answer = {i} * 2" for i in range(200)])
    assert [r.answer for r in results] == [str(2 * i) for i in range(200)]
