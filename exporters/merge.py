"""Turn a training output into a full-weight HF directory: merge a LoRA adapter, or pass a full model through."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from exporters.errors import ExportError

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def is_lora_dir(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def check_tokenizer(model_dir: Path) -> None:
    """The exporters need a fast tokenizer (tokenizer.json): GGUF embeds its vocab, ORT GenAI loads it."""
    if not (Path(model_dir) / "tokenizer.json").is_file():
        raise ExportError(
            f"{model_dir}: no tokenizer.json next to the model; save the tokenizer with the model "
            "(tokenizer.save_pretrained(model_dir)) before exporting"
        )


def lora_base(adapter_dir: Path) -> Path:
    """The local base model of a LoRA adapter; a clear error when it is not on disk."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base or not (Path(base) / "config.json").is_file():
        raise ExportError(
            f"{adapter_dir}: LoRA adapter whose base model {base!r} is not a local model directory; "
            "export needs the base weights on disk to merge (exports never download from a hub)"
        )
    return Path(base)


def prepare_full_model(source: Path, work_dir: Path) -> Path:
    """Return a directory with full weights + tokenizer for `source`.

    A full fine-tune (config.json + weights) is returned as is (no copy). A LoRA adapter is merged into its
    base with peft and written to `work_dir/merged`.
    """
    source = Path(source)
    if not source.is_dir():
        raise ExportError(f"{source}: not a model directory")
    if not is_lora_dir(source):
        if not (source / "config.json").is_file():
            raise ExportError(
                f"{source}: neither a HF model (config.json) nor a LoRA adapter (adapter_config.json)"
            )
        check_tokenizer(source)
        return source
    check_tokenizer(source if (source / "tokenizer.json").is_file() else lora_base(source))
    return merge_lora(source, Path(work_dir) / "merged")


def merge_lora(adapter_dir: Path, out_dir: Path, *, base: Path | None = None) -> Path:
    """Merge a LoRA adapter into its base (default: the local base its config names) and write a full fp32
    HF directory + tokenizer (the adapter's when it has one, else the base's) to `out_dir` atomically.

    The one LoRA merge: the exporter, SIKeD's merged iteration checkpoints and EDIT's step 1 all use it.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge_distill.io import ArtifactKind, atomic_path

    adapter_dir = Path(adapter_dir)
    base = Path(base) if base is not None else lora_base(adapter_dir)
    has_tokenizer = any((adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    logger.info("merging LoRA adapter %s into base %s", adapter_dir, base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if has_tokenizer else base)
    model_kind = ArtifactKind("model directory", lambda p: (p / "config.json").is_file())
    with atomic_path(Path(out_dir), kind=model_kind) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)
