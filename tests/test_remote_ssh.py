"""`edge-distill bench --remote ssh://...` against a real OpenSSH server on loopback (Debian's sshd).

The fixture starts `sshd` on a free port of 127.0.0.1 with a host key made here, for a throwaway user
(`edge-distill-ssh`, key login only, created if missing) whose Python is the torch-free device venv that
`scripts/check_device_install.sh --install-only` makes in its home from Debian's /usr/bin/python3 — so the
device side runs another interpreter, as another user, with no torch, exactly as on a board. Nothing is
mocked: the bench copies the package over ssh, measures and generates there, reads the completions back
and judges them here.

Needs root (sshd logs in another user) and `sshd` (`apt-get install openssh-server`; .ci/run installs it):
skipped with the reason outside CI, failed when CI=true.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_profiles.package import read_package
from device_profiles.remote import (
    SSH,
    RemoteAuthError,
    RemoteError,
    RemoteRuntimeMissing,
    RemoteUnreachable,
    SSHTarget,
    _parse_result,
    bench_remote,
    remote_job,
)
from edge_distill.types import Problem

pytestmark = [pytest.mark.slow, pytest.mark.integration]

USER = "edge-distill-ssh"
REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"  # not a venv under /root: the throwaway user can run it
VENV_REL = ".local/share/edge-distill/device-venv"  # check_device_install.sh --install-only's default


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the SSH test: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    # no password, but not locked: with UsePAM no, sshd refuses locked accounts even for key logins
    subprocess.run(["usermod", "-p", "*", USER], check=True)
    return pwd.getpwnam(USER)


def _device_venv(home: Path) -> Path:
    """The device install for the throwaway user, by the script users run on their device (stamped: fast
    when already there)."""
    venv = home / VENV_REL
    env = {**os.environ, "DEVICE_PYTHON": SYSTEM_PYTHON, "DEVICE_VENV": str(venv)}
    proc = subprocess.run(
        ["bash", "scripts/check_device_install.sh", "--install-only"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    subprocess.run(["chmod", "-R", "a+rX", str(home / ".local")], check=True)
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    sshd_bin = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")
    _require(sshd_bin is not None, "sshd not installed (apt-get install openssh-server)")
    _require(os.geteuid() == 0, "sshd must run as root to log in the throwaway user")
    _require(Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON} (the device venv's interpreter) missing")
    user = _ensure_user()
    home = Path(user.pw_dir)
    python = _device_venv(home)
    tmp = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(tmp / "host_ed25519")
    client_pub = _keygen(tmp / "client_ed25519")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(client_pub + "\n")
    for p in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(p, user.pw_uid, user.pw_gid)
    (ssh_dir / "authorized_keys").chmod(0o600)
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_ed25519'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AllowUsers {USER}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nX11Forwarding no\n"
        "AllowTcpForwarding no\nPrintMotd no\nLogLevel VERBOSE\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    subprocess.run([sshd_bin, "-t", "-f", str(config)], check=True)
    log = open(tmp / "sshd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "sshd.log").read_text()
            time.sleep(0.1)
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    yield {
        "url": f"ssh://{USER}@127.0.0.1:{port}",
        "port": port,
        "identity": tmp / "client_ed25519",
        "known_hosts": known_hosts,
        "python": python,
        "log": tmp / "sshd.log",
        "tmp": tmp,
    }
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    pytest.importorskip("llama_cpp")
    from exporters.api import export_model
    from tests.tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("remote-package")
    model = build_tiny_llama(root / "tiny", vocab_size=384)
    return export_model(
        model, root / "gguf-q4_k_m", "gguf", "q4_k_m", source_accuracy={"dev": 0.0, "n": 10},
        parity_prompts=1, check_transformers=False,
    )  # fmt: skip


def _remote_temp_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("edge-distill-remote-*")}


def test_bench_remote_measures_on_the_device(sshd, package, tmp_path):
    before = _remote_temp_dirs()
    out = tmp_path / "bench"
    cmd = [
        sys.executable, "-m", "edge_distill.cli", "bench", str(package), "--remote", sshd["url"],
        "--identity", str(sshd["identity"]), "--known-hosts", str(sshd["known_hosts"]), "--profile", "host",
        "--profile", "raspberry-pi-5", "--split", "test", "--accuracy-limit", "3", "--repetitions", "2", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]  # 3: a budget gate failed, still a full report
    label = f"{USER}@127.0.0.1:{sshd['port']}"
    row, pi = json.loads((out / "bench.json").read_text())["reports"]
    assert row["basis"] == "measured" and row["figures"]["note"].startswith(f"measured on {label} (")
    m = row["measurement"]
    assert m["runtime"] == "llama.cpp" and m["repetitions"] == 2 and len(m["decode_tok_s"]["values"]) == 2
    assert m["new_tokens"] == 64 and m["prompt_tokens"] > 5
    assert (
        m["decode_tok_s"]["median"] > 0
        and m["prefill_tok_s"]["median"] > 0
        and 0 < m["ttft_s"]["median"] < 60
    )
    assert m["peak_rss_mb"] > m["baseline_rss_mb"] > 0
    assert m["threads"] == os.cpu_count()  # host profile, threads auto: the device's cores
    assert row["host"]["bandwidth_gbs"] > 0  # the device's own copy benchmark
    acc = row["accuracy"]
    assert (
        acc["n"] == 3 and 0 <= acc["correct"] <= 3 and acc["source_accuracy"] is None
    )  # no source run here: no comparison
    assert "(MEASURED)" in (out / "bench.md").read_text() and label in (out / "bench.md").read_text()
    # Another profile: measured again with its threads, gated by its budget, accuracy measured once; this
    # x86 loopback "device" is flagged as not being a Pi 5 by the profile's detect rule.
    assert (
        pi["profile"] == "raspberry-pi-5" and pi["basis"] == "measured" and pi["measurement"]["threads"] == 4
    )
    assert "NOT a raspberry-pi-5" in pi["figures"]["note"] and pi["accuracy"] == acc
    assert pi["budget"]["min_accuracy"] == 0.05 and not pi["passed"] and proc.returncode == 3
    # The accuracy pass ran on the device: its interpreter (Debian's, in the device venv), not this one.
    run, _ = json.loads((out / "remote.json").read_text())["runs"]
    env = run["environment"]
    assert env["python_path"].endswith(f"{VENV_REL}/bin/python") and env["torch_imported"] is False
    device_version = subprocess.run([str(sshd["python"]), "-c", "import platform; print(platform.python_version())"],
                                    capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert env["python"] == device_version and env["runtime_versions"]["llama-cpp-python"]
    preds = [json.loads(x) for x in (out / "gguf-q4_k_m.predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [q.id for q in _problems(3)] and all(
        isinstance(p["raw"], str) for p in preds
    )
    assert sum(p["correct"] for p in preds) == acc["correct"]
    # a real key login by the throwaway user, and the device temp dir removed afterwards
    assert f"Accepted publickey for {USER}" in sshd["log"].read_text()
    assert _remote_temp_dirs() == before


def _device_processes() -> list[str]:
    uid = pwd.getpwnam(USER).pw_uid
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid == uid:
                out.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


def test_killed_host_stops_the_device_run(sshd, package, tmp_path):
    """The host dies mid-run (SIGKILL: no cleanup of its own): the runner sees its SSH stdin close, stops
    its runtime workers and removes the temp dir the host made."""
    before = _remote_temp_dirs()
    cmd = [
        sys.executable, "-m", "edge_distill.cli", "bench", str(package), "--remote", sshd["url"],
        "--identity", str(sshd["identity"]), "--known-hosts", str(sshd["known_hosts"]), "--split", "test", "--accuracy-limit", "40",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    host = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any("device_profiles.worker" in c for c in _device_processes()):
            assert host.poll() is None and time.monotonic() < deadline, "the device run never started"
            time.sleep(0.2)
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 60
    while _device_processes() or _remote_temp_dirs() != before:
        assert time.monotonic() < deadline, (_device_processes(), _remote_temp_dirs() - before)
        time.sleep(0.2)


def _problems(n: int) -> list[Problem]:
    from device_profiles.accuracy import load_eval_problems

    return load_eval_problems(limit=n)


def _bench(sshd, package, **kw):
    args = {"identity": sshd["identity"], "known_hosts": sshd["known_hosts"], "accuracy_limit": 0, "repetitions": 1,
            "new_tokens": 4, "timeout_s": 300, **kw}  # fmt: skip
    url = args.pop("url", sshd["url"])
    return bench_remote([package], ["host"], url, **args)


def test_remote_failures_say_what_to_do(sshd, package, tmp_path):
    before = _remote_temp_dirs()
    other_key = tmp_path / "other"
    _keygen(other_key)
    with pytest.raises(RemoteAuthError, match=r"refused the key .*authorized_keys"):
        _bench(sshd, package, identity=other_key)
    with pytest.raises(RemoteUnreachable, match=r"cannot reach .*sshd running"):
        _bench(sshd, package, url=f"ssh://{USER}@127.0.0.1:{_free_port()}")
    wrong_hosts = tmp_path / "known_hosts"
    _keygen(tmp_path / "fake_host")
    wrong_hosts.write_text(f"[127.0.0.1]:{sshd['port']} {(tmp_path / 'fake_host.pub').read_text()}")
    with pytest.raises(RemoteUnreachable, match=r"(?s)host key CHANGED .*ssh-keygen -R"):
        _bench(sshd, package, known_hosts=wrong_hosts)
    wrong_hosts.write_text("")  # no entry for this host
    with pytest.raises(RemoteUnreachable, match=r"(?s)host key is not in known_hosts.*ssh-keyscan -p"):
        _bench(sshd, package, known_hosts=wrong_hosts)
    with pytest.raises(RemoteRuntimeMissing, match=r"no Python at /nonexistent/python.*--install-only"):
        _bench(sshd, package, remote_python="/nonexistent/python")
    # Debian's bare python3 has none of the device dependencies: the runner's preflight names them
    with pytest.raises(RemoteRuntimeMissing, match=r"lacks .*llama_cpp.*--install-only"):
        _bench(sshd, package, remote_python=SYSTEM_PYTHON)
    assert _remote_temp_dirs() == before  # the dirs of the failed runs were removed too


def test_remote_output_is_bounded(sshd):
    ssh = SSH(SSHTarget.parse(sshd["url"]), sshd["identity"], sshd["known_hosts"])
    with pytest.raises(RemoteError, match="sent more than 1000 bytes"):
        ssh.run("yes", timeout_s=60, max_stdout=1000, step="flood")
    with pytest.raises(RemoteError, match="gave no result within 2s"):
        ssh.run("sleep 30", timeout_s=2, max_stdout=1000, step="hang")


def test_target_urls_are_checked():
    assert SSHTarget.parse("ssh://pi@raspberrypi.local:2222").label == "pi@raspberrypi.local:2222"
    assert SSHTarget.parse("ssh://u@[::1]").label == "u@[::1]:22"
    for bad in ("pi@host", "ssh://host", "ssh://pi@-oProxyCommand=x", "ssh://pi:pw@host", "ssh://pi@host:99999",
                "ssh://pi@host/path", "ssh://-l@host"):  # fmt: skip
        with pytest.raises(RemoteError, match="--remote"):
            SSHTarget.parse(bad)


def _result(package: Path, **edit) -> bytes:
    """A well-formed runner result for `package`, with fields replaced: the first problem's completion
    states its gold answer, the second's does not."""
    spread = {"median": 10.0, "min": 9.0, "max": 11.0, "values": [9.0, 11.0]}
    first, second = _problems(2)
    r = {
        "protocol": 2,
        "measurement": {
            "runtime": "llama.cpp", "model_path": "/tmp/x/pkg/model.gguf", "threads": 4, "load_s": 0.1,
            "warmup_s": 0.1, "prompt_tokens": 20, "new_tokens": 8, "repetitions": 2, "ttft_s": spread,
            "prefill_tok_s": spread, "decode_tok_s": spread, "peak_rss_mb": 100.0, "baseline_rss_mb": 50.0,
        },
        "hardware": {"cpu": "Cortex-A76", "arch": "aarch64", "cores": 4, "ram_gb": 8.0, "bandwidth_gbs": 10.0,
                     "compute_gflops": 50.0, "threads": 4, "method": "numpy"},
        "completions": [{"id": first.id, "raw": f"The answer is {first.answer}."},
                        {"id": second.id, "raw": f"The answer is {int(second.answer) + 1}."}],
        "environment": {"python": "3.11.2", "platform": "Linux", "machine": "aarch64", "device_model": "Pi 5",
                        "runtime_versions": {}, "torch_imported": False},
    }  # fmt: skip
    for path, value in edit.items():
        *parents, last = path.split("__")
        node = r
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[last] = value
    return json.dumps(r).encode()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"protocol": 1}, "protocol 1"),
        ({"extra": 1}, "not a valid runner result"),
        ({"measurement__decode_tok_s__median": float("nan")}, "not a valid runner result"),
        ({"measurement__decode_tok_s__median": -1.0}, "implausible"),
        ({"measurement__runtime": "onnxruntime-genai"}, "implausible"),
        ({"measurement__threads": "4; rm -rf /"}, "not a valid runner result"),
        ({"completions__0__raw": "x" * 30000}, "not a valid runner result"),
        ({"completions__1__id": "not-sent"}, "not for the 2 problems sent"),
        # the device's own verdict (issue 22: `correct: true` with `pred: null` used to count as right)
        ({"completions__1__correct": True}, "not a valid runner result"),
        ({"completions__1__pred": None}, "not a valid runner result"),
        ({"environment__torch_imported": True}, "torch was imported"),
        (
            {"error": {"kind": "bench", "message": "\x1b]0;pwned\x07boom"}},
            r"failed on the device: \?\]0;pwned\?boom",
        ),
    ],
)
def test_hostile_results_are_refused(package, edit, match):
    pkg = read_package(package)
    target = SSHTarget("pi", "10.0.0.5", 22)
    with pytest.raises(RemoteError, match=match):
        _parse_result(_result(package, **edit), target, pkg, _problems(2), "python")
    ok = _parse_result(_result(package), target, pkg, _problems(2), "python")
    # the host judged the raw completions against its own gold answers; the path is the local package's
    assert (
        ok.accuracy.n == 2 and ok.accuracy.correct == 1 and ok.measurement.model_path == str(pkg.model_path)
    )
    first, second = ok.accuracy.predictions
    assert first["correct"] and first["gold"] == _problems(2)[0].answer and not second["correct"]
    assert first["question"] == _problems(2)[0].question


