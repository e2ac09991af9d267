"""Quantize an f16/f32 GGUF with llama.cpp's own quantizer (llama_model_quantize via llama-cpp-python), and say
what the result really is: effective bits per weight, the tensor-type mix and the LM-head type, read back from
the file (GGUF tensor types; ONNX initializers), never from the quant's name.

Why read it back: llama.cpp's k-quants need rows that are a multiple of 256. SmolLM2-135M (hidden 576) asked
for q4_k_m gets Q5_0 on most tensors and Q8_0 on the tied LM head -- ~6.2 bits/weight, not ~4.8.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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
LLAMA_LOG = "llama.log"  # llama.cpp's own log of an export, kept inside the package


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:  # no wheel on the registry: it compiles (see README)
        raise ExportError(
            "GGUF quantization needs llama-cpp-python (pip install 'edge-distill[llamacpp]'; build it portable, "
            f"see README): {e}"
        ) from e
    return llama_cpp


@contextlib.contextmanager
def llama_log_to(log: IO[str] | None) -> Iterator[None]:
    """Send llama.cpp's (and ggml's) log lines to `log` instead of the terminal while the block runs.

    llama.cpp logs through one process-wide callback (`llama_log_set`); llama-cpp-python's default prints to
    stderr, which is where the ~180 k-quant fallback warnings and ~500 lines per export came from. The default
    callback is put back afterwards. `log=None` leaves logging as it is.
    """
    if log is None:
        yield
        return
    llama_cpp = _llama_cpp()

    @llama_cpp.llama_log_callback
    def _to_file(level: int, text: bytes, user_data: Any) -> None:  # noqa: ARG001 - C signature
        with contextlib.suppress(Exception):  # an exception must never cross back into C
            log.write(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(_to_file, ctypes.c_void_p(0))
    try:
        yield
    finally:
        log.flush()
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_gguf(
    src: Path, dst: Path, quant: str, *, threads: int | None = None, log: IO[str] | None = None
) -> Path:
    """Quantize `src` (f16/f32 GGUF) into `dst` with llama.cpp's k-quant/legacy quantizers.

    `log`: where llama.cpp's log goes (see `llama_log_to`); None leaves it on the terminal.
    """
    if quant in GGUF_FLOATS:
        raise ExportError(f"{quant} is written by the GGUF writer, not quantized")
    if quant not in GGUF_QUANTS:
        raise ExportError(f"gguf quant {quant!r}: choose one of {list(GGUF_FLOATS) + list(GGUF_QUANTS)}")
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_QUANTS[quant])
    params.nthread = threads or min(4, os.cpu_count() or 1)
    logger.info("quantizing %s -> %s (%s, %d threads)", src, dst, quant, params.nthread)
    with llama_log_to(log):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not Path(dst).is_file():
        raise ExportError(f"llama_model_quantize({src.name} -> {quant}) failed with code {rc}")
    return Path(dst)


_FALLBACK_RE = re.compile(r"WARNING: (\d+) of (\d+) tensor\(s\) required fallback quantization")


def fallback_tensors(log_text: str) -> dict[str, int] | None:
    """llama.cpp's own count of tensors whose requested type did not fit their shape (None: no fallback line)."""
    m = _FALLBACK_RE.search(log_text)
    return {"tensors": int(m.group(1)), "of": int(m.group(2))} if m else None


def _report(tensors: list[tuple[str, str, int, int]], lm_head: str | None, embedding: str | None,
            tied: bool) -> dict[str, Any]:  # fmt: skip
    """Quantization report from (name, type, params, bytes) of every weight tensor of a model file."""
    params = sum(t[2] for t in tensors)
    if not params:
        raise ExportError("quantization report: the model file holds no weight tensors")
    by_type: dict[str, list[int]] = {}
    for _, typ, n, b in tensors:
        acc = by_type.setdefault(typ, [0, 0])
        acc[0] += n
        acc[1] += b
    mix = {
        typ: {"params": n, "bytes": b, "share": round(n / params, 4), "bpw": round(8 * b / n, 3)}
        for typ, (n, b) in sorted(by_type.items(), key=lambda kv: -kv[1][0])
    }
    types = {name: typ for name, typ, _, _ in tensors}
    weight_bytes = sum(t[3] for t in tensors)
    return {
        "bits_per_weight": round(8 * weight_bytes / params, 3),
        "params": params,
        "weight_bytes": weight_bytes,
        "type_mix": mix,
        "lm_head": {"tensor": lm_head, "type": types.get(lm_head or ""), "tied_to_embedding": tied},
        "token_embedding": {"tensor": embedding, "type": types.get(embedding or "")},
    }


