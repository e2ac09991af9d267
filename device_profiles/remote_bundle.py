"""What travels to an SSH device for `bench --remote`: job.json (questions and their ids only: gold answers
stay on the host, which judges the completions) and a tar stream of the torch-free code plus the package."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import IO, Any

from device_profiles.package import Package
from device_profiles.remote_runner import PROTOCOL
from edge_distill.types import Problem, Strategy
from exporters.formats import get_format

CODE_PACKAGES = ("edge_distill", "exporters", "device_profiles")


def _add_tree(tar: tarfile.TarFile, root: Path, arcname: str, suffixes: tuple[str, ...] | None) -> None:
    """Regular files under `root` (no symlinks, no caches), sorted, into `arcname/`."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or "__pycache__" in path.parts:
            continue
        if suffixes is not None and not path.name.endswith(suffixes):
            continue
        tar.add(path, f"{arcname}/{path.relative_to(root).as_posix()}", recursive=False)


def _write_bundle(stream: IO[bytes], pkg: Package, job: dict[str, Any]) -> None:
    src = Path(__file__).resolve().parents[1]
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        data = json.dumps(job).encode()
        info = tarfile.TarInfo("job.json")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for name in CODE_PACKAGES:
            _add_tree(tar, src / name, f"code/{name}", (".py", ".yaml"))
        _add_tree(tar, pkg.path, "pkg", None)


def _bundle_bytes(pkg: Package) -> int:
    return sum(p.stat().st_size for p in pkg.path.rglob("*") if p.is_file() and not p.is_symlink())


def remote_job(
    pkg: Package, problems: list[Problem], *, threads: int | str, timing_question: str, repetitions: int,
    new_tokens: int, strategy: Strategy | None, timeout_s: float, max_new_tokens: int,
) -> dict[str, Any]:  # fmt: skip
    """What the device gets (job.json): the questions and their ids only — gold answers stay here — and what
    the package's format row says its runtime needs (checked there before anything is imported)."""
    fmt = get_format(pkg.format)
    return {
        "runtime_modules": list(fmt.runtime_modules), "runtime_dists": list(fmt.runtime_dists),
        "protocol": PROTOCOL, "package": "pkg", "threads": threads, "timing_question": timing_question,
        "new_tokens": new_tokens, "repetitions": repetitions, "strategy": strategy.value if strategy else None,
        "questions": [{"id": p.id, "question": p.question} for p in problems],
        "deadline_s": max(60.0, timeout_s - 30), "lifeline": True, "max_new_tokens": max_new_tokens,
    }  # fmt: skip
