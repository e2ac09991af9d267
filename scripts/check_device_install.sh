#!/usr/bin/env bash
# The device install, checked: a fresh venv with edge-distill (--no-deps) + ONLY the device dependencies
# (pyproject `dependencies` + the [device] extra + llama-cpp-python), no torch, no training stack; then
# `edge-distill profiles` and a bench of a GGUF package on the host profile. Prints the time each step took.
#
#   scripts/check_device_install.sh [GGUF_PACKAGE_DIR]
#   scripts/check_device_install.sh --install-only     # on the device, for `edge-distill bench --remote`
#
# --install-only: install (or update) the device venv at $DEVICE_VENV, default
# ~/.local/share/edge-distill/device-venv (the Python `bench --remote` uses by default), check it is
# torch-free, skip the export and bench. Re-running with the same requirements is a no-op (a stamp file).
# DEVICE_PYTHON (default python3) makes the venv; DEVICE_VENV also keeps the venv of a full check.
#
# Without a package it exports the tiny test model with the dev venv ($DEV_PYTHON, needs torch), because
# the device venv cannot export. llama-cpp-python has no registry wheel: the cached portable wheel from
# scripts/setup.sh is used ($LLAMA_WHEEL or ~/.cache/edge-distill/wheels), as on a board you would build it.
set -euo pipefail
cd "$(dirname "$0")/.."
INSTALL_ONLY=0
if [ "${1:-}" = "--install-only" ]; then
  INSTALL_ONLY=1
  shift
  DEVICE_VENV=${DEVICE_VENV:-$HOME/.local/share/edge-distill/device-venv}
fi
DEV_PYTHON=${DEV_PYTHON:-.venv/bin/python}
DEVICE_PYTHON=${DEVICE_PYTHON:-python3}
WORK=${WORK:-$(mktemp -d -t edge-distill-device-XXXXXX)}
VENV=${DEVICE_VENV:-$WORK/venv}
PKG=${1:-}
log() { echo "[device-install $(date +%H:%M:%S)] $*" >&2; }
t_all=$SECONDS

if [ -z "$PKG" ] && [ "$INSTALL_ONLY" = 0 ]; then
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
# One requirement per line: a requirement may carry an environment marker with spaces
# ("httpx2>=2.16; python_version >= '3.11'"), which word-splitting would break.
DEPS=$("$DEVICE_PYTHON" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["device"]))
PY
)
LLAMA_WHEEL=${LLAMA_WHEEL:-$(ls ~/.cache/edge-distill/wheels/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)}
STAMP="$DEPS|$(basename "${LLAMA_WHEEL:-llama-cpp-python>=0.3.16}")|$("$DEVICE_PYTHON" --version 2>&1)"
if [ -f "$VENV/.edge-distill-device" ] && [ "$(cat "$VENV/.edge-distill-device")" = "$STAMP" ]; then
  log "device venv $VENV already installed with these requirements"
else
  rm -f "$VENV/.edge-distill-device"
  "$DEVICE_PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  DEPS_FILE="$VENV/device-requirements.txt"
  printf '%s\n' "$DEPS" > "$DEPS_FILE"
  log "device dependencies: $(tr '\n' ' ' < "$DEPS_FILE")"
  "$VENV/bin/pip" install -q -r "$DEPS_FILE"
  "$VENV/bin/pip" install -q --no-deps -e .
  if [ -n "$LLAMA_WHEEL" ]; then
    "$VENV/bin/pip" install -q --no-deps "$LLAMA_WHEEL"
    "$VENV/bin/pip" install -q diskcache jinja2 numpy typing-extensions   # llama-cpp-python's own deps
  else
    log "no cached llama-cpp-python wheel: building it (pip install 'edge-distill[llamacpp]'; ~10 min on 2 cores)"
    "$VENV/bin/pip" install -q "llama-cpp-python>=0.3.16"
  fi
  printf '%s' "$STAMP" > "$VENV/.edge-distill-device"
fi
log "device venv $VENV ready in $((SECONDS - t))s ($(du -sh "$VENV" | cut -f1))"

"$VENV/bin/python" - <<'PY'
import importlib.util, sys
present = [m for m in ("torch", "transformers", "peft", "accelerate") if importlib.util.find_spec(m)]
sys.exit(f"training dependencies leaked into the device venv: {present}" if present else 0)
PY
if [ "$INSTALL_ONLY" = 1 ]; then
  log "installed: use --remote-python $VENV/bin/python with edge-distill bench --remote (its default)"
  exit 0
fi

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
