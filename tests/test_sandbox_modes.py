"""PoT sandbox modes (strict refuses without the OS boundary, weak opts out) and a host that treats
every byte from a worker as hostile (forged, oversize, garbage frames: failed results, never a crash)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_distill import sandbox, sandbox_protocol
from edge_distill.config import Config
from edge_distill.sandbox import PotResult, SandboxPool, SandboxUnavailable


def test_strict_refuses_without_the_os_boundary_and_names_the_key() -> None:
    with SandboxPool(workers=1, mode="strict", _simulate_no_boundary=True) as pool:
        with pytest.raises(SandboxUnavailable) as err:
            pool.run(["answer = 1"])
        with pytest.raises(SandboxUnavailable):  # and keeps refusing
            pool.run(["answer = 1"])
    msg = str(err.value)
    assert "sandbox.mode: weak" in msg and "EDGE_DISTILL_SANDBOX_MODE=weak" in msg
    assert "disabled for testing" in msg  # says why the probe failed


def test_strict_names_the_landlock_abi_it_needs_where_seccomp_lacks_rules() -> None:
    """A libseccomp without the signal rules on a kernel below Landlock ABI 6 (signal scoping): nothing
    stops F_SETOWN + SIGIO, so strict mode refuses, naming the ABI; with either one it runs."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    with SandboxPool(workers=1, _landlock_abi=5, _seccomp_omit=("signals",)) as pool:
        with pytest.raises(SandboxUnavailable) as err:
            pool.run(["answer = 1"])
    assert "signals" in str(err.value) and "Landlock ABI >= 6 (this kernel: ABI 5)" in str(err.value)
    with SandboxPool(workers=1, _landlock_abi=5) as pool:  # seccomp covers what Landlock 5 lacks
        assert pool.run(["answer = 1"])[0].ok
        assert pool.relies["signals"] == "seccomp" and "landlock-v5" in pool.layers
    with SandboxPool(workers=1, _seccomp_omit=("signals",)) as pool:  # Landlock's signal scoping does
        assert pool.run(["answer = 1"])[0].ok
        assert pool.relies["signals"] == "landlock-abi>=6"


