"""The ExecuTorch client (edge_distill/runtimes/executorch.py) without ExecuTorch: torch-free imports, where the
worker's environment is found, and a worker that answers outside the protocol (a real process that misbehaves on
purpose, since the real worker does not) stopped with a clear error. The real worker: tests/test_export_executorch.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from edge_distill.runtimes import executorch as et_rt

needs_no_direct_install = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is not None,
    reason="ExecuTorch is installed in this interpreter itself",
)


def test_client_and_worker_modules_are_torch_free():
    code = (
        "import sys, edge_distill.runtimes.executorch, edge_distill.runtimes.executorch_worker\n"
        "assert 'numpy' not in sys.modules\n"
        "import exporters.executorch_pte\n"
        "bad = [m for m in ('torch', 'transformers', 'executorch', 'torchao') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_no_direct_install
def test_environment_is_setup_dir_or_an_error_naming_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(et_rt.ExecuTorchMissing, match=r"no .*executorch-packages.*scripts/setup\.sh"):
        et_rt.environment()
    assert not et_rt.available()
    (tmp_path / et_rt.PACKAGES_DIR / "executorch").mkdir(parents=True)
    env = et_rt.environment()
    assert env == et_rt.Environment(sys.executable, str(tmp_path / et_rt.PACKAGES_DIR))
    assert et_rt._worker_env(env)["PYTHONPATH"].split(":")[0] == env.pythonpath


HOSTILE = """
import json, os, sys
out = sys.stdout.buffer
sys.stdin.readline()
out.write(b'{"ok": true, "result": {"pid": 1}, "nbytes": 0}\\n'); out.flush()  # hello
sys.stdin.readline()
mode = os.environ["HOSTILE_MODE"]
if mode == "garbage":
    out.write(b"Loading weights... 100%\\n")
elif mode == "huge_blob":
    out.write(b'{"ok": true, "result": {}, "nbytes": 99999999999999}\\n')
elif mode == "endless_line":
    out.write(b"x" * (70 << 20))
elif mode == "exit":
    sys.exit(3)
elif mode == "silent":
    import time; time.sleep(60)
out.flush()
sys.stdin.readline()
"""


class _Hostile(et_rt.Worker):
    module = "hostile_worker"


@needs_no_direct_install
@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "answer outside the protocol"),
        ("huge_blob", "over the .* bound"),
        ("endless_line", "answer line over"),
        ("exit", r"the worker exited \(exit code 3\)"),
        ("silent", "no answer in time"),
    ],
)
def test_a_worker_off_the_protocol_is_killed_with_a_clear_error(tmp_path, monkeypatch, mode, message):
    side = tmp_path / et_rt.PACKAGES_DIR
    (side / "executorch").mkdir(parents=True)
    (side / "hostile_worker.py").write_text(textwrap.dedent(HOSTILE))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setenv("HOSTILE_MODE", mode)
    worker = _Hostile(start_timeout_s=60)
    proc = worker._proc
    with pytest.raises(et_rt.ExecuTorchError, match=message):
        worker.call("nll", ids=[1, 2], timeout_s=3)
    assert worker._proc is None and proc is not None and proc.poll() is not None  # nothing left running
    with pytest.raises(et_rt.ExecuTorchError, match="after close"):
        worker.call("nll", ids=[1, 2])


def test_worker_loop_answers_every_request_and_skips_an_oversized_one():
    """The worker's loop in-process (no ExecuTorch needed for these ops): an oversized line is answered with an
    error and skipped whole, so the next request still gets its own answer; an unknown op is an error too."""
    import io
    import json

    from edge_distill.runtimes.executorch_worker import serve

    big = b'{"op": "hello", "pad": "' + b"x" * (et_rt.MAX_REQUEST_BYTES + 10) + b'"}\n'
    out = io.BytesIO()
    serve(io.BytesIO(big + b'{"op": "nope"}\n{"op": "hello"}\nnot json\n{"op": "rss"}\n'), out)
    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [a["ok"] for a in answers] == [False, False, True, False, True]
    assert "request over" in answers[0]["error"] and "unknown op 'nope'" in answers[1]["error"]
    assert answers[4]["result"]["peak_mb"] > 0


def test_client_refuses_an_oversized_request_before_sending(tmp_path, monkeypatch):
    side = tmp_path / et_rt.PACKAGES_DIR
    (side / "executorch").mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    if importlib.util.find_spec("executorch") is not None:
        pytest.skip("ExecuTorch is installed in this interpreter itself")
    worker = et_rt.Worker()  # the real worker module: `hello` needs no ExecuTorch
    try:
        with pytest.raises(et_rt.ExecuTorchError, match="a request of .* bytes"):
            worker.call("encode", text="x" * et_rt.MAX_REQUEST_BYTES)
        assert worker.call("hello")["pid"] == worker._proc.pid  # still in step
    finally:
        worker.close()
