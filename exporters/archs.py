"""The one table of student architectures the exporters take, and who writes each one's GGUF.

Torch-free. `check_architecture` is what every format's `check_source` calls, so an unsupported model gets one
message (listing every supported family, per format) before any work. Which formats export an architecture is
data of its row (`exports`, by format name): a format no row names exports nothing, never everything. Each row is proven on a tiny random model
of that architecture in tests/test_export_archs.py: f16 GGUF tensors and metadata equal to llama.cpp's own
converter, llama.cpp greedy tokens equal to torch, q8_0/q4_k_m load and generate, ONNX greedy equal to torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    exports: frozenset[str]  # the export formats (exporters/formats.py rows) proven on it; no others
    notes: Mapping[str, str] = field(default_factory=dict)  # format -> why it does not export it, when known


ALL = frozenset({"gguf", "onnx"})  # every architecture here: the GGUF writers and onnxruntime-genai's builder
ARCHS: dict[str, Arch] = {
    a.model_type: a
    for a in (
        Arch("llama", "LlamaForCausalLM", "Llama (SmolLM2, Llama-3.2)", OWN, ALL | {"executorch"}),
        Arch("qwen2", "Qwen2ForCausalLM", "Qwen2 (Qwen2.5)", OWN, ALL | {"executorch"}),
        Arch("qwen3", "Qwen3ForCausalLM", "Qwen3", CONVERTER, ALL | {"executorch"}),
        Arch("gemma3_text", "Gemma3ForCausalLM", "Gemma 3 text (gemma-3-270m, gemma-3-1b)", CONVERTER, ALL),
        Arch("phi3", "Phi3ForCausalLM", "Phi-3 / Phi-4-mini", CONVERTER, ALL),
        Arch("lfm2", "Lfm2ForCausalLM", "LFM2 / LFM2.5 (350M, 700M)", CONVERTER, ALL),
    )
}


def supported_list(fmt: str) -> str:
    """Every architecture `fmt` exports, and the ones it does not where the reason is known."""
    listed = ", ".join(
        f"{a.model_type} [{a.hf_class}: {a.family}]" for a in ARCHS.values() if fmt in a.exports
    )
    notes = [f"{a.model_type} [{a.hf_class}]: {a.notes[fmt]}" for a in ARCHS.values() if fmt in a.notes]
    return (listed or "none yet") + (f" (not {'; '.join(notes)})" if notes else "")


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
    if arch is None or fmt not in arch.exports:
        raise ExportError(
            f"{Path(config_dir) / 'config.json'}: architecture {cfg.get('model_type')!r} "
            f"({', '.join(cfg.get('architectures') or ['?'])}) is not supported for {fmt.upper()} export; "
            f"supported: {supported_list(fmt)}. Distill into one of these students (train.model)."
        )
    return arch