@pytest.mark.parametrize(
    ("group", "landlock_abi"),
    [("processes", None), ("network", None), ("signals", 5), ("ipc", None), ("scheduling", None),
     ("terminal", None), ("limits", None)],
)  # fmt: skip
def test_the_probe_checks_each_guarantee_for_real(group: str, landlock_abi: int | None, monkeypatch) -> None:
    """A filter that claims a rule group it does not have (a libseccomp that silently dropped rules):
    the plan trusts the claim, the probe does not. Without IPC/PID namespaces (this process has none)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    from edge_distill import sandbox_os, sandbox_probe

    if landlock_abi is not None:
        monkeypatch.setenv(sandbox_os.TEST_LANDLOCK_ABI_ENV, str(landlock_abi))
    monkeypatch.setenv(sandbox_os.TEST_SECCOMP_OMIT_ENV, group)
    boundary = sandbox_os.Boundary.build(sandbox_os.read_roots())
    assert group not in boundary.seccomp_groups
    assert sandbox_probe.probe(boundary) != ""  # honest: the guarantee is missing
    boundary.seccomp_groups.append(group)
    assert boundary.plan()[1] == []
    why = sandbox_probe.probe(boundary, [group])
    assert why.startswith(f"{group} not held"), why


def test_weak_mode_runs_with_python_layer_and_rlimits_only() -> None:
    with SandboxPool(workers=1, mode="weak", _simulate_no_boundary=True) as pool:
        ok, hostile, loop = pool.run(
            ["answer = 6 * 7", "import random\nrandom._os.system('true')", "while True:\n    pass"],
            timeout_s=0.5,
        )
        assert pool.layers == []
    assert ok == PotResult(True, answer="42")
    assert not hostile.ok and "os.system" in (hostile.error or "")
    assert not loop.ok and "timeout" in (loop.error or "")


def test_strict_pool_reports_its_layers() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the OS boundary is Linux-only")
    with SandboxPool(workers=1) as pool:
        assert pool.run(["answer = 1"])[0].ok
        assert pool.mode == "strict" and "seccomp" in pool.layers


def test_mode_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.MODE_ENV, "weak")
    assert sandbox._default_mode() == "weak"
    monkeypatch.setenv(sandbox.MODE_ENV, "off")
    with pytest.raises(SandboxUnavailable, match="EDGE_DISTILL_SANDBOX_MODE"):
        sandbox._default_mode()
    # the caller's mode (a run's sandbox.mode, passed down) wins over the environment; no process-wide state
    monkeypatch.setattr(sandbox, "_POOLS", {})
    assert sandbox.run_programs(["answer = 2"], mode="strict")[0].answer == "2"
    assert set(sandbox._POOLS) == {"strict"} and sandbox._POOLS["strict"].mode == "strict"
    sandbox._POOLS["strict"].close()
    with pytest.raises(ValueError):
        sandbox.run_programs(["answer = 1"], mode="off")


def test_config_key() -> None:
    assert Config().sandbox.mode == "strict"
    assert Config.model_validate({"sandbox": {"mode": "weak"}}).sandbox.mode == "weak"
    with pytest.raises(ValueError):
        Config.model_validate({"sandbox": {"mode": "off"}})


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ([1], None),
        ({"ok": "yes", "value": "1"}, None),
        ({"ok": True, "value": 5}, None),
        ({"ok": True, "value": "1", "extra": 1}, None),
        ({"ok": True, "error": "1"}, None),
        ({"ok": False, "error": ["x"]}, None),
        ({"ok": True, "value": "7" * 5000}, "100 digits"),
        ({"ok": True, "value": "9" * 150}, "100 digits"),
        ({"ok": True, "value": "1e999999"}, "not a number"),
        ({"ok": True, "value": "-1.5E+300000000000"}, "not a number"),
        ({"ok": True, "value": "many"}, "not a number"),
        ({"ok": False, "error": "x" * 100_000}, "x" * 300),
    ],
)
def test_result_frames_are_validated(frame: object, error: str | None) -> None:
    if isinstance(frame, dict):
        frame = {**frame, "id": 7}
    assert (
        sandbox_protocol.to_result({"ok": True, "value": "1", "id": 6}, 7) is None
    )  # answers another request
    res = sandbox_protocol.to_result(frame, 7)
    if error is None:
        assert res is None  # the batch kills and replaces the worker that sent it
    else:
        assert res is not None and not res.ok and error in (res.error or "")
        assert len(res.error or "") <= 300


_FAKE_WORKER = r"""
import json, os, struct, sys
sys.path[:] = json.loads(sys.argv[1])
from edge_distill.sandbox_protocol import read_frame_bytes, write_frame
out = os.dup(1)
write_frame(out, {"ready": True, "strict_ok": True, "layers": ["fake"], "why_not": ""})
while (raw := read_frame_bytes(0)) is not None:
    req = json.loads(raw)
    code, rid = req["code"], str(req["id"]).encode()
    bodies = {
        "garbage": b"\xff\xfe not json", "list": b"[1]", "deep": b"[" * 100000 + b"]" * 100000,
        "bigint": b'{"ok": true, "id": ' + rid + b', "value": ' + b"7" * 5000 + b"}",
        "ok-not-bool": b'{"ok": "yes", "id": ' + rid + b', "value": "1"}',
        "bigstr": b'{"ok": true, "id": ' + rid + b', "value": "' + b"7" * 5000 + b'"}',
    }
    if code == "fine":
        write_frame(out, {"ok": True, "value": "1", "id": req["id"]})
    elif code == "oversize":
        os.write(out, struct.pack("<I", 2**31))
    elif code == "twice":
        write_frame(out, {"ok": True, "value": "1", "id": req["id"]})
        write_frame(out, {"ok": True, "value": "2", "id": req["id"]})
    elif code == "stall":  # half a frame, then silence: the host must not block on it
        os.write(out, struct.pack("<I", 100) + b"{")
        import time
        time.sleep(600)
    elif code == "truncated":
        os.write(out, struct.pack("<I", 100) + b"{")
        os._exit(0)
    else:
        os.write(out, struct.pack("<I", len(bodies[code])) + bodies[code])
