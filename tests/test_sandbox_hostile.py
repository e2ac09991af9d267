"""Hostile-program corpus: every known escape, and variants, against the PoT sandbox.

The whole corpus runs as one batch through one pool (fast), twice: with every layer, and with the
Python layer switched off (`_python_layer=False`: real builtins, no audit hook, no import allow-list),
which shows the OS boundary alone holds. Each case asserts containment; the module-level checks
assert the host and the workers survived, canary files are untouched, nothing connected to a loopback
listener, a sacrificial process lives, and a fake API key never appears in any result.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_distill.sandbox import PotResult, SandboxPool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OS boundary is Linux-only")

SECRET = "sk-canary-5f1c0ffee0ddba11"
CANARY_TEXT = "canary: must survive unchanged\n"

# Ways to reach `os` with the Python layer on. None of them may lead to an effect.
REACH_OS = {
    "import-globals": "__import__.__globals__['_real_import']('os')",
    "solve_it-globals": "solve_it.__globals__['__builtins__']['__import__']('random')._os",
    "builtin-self": "len.__self__.__import__('os')",
    "random": "__import__('random')._os",
    "numpy": "__import__('numpy')._core._methods.os",
    "sympy": "__import__('sympy').external.gmpy.os",
    "subclasses": "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['sys'].modules['os']",
}


def _effects(d: str, port: int, victim: int) -> dict[str, str]:
    """Programs (body using `os`) that try to change the world; the checks look at the world. Each
    ends with `answer = 666`, so a call that did not raise shows up as a successful result."""
    bodies = {
        "exec": f"os.execv('/bin/sh', ['sh', '-c', 'touch {d}/pwned-exec'])",
        "system": f"assert os.system('touch {d}/pwned-system') == 0",
        "fork": "pid = os.fork()\nif pid == 0:\n    os.setsid()\n    len.__self__.__import__('time').sleep(60)",
        "posix_spawn": f"os.posix_spawn('/bin/touch', ['touch', '{d}/pwned-spawn'], {{}})",
        "subprocess": f"len.__self__.__import__('subprocess').run(['touch', '{d}/pwned-subprocess'])",
        "_posixsubprocess": "m = len.__self__.__import__('_posixsubprocess')\nr, w = os.pipe()\n"
        f"m.fork_exec([b'/bin/touch', b'{d}/pwned-posixsub'], [b'/bin/touch'], True, (w,), None, None, "
        "-1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, True)",
        "setsid": "os.setsid()",
        "raise own CPU limit": "r = os.sys.modules['resource']\nr.setrlimit(r.RLIMIT_CPU, (r.getrlimit(r.RLIMIT_CPU)[1],) * 2)",
        "kill worker": "os.kill(os.getppid(), 9)",
        "kill victim": f"os.kill({victim}, 9)",
        "kill everything": "os.kill(-1, 0)",  # signal 0: only the permission check
        "truncate canary": f"os.truncate('{d}/canary.txt', 0)",
        "open-write canary": f"fd = os.open('{d}/canary.txt', os.O_WRONLY | os.O_TRUNC)\nos.write(fd, b'x')",
        "unlink canary": f"os.unlink('{d}/canary.txt')",
        "rename canary": f"os.rename('{d}/canary.txt', '{d}/moved.txt')",
        "truncate sqlite": f"fd = os.open('{d}/cache.sqlite', os.O_RDWR)\nos.ftruncate(fd, 0)",
        "create file": f"os.close(os.open('{d}/new.txt', os.O_CREAT | os.O_WRONLY, 0o666))",
        "mkdir": f"os.mkdir('{d}/newdir')",
        "symlink": f"os.symlink('/etc/passwd', '{d}/link')",
        "chmod": f"os.chmod('{d}/canary.txt', 0o000)",
        "read secret file": f"raise ValueError(os.read(os.open('{d}/secret.txt', os.O_RDONLY), 100))",
        "read host environ": f"raise ValueError(os.read(os.open('/proc/{os.getpid()}/environ', os.O_RDONLY), 99999))",
        "env read": "raise ValueError(os.environ['OPENAI_API_KEY'])",
        "env dump in error": "raise ValueError(repr(dict(os.environ)))",
        # through ctypes: the socket module itself is not loaded in a worker
        "socket": "libc = len.__self__.__import__('ctypes').CDLL(None)\nfd = libc.socket(2, 1, 0)\nassert fd >= 0\n"
        f"assert libc.connect(fd, bytes([2, 0]) + ({port}).to_bytes(2, 'big') + bytes([127, 0, 0, 1]) + bytes(8), 16) == 0",
        "ctypes system": f"c = len.__self__.__import__('ctypes')\nassert c.CDLL(None).system(b'touch {d}/pwned-ctypes') == 0",
        "ctypes unlink": f"c = len.__self__.__import__('ctypes')\nassert c.CDLL(None).unlink(b'{d}/canary.txt') == 0",
    }
    if platform.machine() == "x86_64":  # raw syscall numbers: x86-64 only
        libc = "libc = len.__self__.__import__('ctypes').CDLL(None)\nlibc.syscall.restype = len.__self__.__import__('ctypes').c_long\n"
        bodies["SysV shm (outlives the process)"] = (
            f"{libc}assert libc.syscall(29, 0, 4096, 0o1000 | 0o600) >= 0"
        )
        bodies["x32 ABI fork"] = f"{libc}assert libc.syscall(0x40000000 | 57) >= 0"
        bodies["raw kill syscall"] = f"{libc}assert libc.syscall(62, os.getppid(), 9) == 0"
    out = {name: body + "\nanswer = 666" for name, body in bodies.items()}
    for name, payload in (
        ("forged frames", "b'[1]'"),
        ("forged huge answer", "b'{\"ok\": true, \"value\": \"' + b'7' * 5000 + b'\"}'"),
        ("forged extra keys", 'b\'{"ok": true, "value": "1", "x": 1}\''),
        ("result flood", "b'9' * 200000"),
    ):
        out[name] = (
            f"for fd in range(3, 64):\n    try:\n        os.write(fd, {payload})\n    except OSError:\n        pass\nos._exit(0)"
        )
    return out


# Python-layer specific: introspection that must not reach the sandbox's own code or the policy.
PYTHON_LAYER_CASES = {
    "helper globals hold nothing dangerous": (
        "bad = ('os', 'sys', 'builtins', 'edge_distill.sandbox_worker', 'edge_distill.sandbox')\n"
        "g = list(__import__.__globals__.values()) + list(solve_it.__globals__.values())\n"
        "b = solve_it.__globals__['__builtins__']\n"
        "answer = 1 if any(getattr(v, '__name__', '') in bad for v in g) or 'open' in b or 'eval' in b else 0",
        PotResult(True, answer="0"),
    ),
    "format-string attribute access": (
        "s = '{0.__globals__}'.format(solve_it)\nanswer = 1 if 'sandbox_worker' in s or \"module 'os'\" in s else 0",
        PotResult(True, answer="0"),
    ),
    "traceback frame walk": (
        "try:\n    1 / 0\nexcept Exception as e:\n    answer = e.__traceback__.tb_frame.f_back.f_globals['os']",
        "not allowed",
    ),
    "generator frame walk": ("def g():\n    yield 1\nx = g()\nanswer = x.gi_frame.f_back", "not allowed"),
    "format-string frame walk": (
        "try:\n    1 / 0\nexcept Exception as e:\n    answer = '{0.__traceback__.tb_frame.f_globals}'.format(e)",
        "not allowed",
    ),
    "sys._getframe": ("answer = __import__('random')._os.sys._getframe(0).f_back.f_globals", "not allowed"),
    "rebind the policy": (
        "os = __import__('random')._os\nm = os.sys.modules['edge_distill.sandbox_worker']\n"
        "m._DENIED_EVENT_PREFIXES = ()\nm.ALLOWED_MODULES = frozenset({'os', 'subprocess'})\nos.system('true')",
        "os.system",
    ),
    "import not allowed": ("import subprocess", "not allowed"),
    "real builtins open": ("len.__self__.open('/etc/passwd')", "open"),
    "exec in real builtins": ("len.__self__.exec(\"import os; os.system('true')\")", "not allowed"),
}
RESOURCE_CASES = {
    "infinite loop": ("while True:\n    pass", "CPU time limit"),
    "sleep (wall clock)": ("len.__self__.__import__('time').sleep(100)", "wall-clock"),
    "10 GB alloc": ("x = ' ' * (10 * 2**30)\nanswer = 1", "MemoryError"),
    "5000-digit string answer": ("answer = '7' * 5000", "100 digits"),
    "5000-digit int answer": ("answer = 7 ** 6000", "digits"),
    "huge exponent answer": ("answer = '1e999999'", "not a number"),
    "hostile __str__": (
        "class E(Exception):\n    def __str__(self):\n        raise E()\nraise E()",
        "cannot be printed",
    ),
}


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest):
    """Canary dir (world-writable, outside /root and pytest's 0700 dirs, so only the sandbox protects
    it), a loopback listener, a sacrificial process and a fake API key in the host's environment."""
    d = tempfile.mkdtemp(prefix="edge-distill-canary-", dir="/tmp")
    os.chmod(d, 0o777)
    for name, text in (
        ("canary.txt", CANARY_TEXT),
        ("cache.sqlite", "SQLite format 3\0" * 64),
        ("secret.txt", SECRET),
    ):
        Path(d, name).write_text(text)
        os.chmod(Path(d, name), 0o666)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    # Owned by uid nobody, like the program children of a root host: only the sandbox protects it.
    victim = subprocess.Popen(["sleep", "120"], user=65534 if os.geteuid() == 0 else None)
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET
    yield {"dir": d, "port": listener.getsockname()[1], "listener": listener, "victim": victim}
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old
    victim.kill()
    victim.wait()
    listener.close()
    subprocess.run(["rm", "-rf", d], check=False)