def test_gold_answers_never_leave_the_host(package):
    problems = _problems(5)
    job = remote_job(
        read_package(package), problems, threads=4, timing_question="q", repetitions=1, new_tokens=4, strategy=None, timeout_s=600,
        max_new_tokens=64,
    )  # fmt: skip
    assert job["questions"] == [{"id": p.id, "question": p.question} for p in problems]
    assert "answer" not in json.dumps(job) and "gold" not in json.dumps(job)
    # the format row says what the device must have: the preflight checks it before importing anything
    assert (job["runtime_modules"], job["runtime_dists"]) == (["llama_cpp"], ["llama-cpp-python"])


def test_the_runner_generates_and_the_host_judges(package, tmp_path):
    """The device side without SSH: remote_runner.run on the job the host sends (no gold answers), its
    result through the host's parser, which judges the raw completions itself."""
    import shutil

    from device_profiles import remote_runner

    problems = _problems(3)
    shutil.copytree(package, tmp_path / "pkg")
    job = remote_job(
        read_package(package), problems, threads=1, timing_question=problems[0].question, repetitions=1, new_tokens=4, strategy=None,
        timeout_s=600, max_new_tokens=16,
    )  # fmt: skip
    result = remote_runner.run(job, tmp_path)
    assert "error" not in result, result
    assert [c["id"] for c in result["completions"]] == [p.id for p in problems]
    assert set(result["completions"][0]) == {"id", "raw"}  # no verdict, no gold: the host's business
    pkg = read_package(package)
    result["environment"]["torch_imported"] = False  # this test process exported the package with torch
    parsed = _parse_result(
        json.dumps(result).encode(), SSHTarget("pi", "10.0.0.5", 22), pkg, problems, "python"
    )
    acc = parsed.accuracy
    assert (
        acc is not None
        and acc.n == 3
        and [p["gold"] for p in acc.predictions] == [p.answer for p in problems]
    )
    assert [p["raw"] for p in acc.predictions] == [c["raw"] for c in result["completions"]]
