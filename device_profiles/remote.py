"""`edge-distill bench PACKAGE --remote ssh://user@host[:port]`: measure on the device itself, over SSH.

The host verifies the package, then in three SSH connections: (1) makes a temp dir on the device and
unpacks a tar stream into it: the package, the job, and the torch-free code (`edge_distill`, `exporters`,
`device_profiles` as .py files: the device runs the host's own measurement code, never a stale copy);
(2) runs `remote_runner.py` there with the device's Python (default the venv that
`scripts/check_device_install.sh --install-only` makes) and reads result.json back on stdout; (3) removes
the temp dir it made. The rows come back *measured* ("measured on user@host:port"), gated against the
profile's budget like any bench row.

Why the system OpenSSH client (subprocess) and not paramiko/asyncssh: it is what the user already set up
and tested for this device — ~/.ssh/config (ProxyJump, ports, IdentityFile), the agent, known_hosts,
hardware keys — and needs no new Python dependency on the host or the device. BatchMode=yes (never a
prompt that would hang), StrictHostKeyChecking=yes (an unknown or changed host key is refused, never
learned silently; `--known-hosts FILE` names the file to check against).

The device is untrusted: every remote step has a time limit and a byte limit on what it may print, the
result is validated (pydantic: types, finite numbers, lengths, the problem ids we sent) and only data is
taken from it — nothing the device returns is executed or used as a path. The device gets the questions,
never the gold answers, and sends back each raw completion: the host judges them with its own scorer
(`edge_distill.scoring`, PoT through the host's sandbox), so a device cannot claim a verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_profiles import gate
from device_profiles.accuracy import AccuracyResult, load_eval_problems, score, source_on
from device_profiles.bandwidth import HostHardware
from device_profiles.estimate import figures_for
from device_profiles.loader import DeviceProfile, load_profile
from device_profiles.package import Package, read_package
from device_profiles.remote_bundle import _bundle_bytes, _write_bundle, remote_job
from device_profiles.remote_runner import PROTOCOL
from device_profiles.report import BenchReport, write_outputs
from device_profiles.worker import RuntimeMeasurement
from edge_distill.errors import EdgeDistillError, printable
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Strategy

log = logging.getLogger(__name__)

# What `scripts/check_device_install.sh --install-only` makes on the device (DEVICE_VENV's default).
DEFAULT_REMOTE_PYTHON = "~/.local/share/edge-distill/device-venv/bin/python"
INSTALL_HINT = (
    "install the device side there: copy the repository and run `scripts/check_device_install.sh "
    "--install-only` (a torch-free venv at ~/.local/share/edge-distill/device-venv), or pass --remote-python"
)
MAX_RESULT_BYTES = 8 * 2**20  # 50 problems x 320 tokens of completions are ~100 KB
MAX_STDERR_BYTES = 64 * 2**10
TEMP_PREFIX = "edge-distill-remote-"
_TEMP_DIR_RE = re.compile(rf"^/[A-Za-z0-9._/-]*/{TEMP_PREFIX}[A-Za-z0-9]{{8}}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")  # names, IPv4, IPv6 (brackets removed by urlsplit)
EXIT_NO_PYTHON, EXIT_UNPACK = 97, 98


class RemoteError(EdgeDistillError):
    """The remote bench failed: connection, device install, or what the device sent back."""


class RemoteAuthError(RemoteError):
    """The device refused our key."""


class RemoteUnreachable(RemoteError):
    """No SSH connection to the device (or its host key is not the known one)."""


class RemoteRuntimeMissing(RemoteError):
    """The device's Python or a runtime module the package needs is missing there."""


