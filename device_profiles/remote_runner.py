"""The device side of `edge-distill bench --remote`: run ON the device by `device_profiles/remote.py`.

    PYTHONPATH=<tmp>/code <python> <tmp>/code/device_profiles/remote_runner.py job.json result.json

The device only measures and generates: it gets the questions (never the gold answers) and sends back
each raw completion; the host judges them with its own scorer.

The host copies this file with the rest of the torch-free code (edge_distill, exporters, device_profiles:
the same code as the host's, so the device measures exactly what `edge-distill bench` measures on the
host) and the package into a temp dir it created, then reads result.json back. The device's Python needs
only the third-party device dependencies (`scripts/check_device_install.sh --install-only`).

Stdlib-only until the preflight has found the modules it needs, so a bare Python reports what is missing
as a result (`error.kind == "missing"`) instead of a traceback. Self-bounded: a watchdog kills this process
group (the runtime children included) at the job's deadline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

PROTOCOL = 2
# Modules the runner needs whatever the package (the device dependencies of pyproject); the package's runtime
# modules come in the job (its format row's `runtime_modules`, read on the host: this file stays stdlib-only).
BASE_MODULES = ("pydantic", "yaml", "psutil", "sympy", "tqdm")
MAX_RAW_CHARS = 8000  # per completion sent back: the host bounds what it accepts anyway


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _watchdog(deadline_s: float) -> None:
    """Kill this process group at the deadline: the runtime worker children go with it."""
    try:
        os.setpgid(0, 0)
    except OSError:  # already a group leader (started directly by sshd): the group is ours anyway
        pass

    def fire() -> None:
        sys.stderr.write(f"edge-distill remote runner: deadline {deadline_s:.0f}s reached, stopping\n")
        sys.stderr.flush()
        os.killpg(os.getpgrp(), signal.SIGKILL)

    t = threading.Timer(deadline_s, fire)
    t.daemon = True
    t.start()


def _lifeline(work: Path) -> None:
    """The host keeps our stdin (the SSH channel) open while it waits: EOF means it is gone (killed, lost
    link), so stop rather than measure for nobody until the deadline, and remove the temp dir the host made
    for this run (`work`), which it can no longer clean up."""

    def watch() -> None:
        # the raw fd, not sys.stdin: a daemon thread blocked in a buffered read aborts interpreter exit
        while os.read(0, 4096):
            pass
        sys.stderr.write("edge-distill remote runner: the host closed the connection, stopping\n")
        sys.stderr.flush()
        shutil.rmtree(work, ignore_errors=True)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def _missing(runtime_modules: list[str]) -> list[str]:
    wanted = [*BASE_MODULES, *runtime_modules]
    return [m for m in wanted if m and importlib.util.find_spec(m) is None]


def run(job: dict[str, Any], work: Path) -> dict[str, Any]:
    """The measurements of `device_profiles.bench` for one package, on this machine."""
    package_dir = work / job["package"]
    missing = _missing([str(m) for m in job.get("runtime_modules", [])])
    if missing:
        return {
            "protocol": PROTOCOL,
            "error": {"kind": "missing", "modules": missing, "python": sys.executable},
        }

    from dataclasses import asdict

    from device_profiles.accuracy import generate_completions
    from device_profiles.bandwidth import device_model, host_hardware
    from device_profiles.package import read_package
    from device_profiles.worker import measure
    from edge_distill.errors import EdgeDistillError
    from edge_distill.types import Strategy

    try:
        pkg = read_package(package_dir)  # re-hashed here: what the runtime loads is what the host sent
        threads = job["threads"] if isinstance(job["threads"], int) else max(1, os.cpu_count() or 1)
        hw = host_hardware(threads, refresh=True, cache_file=work / "cache" / "host_hw.json")
        m = measure(
            pkg.runtime, pkg.model_path, threads, pkg.prompt(job["timing_question"]),
            new_tokens=job["new_tokens"], repetitions=job["repetitions"],
        )  # fmt: skip
        questions = job["questions"]
        strategy = Strategy(job["strategy"]) if job.get("strategy") else pkg.strategy
        texts = (
            generate_completions(
                pkg,
                threads,
                [q["question"] for q in questions],
                strategy=strategy,
                max_new_tokens=job.get("max_new_tokens", 320),
            )
            if questions
            else []
        )
    except EdgeDistillError as e:
        return {"protocol": PROTOCOL, "error": {"kind": "bench", "message": str(e)[:4000]}}
    completions = [
        {"id": q["id"], "raw": str(t)[:MAX_RAW_CHARS]} for q, t in zip(questions, texts, strict=True)
    ]
    from importlib import metadata

    versions = {}  # the runtime ran in worker processes: report what is installed
    for dist in job.get("runtime_dists", []):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "protocol": PROTOCOL,
        "measurement": asdict(m),
        "hardware": asdict(hw),
        "completions": completions if questions else None,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "device_model": device_model(),
            "runtime_versions": versions,
            # the device install is torch-free: the host checks this stayed true through the whole bench
            "torch_imported": "torch" in sys.modules,
        },
    }


def main(argv: list[str]) -> int:
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]  # the script dir shadows nothing
    job_file, result_file = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    job = json.loads(job_file.read_text(encoding="utf-8"))
    if job.get("protocol") != PROTOCOL:  # a runner of another version: the host reads this error
        _write(
            result_file,
            {"protocol": PROTOCOL, "error": {"kind": "protocol", "message": str(job.get("protocol"))}},
        )
        return 0
    # Everything this run writes stays in the host's temp dir, which goes as a whole: caches (not the
    # device's ~/.cache) and the temp files of the runtime workers (not /tmp, where a kill would leave them).
    work = job_file.parent
    os.environ["EDGE_DISTILL_CACHE"] = str(work / "cache")
    (work / "tmp").mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(work / "tmp")
    _watchdog(float(job["deadline_s"]))
    if job.get("lifeline"):
        _lifeline(work)
    _write(result_file, run(job, work))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