def _corpus(world: dict, python_layer: bool) -> dict[str, tuple[str, object]]:
    effects = _effects(world["dir"], world["port"], world["victim"].pid)
    cases: dict[str, tuple[str, object]] = {}
    paths = REACH_OS if python_layer else {"plain import": "__import__('os')"}
    for path_name, reach in paths.items():
        for name, body in effects.items():
            cases[f"{name} via {path_name}"] = (f"os = {reach}\n{body}", None)
    if python_layer:
        cases.update(PYTHON_LAYER_CASES)
    cases.update(RESOURCE_CASES)
    return cases


def _run_corpus(world: dict, python_layer: bool):
    cases = _corpus(world, python_layer)
    with SandboxPool(workers=2, _python_layer=python_layer) as pool:
        assert pool.run(["answer = 1"] * 2) == [PotResult(True, answer="1")] * 2
        pids = pool.worker_pids()
        results = pool.run([prog for prog, _ in cases.values()], timeout_s=0.5, memory_mb=256)
        after = pool.run(["answer = 6 * 7"])  # the pool still works after the corpus
        restarts, pids_after = pool.restarts, pool.worker_pids()
    return cases, dict(zip(cases, results, strict=True)), after, (pids, pids_after, restarts)


@pytest.fixture(scope="module", params=[True, False], ids=["all-layers", "os-layer-only"])
def outcome(request: pytest.FixtureRequest, world: dict):
    return (request.param, *_run_corpus(world, request.param))


