"""Hostile-program corpus: every known escape, and variants, against the PoT sandbox.

The whole corpus runs as one batch through one pool (fast), twice: with every layer, and with the
Python layer switched off (`_python_layer=False`: real builtins, no audit hook, no import allow-list),
which shows the OS boundary alone holds. The attacks on other processes (signals and signal owners,
SysV IPC, scheduling) run twice more with the Python layer off: on a kernel limited to Landlock ABI 5
(seccomp alone holds) and with seccomp's signal rules left out (Landlock's signal scoping holds). Each
case asserts containment; the module-level checks assert the host and the workers survived, canary
files, IPC objects, a sacrificial process's affinity and priority are untouched, nothing connected to a
loopback listener, and a fake API key never appears in any result.

numpy gives a program an arbitrary read/write of its own memory (`__array_interface__` over any address);
`NUMPY_CHAIN` uses it to neuter the audit hook, and the corpus runs through that chain too. It gains
nothing beyond the program's own process: its memory is shared with no one
(`test_program_memory_is_shared_with_no_one`) and everything after the chain meets the OS boundary.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edge_distill.sandbox import PotResult, SandboxPool, wall_limit_s
from edge_distill.sandbox_worker import CPU_GRACE_S

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
# numpy's arbitrary memory read/write: find the audit hook (a function named "audit") by walking the
# garbage collector's list of objects and swap its code for a no-op. CPython 3.11+ object layouts
# (GC header of two words before the object; func_code the 7th word of a function object).
NUMPY_CHAIN = r"""
np = __import__('numpy')
gc = __import__('random')._os.sys.modules['gc']
class _View:
    pass
def _mem(addr, n):
    v = _View()
    v.__array_interface__ = {'data': (addr, False), 'shape': (n,), 'typestr': '<u8', 'version': 3}
    return np.asarray(v)
gc.collect()
_probe = [object()]
gc.collect()
_ftype, _name, _start = id(type(_mem)), id('audit'), id(_probe) - 16
_node, _hook = int(_mem(_start, 1)[0]), 0
for _ in range(2_000_000):
    if _node == _start:
        break
    _obj = _node + 16
    if _mem(_obj + 8, 1)[0] == _ftype and _mem(_obj + 32, 1)[0] == _name:
        _hook = _obj
        break
    _node = int(_mem(_node, 1)[0]) & ~3
