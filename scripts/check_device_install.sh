#!/usr/bin/env bash
# The device install, checked: a fresh venv with edge-distill (--no-deps) + ONLY the device dependencies
# (pyproject `dependencies` + the [device] extra + llama-cpp-python), no torch, no training stack; then
# `edge-distill profiles` and a bench of a GGUF package on the host profile. Prints the time each step took.
#
#   scripts/check_device_install.sh [GGUF_PACKAGE_DIR]
#
# Without a package it exports the tiny test model with the dev venv ($DEV_PYTHON, needs torch), because
# the device venv cannot export. llama-cpp-python has no registry wheel: the cached portable wheel from
# scripts/setup.sh is used ($LLAMA_WHEEL or ~/.cache/edge-distill/wheels), as on a board you would build it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV_PYTHON=${DEV_PYTHON:-.venv/bin/python}
WORK=${WORK:-$(mktemp -d -t edge-distill-device-XXXXXX)}
VENV="$WORK/venv"
PKG=${1:-}
log() { echo "[device-install $(date +%H:%M:%S)] $*" >&2; }
t_all=$SECONDS

if [ -z "$PKG" ]; then
  t=$SECONDS
  PKG="$WORK/gguf-q4_k_m"
  "$DEV_PYTHON" - "$WORK" <<'PY'
import sys
from pathlib import Path
from tests.tiny_models import build_tiny_llama
from exporters.api import export_model
work = Path(sys.argv[1])
export_model(build_tiny_llama(work / "tiny", vocab_size=384), work / "gguf-q4_k_m", "gguf", "q4_k_m",
             source_accuracy={"dev": 0.0, "n": 10}, parity_prompts=1, check_transformers=False)
PY
  log "exported a tiny GGUF package with the dev venv in $((SECONDS - t))s: $PKG"
fi

t=$SECONDS
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# One requirement per line: a requirement may carry an environment marker with spaces
# ("httpx2>=2.16; python_version >= '3.11'"), which word-splitting would break.
DEPS_FILE="$VENV/device-requirements.txt"
python3 - "$DEPS_FILE" <<'PY'
import sys, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
open(sys.argv[1], "w").write("\n".join(p["dependencies"] + p["optional-dependencies"]["device"]) + "\n")
PY
log "device dependencies: $(tr '\n' ' ' < "$DEPS_FILE")"
"$VENV/bin/pip" install -q -r "$DEPS_FILE"
"$VENV/bin/pip" install -q --no-deps -e .
LLAMA_WHEEL=${LLAMA_WHEEL:-$(ls ~/.cache/edge-distill/wheels/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)}
if [ -n "$LLAMA_WHEEL" ]; then
  "$VENV/bin/pip" install -q --no-deps "$LLAMA_WHEEL"
  "$VENV/bin/pip" install -q diskcache jinja2 numpy typing-extensions   # llama-cpp-python's own deps
else
  log "no cached llama-cpp-python wheel: building it (pip install 'edge-distill[llamacpp]'; ~10 min on 2 cores)"
  "$VENV/bin/pip" install -q "llama-cpp-python>=0.3.16"
fi
log "device venv installed in $((SECONDS - t))s ($(du -sh "$VENV" | cut -f1))"

"$VENV/bin/python" - <<'PY'
import importlib.util, sys
present = [m for m in ("torch", "transformers", "peft", "accelerate") if importlib.util.find_spec(m)]
sys.exit(f"training dependencies leaked into the device venv: {present}" if present else 0)
PY

t=$SECONDS
if "$VENV/bin/edge-distill" profiles --help >/dev/null 2>&1; then
  "$VENV/bin/edge-distill" profiles
else  # CLI command not wired yet: the library call it wraps
  log "edge-distill has no 'profiles' command yet; calling the library"
  "$VENV/bin/python" -c "from device_profiles import list_profiles; from device_profiles.loader import profile_summary; [print(profile_summary(p)) for p in list_profiles()]"
fi
log "profiles listed in $((SECONDS - t))s"

t=$SECONDS
OUT="$WORK/bench"
if "$VENV/bin/edge-distill" bench --help >/dev/null 2>&1; then
  "$VENV/bin/edge-distill" bench "$PKG" --profile host --out "$OUT" --accuracy-limit 5 --repetitions 2 || rc=$?
else
  log "edge-distill has no 'bench' command yet; calling the library"
  "$VENV/bin/python" - "$PKG" "$OUT" <<'PY' || rc=$?
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from device_profiles import bench_package
r = bench_package(sys.argv[1], "host", accuracy_limit=5, repetitions=2, out_dir=sys.argv[2])
assert "torch" not in sys.modules, "torch was imported by the bench"
sys.exit(0 if r.passed else 3)
PY
fi
test -s "$OUT/bench.json" && test -s "$OUT/bench.png"
log "bench finished in $((SECONDS - t))s (exit ${rc:-0}; 3 = a budget gate failed); report: $OUT/bench.md"
log "total $((SECONDS - t_all))s; work dir $WORK"
