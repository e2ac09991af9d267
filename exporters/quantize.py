"""Quantize an f16/f32 GGUF with llama.cpp's own quantizer (llama_model_quantize via llama-cpp-python)."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from exporters.errors import ExportError

logger = logging.getLogger(__name__)

# quant name -> llama_ftype constant name in llama_cpp. f16/f32 are written directly, not quantized.
GGUF_QUANTS: dict[str, str] = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}
GGUF_FLOATS = ("f16", "f32")


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # no wheel on the registry: it compiles (see README)
        raise ExportError(
            "GGUF quantization needs llama-cpp-python (pip install 'edge-distill[llamacpp]'; build it portable, "
            f"see README): {e}"
        ) from e
    return llama_cpp


def quantize_gguf(src: Path, dst: Path, quant: str, *, threads: int | None = None) -> Path:
    """Quantize `src` (f16/f32 GGUF) into `dst` with llama.cpp's k-quant/legacy quantizers."""
    if quant in GGUF_FLOATS:
        raise ExportError(f"{quant} is written by the GGUF writer, not quantized")
    if quant not in GGUF_QUANTS:
        raise ExportError(f"gguf quant {quant!r}: choose one of {list(GGUF_FLOATS) + list(GGUF_QUANTS)}")
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_QUANTS[quant])
    params.nthread = threads or min(4, os.cpu_count() or 1)
    logger.info("quantizing %s -> %s (%s, %d threads)", src, dst, quant, params.nthread)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not Path(dst).is_file():
        raise ExportError(f"llama_model_quantize({src.name} -> {quant}) failed with code {rc}")
    return Path(dst)