_noop = (lambda event, args: None).__code__
_mem(id(_noop), 1)[0] += 1
_mem(_hook, 7)[6] = id(_noop)
"""
CHAIN_REACH = {"numpy memory chain": "len.__self__.__import__('os')"}  # real builtins: no hook left


def _effects(world: dict) -> dict[str, str]:
    """Programs (body using `os`) that try to change the world; the checks look at the world. Each
    ends with `answer = 666`, so a call that did not raise shows up as a successful result."""
    d, port, victim = world["dir"], world["port"], world["victim"].pid
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
        bodies.update(
            {f"{name} (other process)": f"{libc}{body}" for name, body in _other_process(world).items()}
        )
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


def _other_process(world: dict) -> dict[str, str]:
    """Attacks on processes and IPC objects outside the program (x86-64 glibc constants), which a
    program child can see with the Python layer gone (`libc` is ctypes' C library)."""
    victim, ipc = world["victim"].pid, world["ipc"]
    sigio = (  # make the victim the pipe's signal owner, SIGKILL as its I/O signal, then trigger I/O
        "r, w = os.pipe()\n{own}\nlibc.fcntl(r, 10, 9)\n"
        "assert libc.fcntl(r, 4, libc.fcntl(r, 3) | 0o20000) == 0\nos.write(w, b'x')\n"
        "len.__self__.__import__('time').sleep(0.2)"
    )
    return {
        "F_SETOWN + SIGIO": sigio.format(own=f"assert libc.fcntl(r, 8, {victim}) == 0"),
        "F_SETOWN_EX + SIGIO": sigio.format(
            own=f"o = (len.__self__.__import__('ctypes').c_int * 2)(1, {victim})\nassert libc.fcntl(r, 15, o) == 0"
        ),
        "pin the victim": f"os.sched_setaffinity({victim}, {{0}})",
        "pin the host": f"os.sched_setaffinity({os.getpid()}, {{0}})",
        "renice the victim": f"os.setpriority(os.PRIO_PROCESS, {victim}, 19)",
        "reschedule the victim": f"os.sched_setscheduler({victim}, os.SCHED_BATCH, os.sched_param(0))",
        "msgrcv a secret": "b = len.__self__.__import__('ctypes').create_string_buffer(256)\n"
        f"n = libc.msgrcv({ipc['msg']}, b, 200, 0, 0o4000)\nassert n > 0\nraise ValueError(b.raw[:n + 8])",
        "msgctl IPC_RMID": f"assert libc.msgctl({ipc['msg']}, 0, None) == 0",
        "semop lock": f"s = (len.__self__.__import__('ctypes').c_short * 3)(0, -1, 0o4000)\nassert libc.semop({ipc['sem']}, s, 1) == 0",
        "semctl SETVAL": f"assert libc.semctl({ipc['sem']}, 0, 16, 0) == 0",
        "shmctl IPC_SET 0666": "b = len.__self__.__import__('ctypes').create_string_buffer(256)\n"
        f"assert libc.shmctl({ipc['shm']}, 2, b) == 0\nb[20:22] = (0o666).to_bytes(2, 'little')\n"
        f"assert libc.shmctl({ipc['shm']}, 1, b) == 0",
        "shmat": f"assert libc.shmat({ipc['shm']}, None, 0) not in (-1, 2**64 - 1)",
    }


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
    "infinite loop": ("while True:\n    pass", "timeout"),  # CPU, or the wall clock on a starved machine
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


_LIBC = ctypes.CDLL(None, use_errno=True)
_IPC_CREAT, _IPC_RMID, _IPC_NOWAIT, _GETVAL, _SETVAL = 0o1000, 0, 0o4000, 12, 16


def _sysv_objects(uid: int) -> dict[str, int]:
    """A message queue holding SECRET, a semaphore at 1 and a shared-memory segment of mode 0600, owned
    by `uid` (created by a child that takes that uid: the program children's, so that only the sandbox
    protects them)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            if uid != os.getuid():
                os.setgid(uid)
                os.setuid(uid)
            q = _LIBC.msgget(0, _IPC_CREAT | 0o600)
            msg = struct.pack("l", 1) + SECRET.encode()
            sent = _LIBC.msgsnd(q, msg, len(SECRET), _IPC_NOWAIT)
            sem = _LIBC.semget(0, 1, _IPC_CREAT | 0o600)
            _LIBC.semctl(sem, 0, _SETVAL, 1)
            shm = _LIBC.shmget(0, 4096, _IPC_CREAT | 0o600)
            os.write(w, f"{q} {sent} {sem} {shm}".encode())
        finally:
            os._exit(0)
    os.close(w)
    q, sent, sem, shm = (int(x) for x in os.read(r, 100).split())
    os.close(r)
    os.waitpid(pid, 0)
    assert min(q, sem, shm) >= 0 and sent == 0
    return {"msg": q, "sem": sem, "shm": shm}


def _ipc_state(ipc: dict[str, int]) -> dict[str, object]:
    """Messages in the queue, the semaphore's value and the segment's mode (as /proc/sysvipc lists them)."""

    def row(kind: str, ident: int) -> list[str] | None:
        for line in Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1]) == ident:
                return fields
        return None

    msg, shm = row("msg", ipc["msg"]), row("shm", ipc["shm"])
    return {
        "messages": int(msg[4]) if msg else None,  # key msqid perms cbytes qnum
        "semaphore": _LIBC.semctl(ipc["sem"], 0, _GETVAL),
        "shm mode": shm[2] if shm else None,  # key shmid perms
    }


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest):
    """Canary dir (world-writable, outside /root and pytest's 0700 dirs, so only the sandbox protects
    it), a loopback listener, a sacrificial process, SysV IPC objects and a fake API key in the host's
    environment."""
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
    program_uid = 65534 if os.geteuid() == 0 else os.getuid()
    victim = subprocess.Popen(["sleep", "3600"], user=program_uid)
    ipc = _sysv_objects(program_uid)
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SECRET
    before = {
        "ipc": _ipc_state(ipc),
        "affinity": (os.sched_getaffinity(victim.pid), os.sched_getaffinity(0)),
        "priority": os.getpriority(os.PRIO_PROCESS, victim.pid),
        "scheduler": os.sched_getscheduler(victim.pid),
    }
    yield {"dir": d, "port": listener.getsockname()[1], "listener": listener, "victim": victim, "ipc": ipc,
           "before": before}  # fmt: skip
    _LIBC.msgctl(ipc["msg"], _IPC_RMID, None)
    _LIBC.semctl(ipc["sem"], 0, _IPC_RMID)
    _LIBC.shmctl(ipc["shm"], _IPC_RMID, None)
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old
    victim.kill()
    victim.wait()
    listener.close()
    subprocess.run(["rm", "-rf", d], check=False)


# (Python layer, pool options, only the attacks on other processes)
CONFIGS = {
    "all-layers": (True, {}, False),
    "os-layer-only": (False, {}, False),
    "os-layer-only, landlock abi 5": (False, {"_landlock_abi": 5}, True),
    "os-layer-only, no seccomp signal rules": (False, {"_seccomp_omit": ("signals",)}, True),
}


def _corpus(world: dict, python_layer: bool, other_process_only: bool) -> dict[str, tuple[str, object]]:
    effects = _effects(world)
    if other_process_only:
        effects = {k: v for k, v in effects.items() if k.endswith("(other process)")}
    cases: dict[str, tuple[str, object]] = {}
    paths = {**REACH_OS, **CHAIN_REACH} if python_layer else {"plain import": "__import__('os')"}
    for path_name, reach in paths.items():
        prelude = NUMPY_CHAIN if path_name in CHAIN_REACH else ""
        for name, body in effects.items():
            cases[f"{name} via {path_name}"] = (f"{prelude}\nos = {reach}\n{body}", None)
    if python_layer:
        cases.update(PYTHON_LAYER_CASES)
    if not other_process_only:
        cases.update(RESOURCE_CASES)
    return cases


def _run_corpus(world: dict, config: str):
    python_layer, options, other_process_only = CONFIGS[config]
    cases = _corpus(world, python_layer, other_process_only)
    with SandboxPool(workers=2, _python_layer=python_layer, **options) as pool:
        pool.wait_ready()
        assert pool.run(["answer = 1"] * 2) == [PotResult(True, answer="1")] * 2
        pids = pool.worker_pids()
        results = pool.run([prog for prog, _ in cases.values()], timeout_s=0.5, memory_mb=256)
        after = pool.run(["answer = 6 * 7"])  # the pool still works after the corpus
        restarts, pids_after = pool.restarts, pool.worker_pids()
    return cases, dict(zip(cases, results, strict=True)), after, (pids, pids_after, restarts)


@pytest.fixture(scope="module", params=list(CONFIGS))
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
    assert not bad, f"{python_layer}: {bad}"


def test_the_world_is_unchanged(outcome, world: dict) -> None:
    d = Path(world["dir"])
    assert (d / "canary.txt").read_text() == CANARY_TEXT
    assert (d / "cache.sqlite").stat().st_size == len("SQLite format 3\0") * 64
    assert sorted(p.name for p in d.iterdir()) == ["cache.sqlite", "canary.txt", "secret.txt"]
    assert (d / "canary.txt").stat().st_mode & 0o777 == 0o666
    assert world["victim"].poll() is None, "the sacrificial process was killed"
    with pytest.raises(BlockingIOError):
        world["listener"].accept()  # nothing connected
    before, victim = world["before"], world["victim"].pid
    assert _ipc_state(world["ipc"]) == before["ipc"]
    assert (os.sched_getaffinity(victim), os.sched_getaffinity(0)) == before["affinity"]
    assert os.getpriority(os.PRIO_PROCESS, victim) == before["priority"]
    assert os.sched_getscheduler(victim) == before["scheduler"]


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


def test_the_attacks_on_other_processes_work_without_the_boundary() -> None:
    """The corpus can fail: with no kernel layer and no Python layer (weak mode), every attack on another
    process or IPC object above succeeds against a throwaway world of its own."""
    if platform.machine() != "x86_64":
        pytest.skip("the attack bodies use x86-64 glibc constants")
    uid = 65534 if os.geteuid() == 0 else os.getuid()
    victims = [subprocess.Popen(["sleep", "120"], user=uid) for _ in range(3)]
    ipc = _sysv_objects(uid)
    host_affinity = os.sched_getaffinity(0)
    libc = "libc = len.__self__.__import__('ctypes').CDLL(None)\n"
    try:
        programs = {}
        for name, body in _other_process({"victim": victims[0], "ipc": ipc}).items():
            programs[name] = f"os = __import__('os')\n{libc}{body}\nanswer = 666"
        for i, name in enumerate(("F_SETOWN + SIGIO", "F_SETOWN_EX + SIGIO"), start=1):
            body = _other_process({"victim": victims[i], "ipc": ipc})[name]
            programs[name] = f"os = __import__('os')\n{libc}{body}\nanswer = 666"
        with SandboxPool(workers=1, mode="weak", _simulate_no_boundary=True, _python_layer=False) as pool:
            results = dict(zip(programs, pool.run(list(programs.values()), timeout_s=2.0), strict=True))
        failed = {k: r for k, r in results.items() if not (r.ok or SECRET in (r.error or ""))}
        if os.geteuid() == 0:  # a root host: the kernel itself stops uid nobody from pinning it
            assert "Operation not permitted" in (failed.pop("pin the host").error or "")
        assert not failed, failed
        assert SECRET in (results["msgrcv a secret"].error or "")
        assert all(v.wait(timeout=10) == -9 for v in victims[1:]), "SIGIO did not kill its victim"
        assert os.sched_getaffinity(0) == ({0} if os.geteuid() else host_affinity)
        assert os.getpriority(os.PRIO_PROCESS, victims[0].pid) == 19
        state = _ipc_state(ipc)
        assert state["shm mode"] == "666" and state["messages"] is None  # read, then the queue removed
    finally:
        os.sched_setaffinity(0, host_affinity)
        for v in victims:
            v.kill()
            v.wait()
        _LIBC.msgctl(ipc["msg"], _IPC_RMID, None)
        _LIBC.semctl(ipc["sem"], 0, _IPC_RMID)
        _LIBC.shmctl(ipc["shm"], _IPC_RMID, None)


def test_the_numpy_chain_removes_the_python_layer() -> None:
    """What the corpus's `numpy memory chain` path does: after it, ctypes (refused by the audit hook)
    works in the program child. So every effect after the chain meets the OS boundary alone."""
    if sys.implementation.name != "cpython" or sys.version_info < (3, 11):
        pytest.skip("the chain uses CPython 3.11+ object layouts")
    probe = "c = len.__self__.__import__('ctypes')\nanswer = c.CDLL(None).getpid()"
    with SandboxPool(workers=1) as pool:
        without, with_chain = pool.run([probe, NUMPY_CHAIN + "\n" + probe], timeout_s=5.0)
    assert not without.ok and "ctypes" in (without.error or "")
    assert with_chain.ok, with_chain


def test_program_memory_is_shared_with_no_one() -> None:
    """An arbitrary memory write (numpy above, ctypes with the Python layer off) reaches only the
    program's own copy-on-write pages: no worker (whose forks are the program children) holds a shared
    writable mapping, the only kind another process could see a write through."""
    with SandboxPool(workers=2) as pool:
        pool.wait_ready()
        maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in pool.worker_pids()}
    for pid, text in maps.items():
        assert "numpy" in text, "not the worker process"  # the maps of the process that forks programs
        shared = [
            line for line in text.splitlines() if line.split()[1][1] == "w" and line.split()[1][3] == "s"
        ]
        assert not shared, (pid, shared)


def test_cpu_budget_cannot_be_stretched() -> None:
    """A program that ignores SIGPROF and SIGXCPU (Python layer off) is killed at its budget plus a fixed
    grace. Run through the worker's own loop with a long wall clock, so the CPU limit decides on any load."""
    import resource

    from edge_distill import sandbox_os, sandbox_worker

    boundary = sandbox_os.Boundary.build(sandbox_os.read_roots())
    program = (
        "import signal\nfor s in (signal.SIGPROF, signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\n"
        "while True:\n    pass"
    )
    req = {
        "code": program,
        "cpu_s": 0.5,
        "wall_s": 600.0,
        "memory_mb": 256,
        "strict": True,
        "python_layer": False,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = sandbox_worker._run_in_child(req, boundary)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert not res["ok"] and "CPU time limit of 0.5s" in res["error"], res
    assert 0.5 <= used <= 0.5 + CPU_GRACE_S + 0.5, used  # the worker's wake-up latency; before: 3 s


def test_sleeping_counts_against_the_wall_clock() -> None:
    """Sleeping programs hold a worker for 2 x budget + 1 s each, not 10 x."""
    assert wall_limit_s(0.5) == 2.0 and wall_limit_s(2.0) == 5.0 and wall_limit_s(1000) <= 60
    with SandboxPool(workers=1, _python_layer=False) as pool:
        assert pool.run(["answer = 1"])[0].ok
        t0 = time.monotonic()
        results = pool.run(["import time\ntime.sleep(100)"] * 3, timeout_s=0.5)
        elapsed = time.monotonic() - t0
    assert all("wall-clock limit of 2s" in (r.error or "") for r in results), results
    assert elapsed < 3 * 2.0 + 3.0, elapsed  # with 10 x budget + 1 s it took 18 s
