"""ONNX export with onnxruntime-genai's model builder (KV-cached decoder + genai_config.json).

Not optimum: its ONNX exporter (optimum-onnx) pins transformers<4.58 and does not import under
transformers 5, and its output needs extra glue to run with a KV cache on Android/iOS. The builder's output
runs as is in ORT GenAI on desktop and mobile.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from exporters import archs, onnx_builder
from exporters.errors import ExportError

logger = logging.getLogger(__name__)

ONNX_QUANTS = ("int4", "int8", "fp32", "fp16")
INT4_BLOCK_SIZES = (16, 32, 64, 128, 256)


def check_builder_compatible(model_dir: Path) -> None:
    """The onnx format's check_source: an architecture of exporters/archs.py the builder exports, and no
    projection as wide as the vocabulary.

    The builder takes *any* Linear with out_features == vocab_size for the LM head (onnxruntime-genai
    0.18, `has_lm_head`), so a model whose MLP/attention width equals its vocab size exports wrong logits."""
    archs.check_architecture(model_dir, "onnx")
    cfg = archs.model_config(model_dir)
    vocab, hidden, heads = cfg.get("vocab_size"), cfg.get("hidden_size"), cfg.get("num_attention_heads") or 1
    head_dim = cfg.get("head_dim") or (hidden // heads if hidden else None)
    widths = {
        "intermediate_size": cfg.get("intermediate_size"),
        "hidden_size": hidden,
        "q_proj width": heads * head_dim if head_dim else None,
        "k/v_proj width": (cfg.get("num_key_value_heads") or heads) * head_dim if head_dim else None,
    }
    if cfg.get("model_type") == "phi3" and head_dim:  # Phi-3 fuses q/k/v and gate/up into one Linear each
        widths["fused qkv_proj width"] = (heads + 2 * (cfg.get("num_key_value_heads") or heads)) * head_dim
        widths["fused gate_up_proj width"] = 2 * (cfg.get("intermediate_size") or 0)
    scaled = onnx_builder.gemma3_scaled_rope(cfg) if cfg.get("model_type") == "gemma3_text" else {}
    if scaled:
        raise ExportError(
            f"{Path(model_dir) / 'config.json'}: Gemma 3 rope {scaled} is not exported to ONNX: onnxruntime-genai "
            "0.18's builder applies the global layers' rope scaling to the sliding layers' cache too, which would "
            "change the model (gemma-3-270m and gemma-3-1b use plain rope and export). Export it as GGUF."
        )
    clash = [k for k, v in widths.items() if v is not None and v == vocab]
    if clash:
        raise ExportError(
            f"{model_dir}: vocab_size {vocab} equals {', '.join(clash)}; onnxruntime-genai's builder would mistake "
            "that projection for the LM head and export wrong logits. Pad or change the vocabulary size."
        )


def build_onnx(
    model_dir: Path,
    out_dir: Path,
    quant: str = "int4",
    *,
    block_size: int = 32,
    accuracy_level: int = 4,
    work_dir: Path | None = None,
    threads: int | None = None,
    timeout_s: float = 1800,
) -> Path:
    """Run the builder on a HF directory into `out_dir` (model.onnx, model.onnx.data, genai_config.json, tokenizer).

    int4/int8 are weight-only MatMulNBits with `block_size`; `accuracy_level` 4 computes with int8 activations
    on CPU (fastest), 1 keeps fp32 activations.
    """
    if quant not in ONNX_QUANTS:
        raise ExportError(f"onnx quant {quant!r}: choose one of {list(ONNX_QUANTS)}")
    if block_size not in INT4_BLOCK_SIZES:
        raise ExportError(f"onnx block_size {block_size}: choose one of {INT4_BLOCK_SIZES}")
    if accuracy_level not in (1, 2, 3, 4):
        raise ExportError(
            f"onnx accuracy_level {accuracy_level}: choose 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8)"
        )
    check_builder_compatible(model_dir)
    cache = Path(work_dir or out_dir.parent) / "onnx_builder_cache"
    cmd = [sys.executable, "-m", "exporters.onnx_builder", "-i", str(model_dir), "-o", str(out_dir),
           "-p", quant, "-e", "cpu", "-c", str(cache)]  # fmt: skip
    if quant in ("int4", "int8"):
        cmd += ["--extra_options", f"block_size={block_size}", f"accuracy_level={accuracy_level}"]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    logger.info("building ONNX %s: %s", quant, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ExportError(f"onnxruntime-genai builder timed out after {timeout_s:.0f}s") from e
    if proc.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"onnxruntime-genai builder failed for {model_dir} ({quant}):\n{tail}")
    logger.debug("builder output:\n%s", proc.stdout[-2000:])
    return out_dir