def gguf_quant_report(path: Path) -> dict[str, Any]:
    """Effective bits/weight, type mix (share of parameters per GGML type) and LM-head type of a GGUF file.

    Bits/weight = 8 x (bytes of every tensor, block scales included) / (elements of every tensor): what a
    decode step reads per parameter. A model without `output.weight` uses the token embedding as its LM head.
    """
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = [(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors]
    names = {t[0] for t in tensors}
    embd = "token_embd.weight" if "token_embd.weight" in names else None
    tied = "output.weight" not in names
    return _report(tensors, embd if tied else "output.weight", embd, tied)


_ONNX_ITEMSIZE = {
    1: 4,
    2: 1,
    3: 1,
    4: 2,
    5: 2,
    6: 4,
    7: 8,
    9: 1,
    10: 2,
    11: 8,
    12: 4,
    13: 8,
    16: 2,
    21: 1,
    22: 1,
}


def _initializer_bytes(t: Any) -> int:
    """Stored bytes of an ONNX initializer: external data length, raw data, or dims x item size."""
    ext = {e.key: e.value for e in t.external_data}
    if "length" in ext:
        return int(ext["length"])
    if t.raw_data:
        return len(t.raw_data)
    n = 1
    for d in t.dims:
        n *= int(d)
    return n * _ONNX_ITEMSIZE.get(int(t.data_type), 4)


_ONNX_TYPE_NAMES = {"float": "f32", "float16": "f16", "bfloat16": "bf16"}


def _numel(t: Any) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def onnx_quant_report(model_file: Path) -> dict[str, Any]:
    """The same report for an onnxruntime-genai model, from its initializers (external data is not read).

    A MatMulNBits weight counts K x N parameters and the bytes of its packed weight, scales and zero points,
    typed `int<bits>`; every other initializer counts its elements under its ONNX element type, except the
    rotary `cos_cache`/`sin_cache` tables (precomputed constants, not parameters). The LM head is the weight of
    the MatMul that produces `logits`; the token embedding is what the embedding Gather reads -- with tied
    embeddings the builder's GatherBlockQuantized reads the LM head's packed int4 weight through a Reshape.
    """
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def source(name: str) -> str:  # follow Reshape/Cast chains back to the initializer they read
        while name not in inits and name in producer and producer[name].op_type in ("Reshape", "Cast"):
            name = producer[name].input[0]
        return name

    used: set[str] = set()
    tensors: list[tuple[str, str, int, int]] = []
    lm_head = embedding = None
    for node in graph.node:
        ins = [source(i) for i in node.input]
        if node.op_type == "MatMulNBits" and ins[1] in inits:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            parts = [i for i in ins[1:] if i in inits and i not in used]
            used.update(parts)
            nbytes = sum(_initializer_bytes(inits[i]) for i in parts)
            typ = f"int{attrs.get('bits', 4)}"
            tensors.append((ins[1], typ, int(attrs["K"]) * int(attrs["N"]), nbytes))
            weight = ins[1]
        elif node.op_type in ("MatMul", "Gemm", "Gather", "GatherBlockQuantized") and ins and ins[0] in inits:
            weight = ins[0]  # Gather(data, indices) / GatherBlockQuantized(data, indices, scales)
        elif node.op_type in ("MatMul", "Gemm") and len(ins) > 1 and ins[1] in inits:
            weight = ins[1]
        else:
            continue
        if "logits" in node.output:
            lm_head = weight
        if node.op_type.startswith("Gather") and "embed" in node.name:
            embedding = weight
    for name, t in inits.items():  # plain weights, norms, biases: everything not packed above
        if name not in used and not name.endswith(("cos_cache", "sin_cache")) and _numel(t) > 1:
            typ = onnx.TensorProto.DataType.Name(t.data_type).lower()
            tensors.append((name, _ONNX_TYPE_NAMES.get(typ, typ), _numel(t), _initializer_bytes(t)))
    return _report(tensors, lm_head, embedding, tied=lm_head is not None and lm_head == embedding)


def summary_line(quant: str, report: dict[str, Any]) -> str:
    """`q4_k_m: 6.19 bpw (Q5_0 58%, Q4_K 22%, ...), LM head Q8_0 (tied)`: what the quant really is, one line."""
    mix = ", ".join(
        f"{t} {100 * m['share']:.0f}%" for t, m in report["type_mix"].items() if m["share"] >= 0.005
    )
    head = report["lm_head"]
    tied = " (tied)" if head.get("tied_to_embedding") else ""
    return f"{quant}: {report['bits_per_weight']:.2f} bpw ({mix}), LM head {head['type']}{tied}"