@dataclass(frozen=True)
class SSHTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, url: str) -> SSHTarget:
        """`ssh://user@host[:port]`; anything else (options, paths, a missing user) is refused."""
        parts = urlsplit(url)
        what = f"--remote {url!r}"
        if parts.scheme != "ssh" or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise RemoteError(f"{what}: expected ssh://user@host[:port]")
        try:
            port = parts.port or 22
        except ValueError:
            raise RemoteError(f"{what}: the port must be a number 1-65535") from None
        user, host = parts.username or "", parts.hostname or ""
        if parts.password is not None:
            raise RemoteError(f"{what}: no password in the URL; key authentication only (--identity KEY)")
        if not _USER_RE.match(user):
            raise RemoteError(f"{what}: give the user name: ssh://user@host[:port]")
        if not _HOST_RE.match(host) or host.startswith("-"):
            raise RemoteError(f"{what}: {host!r} is not a host name or address")
        return cls(user, host, port)

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class SSH:
    """The OpenSSH client, non-interactive, with bounded output and time."""

    target: SSHTarget
    identity: Path | None = None
    known_hosts: Path | None = None
    connect_timeout_s: int = 15

    def argv(self, remote_command: str) -> list[str]:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise RemoteError(
                "--remote needs the OpenSSH client `ssh` on this machine (apt-get install openssh-client)"
            )
        opts = [
            "BatchMode=yes", "StrictHostKeyChecking=yes", f"ConnectTimeout={self.connect_timeout_s}",
            "ServerAliveInterval=15", "ServerAliveCountMax=4", "LogLevel=ERROR", "RequestTTY=no",
        ]  # fmt: skip
        if self.identity is not None:
            opts += [f"IdentityFile={self.identity}", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            opts += [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null"]
        args = [ssh, "-p", str(self.target.port), "-l", self.target.user]
        for o in opts:
            args += ["-o", o]
        # the remote command runs under POSIX sh whatever the user's login shell is
        return [*args, "--", self.target.host, "sh -c " + shlex.quote(remote_command)]

    def run(
        self,
        remote_command: str,
        *,
        timeout_s: float,
        max_stdout: int,
        stdin_writer: Callable[[IO[bytes]], None] | None = None,
        step: str,
    ) -> tuple[int, bytes, str]:
        """Run `remote_command`; (exit code, stdout, stderr text). Killed past `timeout_s` (uploading
        included) or `max_stdout`. Without a `stdin_writer` stdin stays open until the command ends: the
        remote runner takes its EOF as "the host is gone" and stops (see remote_runner.py)."""
        proc = subprocess.Popen(
            self.argv(remote_command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin is not None
        out, err = _Bounded(proc.stdout, max_stdout, proc), _Bounded(proc.stderr, MAX_STDERR_BYTES, None)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, expire)
        for t in (out, err, timer):
            t.start()
        try:
            if stdin_writer is not None:
                try:
                    stdin_writer(proc.stdin)
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the remote side ended early (or we killed it): exit code and stderr say why
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            for reader in (out, err):
                reader.join(timeout=10)
            try:
                proc.stdin.close()
            except OSError:
                pass
        if timed_out.is_set():
            raise RemoteError(
                f"{self.target.label}: {step} gave no result within {timeout_s:.0f}s (stopped); a slow device "
                "or link: raise --remote-timeout, or lower --accuracy-limit/--repetitions"
            )
        if out.overflow:
            raise RemoteError(
                f"{self.target.label}: {step} sent more than {max_stdout} bytes; refused (not an edge-distill "
                "runner answer)"
            )
        return proc.returncode, out.data(), err.data().decode("utf-8", errors="replace")


class _Bounded(threading.Thread):
    """Reads a pipe to EOF keeping at most `limit` bytes; past it, kills `proc` (if given)."""

    def __init__(self, pipe: IO[bytes] | None, limit: int, proc: subprocess.Popen[bytes] | None):
        super().__init__(daemon=True)
        self.pipe, self.limit, self.proc = pipe, limit, proc
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False

    def run(self) -> None:
        assert self.pipe is not None
        while chunk := self.pipe.read(65536):
            if self.size + len(chunk) > self.limit:
                self.overflow = True
                if self.proc is not None:
                    self.proc.kill()
                    return
                continue  # stderr: keep the first part, drain the rest
            self.chunks.append(chunk)
            self.size += len(chunk)

    def data(self) -> bytes:
        return b"".join(self.chunks)


def _printable(text: str, limit: int = 3000) -> str:
    """Device text shown to the user (errors.printable: no terminal escapes), its last `limit` chars."""
    return printable(text.strip(), limit, keep_end=True)


def _ssh_failure(target: SSHTarget, stderr: str, identity: Path | None) -> RemoteError:
    """Exit 255 from ssh: the connection or authentication, named with what to do."""
    msg = _printable(stderr, 600)
    low = stderr.lower()
    if "permission denied" in low or "too many authentication failures" in low:
        key = (
            f"--identity {identity}" if identity else "your ssh agent / ~/.ssh/id_* (or pass --identity KEY)"
        )
        return RemoteAuthError(
            f"{target.label} refused the key ({msg}): check that {key} is the private half of a public key in "
            f"~{target.user}/.ssh/authorized_keys on the device"
        )
    if "identification has changed" in low or "host key for" in low and "has changed" in low:
        return RemoteUnreachable(
            f"{target.label}: the host key CHANGED since it was recorded in known_hosts — a reinstalled device, "
            "or someone in between. Refused. Check the device's fingerprint on the device itself (ssh-keygen "
            f"-lf /etc/ssh/ssh_host_ed25519_key.pub); if it matches, replace the old entry: ssh-keygen -R "
            f"'[{target.host}]:{target.port}' then ssh-keyscan -p {target.port} {target.host} >> ~/.ssh/known_hosts"
        )
    if "host key" in low:
        return RemoteUnreachable(
            f"{target.label}: its host key is not in known_hosts, strict checking refuses it ({msg}). "
            "Check the device's fingerprint "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on it), then add it: ssh-keyscan -p "
            f"{target.port} {target.host} >> ~/.ssh/known_hosts — or pass --known-hosts FILE"
        )
    return RemoteUnreachable(
        f"cannot reach {target.label} ({msg or 'ssh exited 255'}): is the device on and sshd running, the "
        "host and port right, and `ssh -p PORT user@host true` working from this machine?"
    )


def _remote_python_expr(path: str) -> str:
    """A shell word for the device's Python; a leading ~/ expands to the remote $HOME."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


# --------------------------------------------------------------------------- what the device sends back


class _Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a verdict ("correct", "pred") is not the device's to give
    id: Annotated[str, Field(max_length=500)]
    raw: Annotated[str, Field(max_length=20000)]


class _Environment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    python: Annotated[str, Field(max_length=100)]
    platform: Annotated[str, Field(max_length=500)]
    machine: Annotated[str, Field(max_length=100)]
    device_model: Annotated[str, Field(max_length=500)]
    runtime_versions: dict[Annotated[str, Field(max_length=50)], Annotated[str, Field(max_length=100)]]
    torch_imported: bool


class _Error(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Annotated[str, Field(pattern=r"^[a-z_]{1,20}$")]
    message: Annotated[str, Field(max_length=5000)] = ""
    modules: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,64}$")]] = Field(default=[], max_length=20)
    python: Annotated[str, Field(max_length=4096)] = ""


class _Result(BaseModel):
    # The host's own records (dataclasses) validate the device's numbers: the fields follow the code, and
    # this config (no inf/nan, bounded strings) applies to them too.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=20000)
    protocol: int
    error: _Error | None = None
    measurement: RuntimeMeasurement | None = None
    hardware: HostHardware | None = None
    completions: list[_Completion] | None = Field(default=None, max_length=100_000)
    environment: _Environment | None = None


@dataclass(frozen=True)
class RemoteResult:
    measurement: RuntimeMeasurement
    hardware: HostHardware
    accuracy: AccuracyResult | None
    environment: dict[str, Any]


def _parse_result(
    raw: bytes,
    target: SSHTarget,
    pkg: Package,
    problems: list[Problem],
    python: str,
    source: tuple[float | None, int | None] = (None, None),
    strategy: Strategy | None = None,
    judging: Judging = DEFAULT_JUDGING,
) -> RemoteResult:
    """Validate the runner's result and judge its completions here (`strategy` None: the package's)."""
    where = f"{target.label} (result of the remote runner)"
    try:
        r = _Result.model_validate_json(raw)
    except ValidationError as e:
        raise RemoteError(f"{where}: not a valid runner result ({_printable(str(e), 800)})") from None
    if r.protocol != PROTOCOL:
        raise RemoteError(f"{where}: protocol {r.protocol}, expected {PROTOCOL}")
    if r.error is not None:
        if r.error.kind == "missing":
            raise RemoteRuntimeMissing(
                f"{target.label}: {python} lacks {', '.join(r.error.modules)} (needed for a {pkg.format} package): "
                + INSTALL_HINT
            )
        raise RemoteError(f"{target.label}: the bench failed on the device: {_printable(r.error.message)}")
    m, hw = r.measurement, r.hardware
    if m is None or hw is None or r.environment is None:
        raise RemoteError(f"{where}: measurement, hardware or environment missing")
    speeds = (m.decode_tok_s.median, m.prefill_tok_s.median, m.ttft_s.median, m.peak_rss_mb, hw.bandwidth_gbs)
    if min(speeds) <= 0 or m.runtime != pkg.runtime:
        raise RemoteError(f"{where}: implausible measurement (runtime {m.runtime!r}, speeds/RSS {speeds})")
    if r.environment.torch_imported:
        raise RemoteError(
            f"{target.label}: torch was imported on the device; the device install must be torch-free"
        )
    acc = None
    if problems:
        completions = r.completions or []
        if [c.id for c in completions] != [p.id for p in problems]:
            raise RemoteError(
                f"{where}: the completions are not for the {len(problems)} problems sent (ids differ)"
            )
        # judged here, as the source run judged: its tolerance and sandbox mode
        acc = score(
            [c.raw for c in completions],
            problems,
            strategy=strategy or pkg.strategy,
            source_accuracy=source,
            judging=judging,
        )
    # What the device measured is the package's model; its temp path there is gone after this call.
    m = dataclasses.replace(m, model_path=str(pkg.model_path))
    return RemoteResult(m, hw, acc, {**r.environment.model_dump(), "python_path": python})


# --------------------------------------------------------------------------- the three steps
def run_remote(
    pkg: Package,
    threads: int | str,
    *,
    target: SSHTarget,
    ssh: SSH,
    remote_python: str,
    problems: list[Problem],
    timing_question: str,
    repetitions: int,
    new_tokens: int,
    strategy: Strategy | None,
    timeout_s: float,
    max_new_tokens: int = 320,
    source: tuple[float | None, int | None] = (None, None),
    judging: Judging = DEFAULT_JUDGING,
) -> RemoteResult:
    """Copy `pkg` + the runner to the device, measure there, read the result back, clean up."""
    py = _remote_python_expr(remote_python)
    job = remote_job(
        pkg, problems, threads=threads, timing_question=timing_question, repetitions=repetitions,
        new_tokens=new_tokens, strategy=strategy, timeout_s=timeout_s, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    # (1) a temp dir of our own, the bundle unpacked into it
    setup = (
        f'py={py}; if ! command -v "$py" >/dev/null 2>&1; then exit {EXIT_NO_PYTHON}; fi; '
        f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/{TEMP_PREFIX}XXXXXXXX") || exit 1; echo "$d"; '
        f'tar -xf - -C "$d" || exit {EXIT_UNPACK}'
    )
    upload_timeout = 120 + _bundle_bytes(pkg) / 2**20  # at least 1 MiB/s
    log.info("copying %s (%.1f MiB) and the runner to %s", pkg.name, _bundle_bytes(pkg) / 2**20, target.label)
    rc, out, err = ssh.run(
        setup, timeout_s=upload_timeout, max_stdout=4096, step="copying the package",
        stdin_writer=lambda s: _write_bundle(s, pkg, job),
    )  # fmt: skip
    remote_dir = out.decode("utf-8", errors="replace").strip()
    created = bool(_TEMP_DIR_RE.match(remote_dir))
    try:
        if rc == 255:
            raise _ssh_failure(target, err, ssh.identity)
        if rc == EXIT_NO_PYTHON:
            raise RemoteRuntimeMissing(f"{target.label}: no Python at {remote_python}: " + INSTALL_HINT)
        if rc != 0 or not created:
            raise RemoteError(
                f"{target.label}: could not unpack the package into a temp dir (exit {rc}): {_printable(err, 600)}"
                " — is there space in $TMPDIR (/tmp) and a `tar` on the device?"
            )
        # (2) the runner; its log stays on the device unless it fails
        d = shlex.quote(remote_dir)
        command = (
            f'py={py}; cd {d} && PYTHONPATH={d}/code PYTHONDONTWRITEBYTECODE=1 "$py" '
            f"code/device_profiles/remote_runner.py job.json result.json > runner.log 2>&1; rc=$?; "
            f'if [ "$rc" -eq 0 ]; then cat result.json; else tail -c 6000 runner.log >&2; fi; exit "$rc"'
        )
        log.info("measuring %s on %s with %s", pkg.name, target.label, remote_python)
        rc, out, err = ssh.run(command, timeout_s=timeout_s, max_stdout=MAX_RESULT_BYTES, step="the bench")
        if rc == 255:
            raise _ssh_failure(target, err, ssh.identity)
        if rc != 0:
            raise RemoteError(
                f"{target.label}: the remote runner failed (exit {rc}); its log ends:\n{_printable(err)}"
            )
        return _parse_result(out, target, pkg, problems, remote_python, source, strategy, judging)
    finally:
        # (3) only the dir we made: its name is checked against the mktemp pattern we gave
        if created:
            try:
                rc, _, err = ssh.run(
                    f"rm -rf -- {shlex.quote(remote_dir)}", timeout_s=120, max_stdout=4096, step="cleaning up"
                )
            except RemoteError as e:  # never hide the error that brought us here
                rc, err = -1, str(e)
            if rc != 0:
                log.warning("%s: could not remove %s (%s)", target.label, remote_dir, _printable(err, 300))


def _not_this_device(profile: DeviceProfile, env: dict[str, Any]) -> str:
    """Why the device's reported machine/model does not match the profile's detect rule ("" if it does, or
    if the profile has no rule). The numbers stay measured — on the device that was reached."""
    d = profile.detect
    if profile.is_host or d is None:
        return ""
    why = []
    machine = str(env.get("machine", "")).lower()
    if d.machine and machine not in (d.machine.lower(), d.machine.lower().replace("aarch64", "arm64")):
        why.append(f"machine {machine or '?'} is not {d.machine}")
    if d.model_contains and d.model_contains.lower() not in str(env.get("device_model", "")).lower():
        why.append(f"model {env.get('device_model') or '?'!r} lacks {d.model_contains!r}")
    return ", ".join(why)


def _report(pkg: Package, profile: DeviceProfile, res: RemoteResult, acc: AccuracyResult | None,
            target: SSHTarget) -> BenchReport:  # fmt: skip
    """One bench row from a remote measurement, gated against the profile's budget; its note says where and
    whether the device is the profile's by its detect rule."""
    fig = figures_for(
        profile, res.measurement, res.hardware, package_bytes=pkg.size_bytes,
        weight_bytes=pkg.weights_bytes, on_target=True,
    )  # fmt: skip
    note = (
        f"measured on {target.label} ({res.hardware.cpu}, {res.environment['machine']}, "
        f"{res.measurement.threads} threads, median of {res.measurement.repetitions})"
    )
    mismatch = _not_this_device(profile, res.environment)
    if mismatch:
        log.warning("%s is not a %s: %s", target.label, profile.name, mismatch)
        note += f"; the device is NOT a {profile.name} by the profile's detect rule ({mismatch})"
    fig = dataclasses.replace(fig, note=note)
    report = BenchReport(
        str(pkg.path), pkg.name, pkg.format, str(pkg.manifest.get("quant", "")), profile.name,
        profile.source_file, profile.format, profile.budget, pkg.weights_bytes, res.measurement,
        res.hardware, fig, acc, gate.evaluate(profile.budget, fig, acc),
    )  # fmt: skip
    log.info("%s on %s via %s: %s", pkg.name, profile.name, target.label, "pass" if report.passed else "FAIL")
    return report


def _write_remote(out: Path, reports: list[BenchReport], accuracy: dict[str, AccuracyResult | None],
                  results: dict[tuple[str, str], RemoteResult], target: SSHTarget) -> None:  # fmt: skip
    """bench.{md,json,png}, each package's predictions and remote.json (the device's environment per run)."""
    from edge_distill.io import write_json, write_jsonl

    write_outputs(reports, out)
    for pkg_path, acc in accuracy.items():
        if acc is not None:
            write_jsonl(out / f"{Path(pkg_path).name}.predictions.jsonl", acc.predictions)
    runs = [
        {"package": Path(p).name, "threads": t, "environment": r.environment} for (p, t), r in results.items()
    ]
    write_json(out / "remote.json", {"target": target.label, "runs": runs})


def _ssh(remote: str, identity: str | Path | None, known_hosts: str | Path | None) -> SSH:
    """The SSH client for `remote`, its key files checked to exist."""
    target = SSHTarget.parse(remote)
    for name, f in (("--identity", identity), ("--known-hosts", known_hosts)):
        if f is not None and not Path(f).is_file():
            raise RemoteError(f"{name} {f}: no such file")
    return SSH(
        target,
        Path(identity).resolve() if identity else None,
        Path(known_hosts).resolve() if known_hosts else None,
    )


def bench_remote(
    package_dirs: list[str | Path],
    profiles: list[str | Path | DeviceProfile],
    remote: str,
    *,
    identity: str | Path | None = None,
    known_hosts: str | Path | None = None,
    remote_python: str = DEFAULT_REMOTE_PYTHON,
    accuracy_limit: int = 50,
    problems: str | Path | list[Problem] | None = None,
    repetitions: int = 3,
    new_tokens: int = 64,
    out_dir: str | Path | None = None,
    strategy: Strategy | None = None,
    source_correct: Mapping[str, bool] | None = None,
    accuracy_max_new_tokens: int = 320,
    extra_profile_dirs: tuple[str | Path, ...] = (),
    public_key: str | Path | None = None,
    timeout_s: float = 3600,
    judging: Judging = DEFAULT_JUDGING,
) -> list[BenchReport]:
    """`bench_packages`, measured on the SSH device `remote` (ssh://user@host[:port]) for every profile.

    One remote run per (package, profile threads); the rows are `measured` with "measured on
    user@host:port" in their note. Writes bench.{md,json,png}, predictions and remote.json into `out_dir`.
    Raises RemoteError subclasses naming what to do (auth, unreachable, missing runtime, bad result)."""
    ssh = _ssh(remote, identity, known_hosts)
    target = ssh.target
    loaded = [p if isinstance(p, DeviceProfile) else load_profile(p, extra_profile_dirs) for p in profiles]
    pkgs = [read_package(d, public_key=public_key) for d in package_dirs]  # refuse before any connection
    if isinstance(problems, list):
        eval_problems = problems[:accuracy_limit]
    else:
        eval_problems = load_eval_problems(problems, limit=accuracy_limit) if accuracy_limit > 0 else []
    timing_question = (eval_problems or load_eval_problems(None, limit=1))[0].question
    results: dict[tuple[str, str], RemoteResult] = {}
    accuracy: dict[str, AccuracyResult | None] = {}  # once per package, like the local bench
    reports = []
    for pkg in pkgs:
        for profile in loaded:
            # the profile's threads; 'auto' without a core count resolves on the device (its cores)
            cores = profile.hardware.cores
            threads = profile.resolved_threads() if isinstance(cores, int) else profile.threads
            key = (str(pkg.path), str(threads))
            if key not in results:
                results[key] = run_remote(
                    pkg, threads, target=target, ssh=ssh, remote_python=remote_python,
                    problems=[] if str(pkg.path) in accuracy else eval_problems, timing_question=timing_question,
                    repetitions=repetitions, new_tokens=new_tokens, strategy=strategy, timeout_s=timeout_s,
                    max_new_tokens=accuracy_max_new_tokens, source=source_on(eval_problems, source_correct),
                    judging=judging,
                )  # fmt: skip
                accuracy.setdefault(str(pkg.path), results[key].accuracy)
            reports.append(_report(pkg, profile, results[key], accuracy[str(pkg.path)], target))
    if out_dir is not None:
        _write_remote(Path(out_dir), reports, accuracy, results, target)
    return reports
