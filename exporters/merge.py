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
    base = lora_base(source)
    tok_dir = source if (source / "tokenizer.json").is_file() else base
    check_tokenizer(tok_dir)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("merging LoRA adapter %s into base %s", source, base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, source).merge_and_unload()
    out = Path(work_dir) / "merged"
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(out)
    return out
