"""llama.cpp's own `convert_hf_to_gguf.py`: the GGUF writer for architectures we do not write ourselves, and the
reference the tests hold our writer to.

It is the converter vendored in the llama-cpp-python sdist that scripts/setup.sh builds the runtime from, so
converter and runtime are the same llama.cpp commit. Setup keeps it (with its own `gguf-py`, newer than the
`gguf` wheel) in the user cache, never in the repository: `~/.cache/edge-distill/llama.cpp-<version>/`
(`EDGE_DISTILL_CACHE` or `XDG_CACHE_HOME` move it; `EDGE_DISTILL_LLAMA_CONVERTER` names the directory).
It runs in a subprocess (its `gguf-py` must not meet the installed `gguf` in this process), offline, eager.

One lookup is widened: the converter names a BPE pre-tokenizer by hashing the ids of a test string and knows
only released tokenizers' hashes; for one it does not know (a tokenizer trained for a test, a new vocabulary)
it falls back to `gguf_writer.detect_pre_tokenizer`, which reads the pre-tokenizer's structure. Known
tokenizers (SmolLM2, Qwen, Llama-3, Gemma 3) still get the converter's own answer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

from exporters.errors import ExportError

logger = logging.getLogger(__name__)

# argv: converter dir, fallback pre-tokenizer name ("" = none), then convert_hf_to_gguf.py's own arguments.
_DRIVER = """
import runpy, sys
conv, pre = sys.argv[1], sys.argv[2]
sys.path[:0] = [conv, conv + "/gguf-py"]
from conversion.base import TextModel
known = TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        if not pre:
            raise
        return pre
TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [conv + "/convert_hf_to_gguf.py", *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def converter_dir() -> Path:
    """Where setup unpacked the converter matching the installed llama-cpp-python; a clear error if absent."""
    env = os.environ.get("EDGE_DISTILL_LLAMA_CONVERTER")
    if env:
        d = Path(env)
    else:
        try:
            version = importlib.metadata.version("llama_cpp_python")
        except importlib.metadata.PackageNotFoundError as e:
            raise ExportError("GGUF export needs llama-cpp-python: run scripts/setup.sh") from e
        cache = os.environ.get("EDGE_DISTILL_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "edge-distill"
        )
        d = Path(cache) / f"llama.cpp-{version}"
    if not (d / "convert_hf_to_gguf.py").is_file() or not (d / "gguf-py" / "gguf").is_dir():
        raise ExportError(
            f"llama.cpp's converter is not at {d} (convert_hf_to_gguf.py + gguf-py): run scripts/setup.sh, which "
            "unpacks it from the llama-cpp-python sdist, or set EDGE_DISTILL_LLAMA_CONVERTER to such a directory"
        )
    return d


def convert(
    model_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    name: str | None = None,
    fallback_pre: str | None = None,
    timeout_s: float = 1800,
) -> Path:
    """`convert_hf_to_gguf.py model_dir --outfile out_path --outtype outtype [--model-name name]`."""
    conv = converter_dir()
    cmd = [sys.executable, "-c", _DRIVER, str(conv), fallback_pre or "", str(model_dir),
           "--outfile", str(out_path), "--outtype", outtype]  # fmt: skip
    if name:
        cmd += ["--model-name", name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py
    logger.info("llama.cpp converter: %s -> %s (%s)", model_dir, out_path, outtype)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ExportError(f"llama.cpp's convert_hf_to_gguf.py timed out after {timeout_s:.0f}s") from e
    if proc.returncode != 0 or not Path(out_path).is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"llama.cpp's convert_hf_to_gguf.py failed for {model_dir}:\n{tail}")
    logger.debug("converter log:\n%s", proc.stderr[-4000:])
    return Path(out_path)
