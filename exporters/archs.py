"""The one table of student architectures the exporters take, and who writes each one's GGUF.

Torch-free. `check_architecture` is what both formats' `check_source` call, so an unsupported model gets one
message (listing every supported family, per format) before any work. Each row is proven on a tiny random model
of that architecture in tests/test_export_archs.py: f16 GGUF tensors and metadata equal to llama.cpp's own
converter, llama.cpp greedy tokens equal to torch, q8_0/q4_k_m load and generate, ONNX greedy equal to torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters.errors import ExportError

OWN = "edge-distill"  # exporters/gguf_writer.py writes it
CONVERTER = "llama.cpp"  # llama.cpp's convert_hf_to_gguf.py writes it (exporters/llama_converter.py)


@dataclass(frozen=True)
class Arch:
    model_type: str  # config.json "model_type"
    hf_class: str  # the transformers class (config.json "architectures")
    family: str  # what users know it as
    gguf_writer: str  # OWN or CONVERTER
    onnx: bool  # onnxruntime-genai's builder exports it (greedy parity tested)
    onnx_note: str = ""  # why not, when it does not
    executorch: bool = False  # the ExecuTorch exporter (exporters/executorch_pte.py) is tested on it
    executorch_note: str = ""  # why not, when measured


ARCHS: dict[str, Arch] = {
    a.model_type: a
    for a in (
        Arch("llama", "LlamaForCausalLM", "Llama (SmolLM2, Llama-3.2)", OWN, True, executorch=True),
        Arch("qwen2", "Qwen2ForCausalLM", "Qwen2 (Qwen2.5)", OWN, True, executorch=True),
        Arch("qwen3", "Qwen3ForCausalLM", "Qwen3", CONVERTER, True, executorch=True),
        Arch("gemma3_text", "Gemma3ForCausalLM", "Gemma 3 text (gemma-3-270m, gemma-3-1b)", CONVERTER, True),
        Arch("phi3", "Phi3ForCausalLM", "Phi-3 / Phi-4-mini", CONVERTER, True),
        Arch("lfm2", "Lfm2ForCausalLM", "LFM2 / LFM2.5 (350M, 700M)", CONVERTER, True),
    )
}


def exports(arch: Arch, fmt: str) -> bool:
    return fmt == "gguf" or (fmt == "onnx" and arch.onnx) or (fmt == "executorch" and arch.executorch)


def supported_list(fmt: str) -> str:
    """Every architecture `fmt` exports, and for ONNX/ExecuTorch the ones it does not and why."""
    listed = ", ".join(
        f"{a.model_type} [{a.hf_class}: {a.family}]" for a in ARCHS.values() if exports(a, fmt)
    )
    notes = [
        f"{a.model_type} [{a.hf_class}]: {a.onnx_note if fmt == 'onnx' else a.executorch_note}"
        for a in ARCHS.values()
        if (fmt == "onnx" and not a.onnx) or (fmt == "executorch" and a.executorch_note)
    ]
    return listed + (f" (not {'; '.join(notes)})" if notes else "")


def model_config(config_dir: Path) -> dict[str, Any]:
    path = Path(config_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: cannot read the model config ({e})") from e


def check_architecture(config_dir: Path, fmt: str) -> Arch:
    """The row of the model in `config_dir`, or one error that lists what `fmt` supports."""
    cfg = model_config(config_dir)
    arch = ARCHS.get(cfg.get("model_type"))
    if arch is None or not exports(arch, fmt):
        raise ExportError(
            f"{Path(config_dir) / 'config.json'}: architecture {cfg.get('model_type')!r} "
            f"({', '.join(cfg.get('architectures') or ['?'])}) is not supported for {fmt.upper()} export; "
            f"supported: {supported_list(fmt)}. Distill into one of these students (train.model)."
        )
    return arch