def test_every_program_is_contained(outcome) -> None:
    python_layer, cases, results, _, _ = outcome
    bad = {}
    for name, (_, expect) in cases.items():
        res = results[name]
        if isinstance(expect, PotResult):
            ok = res == expect
        else:
            ok = not res.ok and (expect is None or str(expect).lower() in (res.error or "").lower())
        if not ok:
            bad[name] = res
    assert not bad, f"python_layer={python_layer}: {bad}"


def test_the_world_is_unchanged(outcome, world: dict) -> None:
    d = Path(world["dir"])
    assert (d / "canary.txt").read_text() == CANARY_TEXT
    assert (d / "cache.sqlite").stat().st_size == len("SQLite format 3\0") * 64
    assert sorted(p.name for p in d.iterdir()) == ["cache.sqlite", "canary.txt", "secret.txt"]
    assert (d / "canary.txt").stat().st_mode & 0o777 == 0o666
    assert world["victim"].poll() is None, "the sacrificial process was killed"
    with pytest.raises(BlockingIOError):
        world["listener"].accept()  # nothing connected


def test_no_secret_leaks_into_results(outcome) -> None:
    _, _, results, _, _ = outcome
    for name, res in results.items():
        assert SECRET not in repr(res) and "sk-canary" not in repr(res), name


def test_host_and_workers_survive(outcome) -> None:
    _, _, _, after, (pids, pids_after, restarts) = outcome
    assert after == [PotResult(True, answer="42")]
    assert pids == pids_after and restarts == 0, "a program killed or corrupted a worker"


def test_no_program_process_outlives_the_batch(outcome) -> None:
    """A program child is a fork of a worker (same command line) running as nobody; one whose parent
    is not a live worker escaped its worker's control (e.g. a setsid child that outlived the timeout)."""
    import psutil

    if os.geteuid() != 0:
        pytest.skip("program children run under the host's own uid: no way to tell them apart")

    def is_worker_fork(p: psutil.Process) -> bool:
        try:
            return "edge_distill.sandbox_worker" in " ".join(p.cmdline())
        except psutil.Error:
            return False

    orphans = []
    for p in psutil.process_iter(["uids"]):
        if p.info["uids"] and p.info["uids"].real == 65534 and is_worker_fork(p):
            parent = p.parent()
            if parent is None or not is_worker_fork(parent):
                orphans.append(p)
    assert not orphans, orphans