"""


def test_host_survives_a_lying_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compromised worker's frames become failed results and the worker is replaced."""
    monkeypatch.setattr(sandbox, "_BOOTSTRAP", _FAKE_WORKER)
    codes = ["garbage", "list", "deep", "bigint", "ok-not-bool", "oversize", "truncated", "bigstr"]
    with SandboxPool(workers=1) as pool:
        results = pool.run(codes + ["fine"])
        by_code = dict(zip(codes + ["fine"], results, strict=True))
        assert by_code["fine"] == PotResult(True, answer="1")
        assert all(not by_code[c].ok for c in codes), by_code
        assert "100 digits" in (by_code["bigstr"].error or "")
        assert "died" in (by_code["truncated"].error or "")
        assert pool.restarts >= 6  # bigstr is a well-formed frame: only its answer is refused
        # A second frame for one request is never taken as the answer to the next one, and the
        # worker that sent it is replaced (at once if both frames arrive together, else on the next run).
        restarts = pool.restarts
        assert pool.run(["twice"]) == [PotResult(True, answer="1")]
        [after] = pool.run(["fine"])
        assert after.answer != "2" and pool.restarts == restarts + 1
        assert pool.run(["fine"]) == [PotResult(True, answer="1")]
        [stalled] = pool.run(["stall"], timeout_s=0.1)  # host gives up after 2 x 0.1 + 1 + 5 s
        assert not stalled.ok and "unresponsive" in (stalled.error or "")
        assert pool.run(["fine"]) == [PotResult(True, answer="1")]


def _python_for_nobody(pythonpath: str) -> str | None:
    """An interpreter of this Python version that uid 65534 can run with our packages (the venv's own
    may live under a 0700 /root)."""
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/python{v}", f"/usr/local/bin/python{v}"):
        probe = (
            "import os, sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); "
            f"os.execv({exe!r}, [{exe!r}, '-c', 'import sympy, numpy, pyseccomp, edge_distill.sandbox'])"
        )
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}
        if (
            os.path.exists(exe)
            and subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, timeout=120
            ).returncode
            == 0
        ):
            return exe
    return None


_UNPRIVILEGED_CORPUS = r"""
import json, os, sys
from edge_distill.sandbox import SandboxPool
canary = sys.argv[1]
hostile = ["import random\nrandom._os.system('true')", "import random\nrandom._os.kill(random._os.getppid(), 9)",
           "while True:\n    pass", "import random\nanswer = random._os.environ['OPENAI_API_KEY']"]
os_only = [f"import os\nos.unlink({canary!r})", "import os\nos.kill(os.getppid(), 9)", "import os\nos.fork()",
           "import os\nanswer = os.environ['OPENAI_API_KEY']", f"import os\nos.truncate({canary!r}, 0)"]
out = {"uid": os.getuid()}
with SandboxPool(workers=1) as p:
    out["all"] = [r.ok for r in p.run(["answer = 2", *hostile], timeout_s=0.5)]
    out["layers"], out["restarts"] = p.layers, p.restarts
with SandboxPool(workers=1, _python_layer=False) as p:
    out["os_only"] = [r.ok for r in p.run(["answer = 2", *os_only], timeout_s=0.5)]
    out["restarts"] += p.restarts
print(json.dumps(out))
"""


def test_corpus_as_an_unprivileged_user() -> None:
    """The whole sandbox with a non-root host (user + network namespace path, no uid drop)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("needs Linux and root to switch to an unprivileged uid")
    import json
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pythonpath = os.pathsep.join(
        [root] + [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    )
    exe = _python_for_nobody(pythonpath)
    if exe is None:
        pytest.skip("no Python interpreter of this version that uid 65534 can run with our packages")
    d = tempfile.mkdtemp(prefix="edge-distill-canary-", dir="/tmp")
    os.chmod(d, 0o777)
    canary = os.path.join(d, "canary.txt")
    with open(canary, "w") as f:
        f.write("keep")
    os.chmod(canary, 0o666)
    script = (
        "import os, sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); "
        f"os.execv({exe!r}, [{exe!r}, '-c', sys.argv[1], sys.argv[2]])"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath, "OPENAI_API_KEY": "sk-canary-unprivileged"}
    try:
        r = subprocess.run(
            [sys.executable, "-c", script, _UNPRIVILEGED_CORPUS, canary],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["uid"] == 65534 and "seccomp" in out["layers"] and "netns" in out["layers"]
        assert out["all"] == [True, False, False, False, False]
        assert out["os_only"] == [True, False, False, False, False, False]
        assert out["restarts"] == 0
        with open(canary) as f:
            assert f.read() == "keep"
    finally:
        os.unlink(canary)
        os.rmdir(d)


def test_missing_libseccomp_means_no_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_distill import sandbox_os

    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import fails as if not installed
    notes: list[str] = []
    assert sandbox_os._seccomp_filter(deny_all_opens=False, notes=notes) == (None, [])
    assert "seccomp unavailable" in notes[0]


def test_without_landlock_every_open_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback when the kernel has no Landlock: no path rules, so no file may be opened at all."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    from edge_distill import sandbox_os

    monkeypatch.setattr(sandbox_os, "_landlock_ruleset", lambda roots, notes, max_abi=None: (0, -1))
    boundary = sandbox_os.Boundary.build(sandbox_os.read_roots())
    assert boundary.layers() == ["seccomp"]
    assert boundary.plan() == ({g.name: "seccomp" for g in sandbox_os.GUARANTEES}, [])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            boundary.apply(require=True)
            os.open(sys.executable, os.O_RDONLY)
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 0


def test_os_boundary_holds_for_an_unprivileged_worker() -> None:
    """What a non-root host's worker does (user, network, IPC and PID namespaces, no uid drop), in a
    forked child that gives up root first; runs even where uid 65534 cannot start Python itself."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("needs Linux and root to switch to an unprivileged uid")
    import _socket  # noqa: F401 - loaded here: the unprivileged child may not be able to read them
    import fcntl  # noqa: F401
    import resource  # noqa: F401
    import tempfile

    from edge_distill import sandbox_os, sandbox_probe

    d = tempfile.mkdtemp(prefix="edge-distill-probe-", dir="/tmp")
    os.chmod(d, 0o777)  # writable by the unprivileged uid: only the boundary stops the probe's canary
    boundary = sandbox_os.Boundary.build(sandbox_os.read_roots())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.chdir(d)
            boundary.namespaces = sandbox_os.enter_namespaces()
            os.write(w, f"{','.join(boundary.namespaces)}|{sandbox_probe.probe(boundary)}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    try:
        assert out == "user,net,ipc,pid|", out  # namespaces entered, probe found every guarantee held
        assert os.listdir(d) == []
    finally:
        os.rmdir(d)


@pytest.mark.parametrize(
    "options",
    [{"_simulate_no_boundary": True}, {"_landlock_abi": 5, "_seccomp_omit": ("signals",)}],
    ids=["no boundary", "landlock 5 without seccomp signal rules"],
)
def test_cli_refusal_is_one_message_naming_the_key(
    tmp_path, monkeypatch: pytest.MonkeyPatch, options
) -> None:
    """`edge-distill teach` where the boundary is unavailable: exit 2 and the key to set; weak runs."""
    import functools

    from click.testing import CliRunner

    from edge_distill.cli import main

    monkeypatch.setattr(sandbox, "_POOLS", {})
    monkeypatch.setattr(sandbox, "SandboxPool", functools.partial(SandboxPool, **options))
    args = [
        "teach",
        f"runs_dir={tmp_path}",
        "data.limit_train=4",
        "teacher.strategies=[pot]",
        "teacher.cache=null",
    ]
    try:
        res = CliRunner().invoke(main, [*args, "name=strict"])
        assert res.exit_code == 2, res.output
        assert "sandbox.mode: weak" in res.output and "Traceback" not in res.output
        assert res.output.count("error:") == 1
        if "_landlock_abi" in options:
            assert "Landlock ABI >= 6 (this kernel: ABI 5)" in res.output
        res = CliRunner().invoke(main, [*args, "name=weak", "sandbox.mode=weak"])
        assert res.exit_code == 0, res.output
    finally:
        for pool in sandbox._POOLS.values():
            pool.close()


def test_a_worker_that_stops_reading_does_not_block_the_host() -> None:
    """A request bigger than the pipe buffer to a stopped worker: replaced after a grace, not a hang."""
    import signal
    import time

    with SandboxPool(workers=1) as pool:
        assert pool.run(["answer = 1"])[0].ok
        os.kill(pool.worker_pids()[0], signal.SIGSTOP)
        t0 = time.monotonic()
        assert pool.run(["answer = 3\n" + "#" * 90_000]) == [PotResult(True, answer="3")]
        assert time.monotonic() - t0 < 60 and pool.restarts == 1
