"""Write an f32/f16 GGUF from an HF directory: Llama and Qwen2 here with the `gguf` package, the other
architectures of exporters/archs.py (Qwen3, Gemma 3, Phi-3, LFM2) with llama.cpp's own converter.

For Llama/Qwen2 this follows llama.cpp's convert_hf_to_gguf (tensors and metadata equal, tested): GPT-2 style BPE vocab
(`tokenizer.ggml.model = "gpt2"`, tokens, token types, merges, pre-tokenizer name), special tokens and chat
template via `gguf.SpecialVocab`, tensor names via `gguf.get_tensor_name_map`, Llama's q/k row permutation
(llama.cpp's LLAMA rope is the interleaved kind; HF stores the rotate-half layout), and llama3 rope factors.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporters import archs, llama_converter
from exporters.errors import ExportError

logger = logging.getLogger(__name__)

# The architectures this module writes itself (HF model_type -> gguf MODEL_ARCH); exporters/archs.py says which
# others llama.cpp's converter writes. Anything else is refused: a wrong mapping gives a file that loads and
# prints garbage, which is worse than an error.
OWN_ARCHS: dict[str, str] = {"llama": "LLAMA", "qwen2": "QWEN2"}
FLOAT_TYPES = ("f32", "f16")


def check_architecture(config_dir: Path) -> None:
    """The gguf format's check_source: refuse, before any work, a model no GGUF writer here takes."""
    archs.check_architecture(config_dir, "gguf")


@dataclass
class GgufSummary:
    """What was written: checked against the file by `parity.check_gguf_readback`."""

    path: Path
    arch: str
    tensors: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # name -> (shape, type)
    n_vocab: int = 0
    pre: str = ""


def _rope(config: Any) -> tuple[float, dict[str, Any]]:
    """(theta, scaling params) across transformers 4 (`rope_theta`/`rope_scaling`) and 5 (`rope_parameters`)."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    params = {**scaling, **params}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return float(theta), params


def _llama3_rope_factors(theta: float, head_dim: int, p: dict[str, Any]) -> np.ndarray:
    """llama.cpp's `rope_freqs` tensor for rope_type llama3 (Llama-3.1/3.2)."""
    factor = p.get("factor", 8.0)
    low, high = p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
    old_ctx = p.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi / (1.0 / theta ** (i / head_dim))
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half rows -> llama.cpp interleaved rows (convert_hf_to_gguf LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's pre-tokenizer name for the byte-level BPE tokenizers we support.

    llama.cpp recognises pre-tokenizers by name (convert_hf_to_gguf hashes a test string); we read the
    structure of tokenizer.json instead. The tokenizer parity check then proves the choice on real text.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        regex = (steps[0].get("pattern") or {}).get("Regex", "")
        if "\\p{N}{1,3}" in regex:
            return "llama-bpe"
        if "\\p{N}|" in regex or "\\p{N}]" in regex:
            return "qwen2"
    raise ExportError(
        f"unsupported pre-tokenizer {kinds} in tokenizer.json; supported: GPT-2 byte-level, SmolLM2 "
        "(digits + byte-level), Llama-3 and Qwen2 split regexes"
    )


def _vocab(model_dir: Path, n_vocab: int) -> tuple[list[str], list[int], str, Any]:
    """Tokens in id order, their gguf token types, the pre-tokenizer name and the HF tokenizer."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # The tokenizer transformers actually runs: in transformers 5 a model-specific class (e.g. Qwen2Tokenizer)
    # may replace the pre-tokenizer stored in tokenizer.json, and llama.cpp must match what the student saw.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{model_dir}: GGUF export needs a fast (tokenizers) tokenizer")
    tok_json = json.loads(backend.to_str())
    model = tok_json.get("model", {})
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (tok_json.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise ExportError(f"{model_dir}: only byte-level BPE tokenizers (GPT-2 style) are supported for GGUF")
    pre = detect_pre_tokenizer(tok_json)
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], pre, tokenizer


def set_prompt_metadata(path: Path, *, name: str | None, chat_template: str | None) -> None:
    """Give a GGUF another writer produced (llama.cpp's converter) the package's general.name/basename and
    chat template: the file is copied with the new metadata (gguf's own gguf-new-metadata) and replaced."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    from edge_distill.io import atomic_path

    path = Path(path)
    string = gguf.GGUFValueType.STRING
    new: dict[str, Any] = {}
    if name:
        new[gguf.Keys.General.NAME] = MetadataDetails(string, name)
        new[gguf.Keys.General.BASENAME] = MetadataDetails(string, name)
    if chat_template is not None:
        new[gguf.Keys.Tokenizer.CHAT_TEMPLATE] = MetadataDetails(string, chat_template)
    if not new:
        return
    reader = gguf.GGUFReader(path, "r")
    with atomic_path(path) as tmp:
        arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
        writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
        if alignment is not None:
            writer.data_alignment = alignment.contents()
        copy_with_new_metadata(reader, writer, new, [])
    del reader


def read_summary(path: Path) -> GgufSummary:
    """What a GGUF file holds (for a file this module did not write itself)."""
    import gguf

    reader = gguf.GGUFReader(path)
    summary = GgufSummary(
        Path(path),
        reader.fields["general.architecture"].contents(),
        n_vocab=len(reader.fields["tokenizer.ggml.tokens"].data),
        pre=reader.fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in reader.fields else "",
    )
    for t in reader.tensors:
        summary.tensors[t.name] = (tuple(int(x) for x in t.shape), t.tensor_type.name)
    return summary


def fallback_pre_tokenizer(model_dir: Path) -> str | None:
    """Our structural pre-tokenizer name for the tokenizer transformers runs, or None when we do not know it."""
    from transformers import AutoTokenizer

    backend = getattr(AutoTokenizer.from_pretrained(model_dir), "backend_tokenizer", None)
    try:
        return detect_pre_tokenizer(json.loads(backend.to_str())) if backend is not None else None
    except ExportError:
        return None


def _write_with_converter(model_dir: Path, out_path: Path, outtype: str, *, name: str | None = None,
                          chat_template: str | None = None) -> GgufSummary:  # fmt: skip
    llama_converter.convert(
        model_dir,
        out_path,
        outtype,
        name=name or model_dir.name,
        fallback_pre=fallback_pre_tokenizer(model_dir),
    )
    if (
        name or chat_template is not None
    ):  # the run's name and the package's template, as our writer writes them
        set_prompt_metadata(out_path, name=name, chat_template=chat_template)
    summary = read_summary(out_path)
    logger.info(
        "wrote %s with llama.cpp's converter (%s, %d tensors)", out_path, outtype, len(summary.tensors)
    )
    return summary


def _add_hparams(w: Any, cfg: Any, model_dir: Path, arch_name: str, rope: dict[str, Any], outtype: str,
                 name: str | None) -> None:  # fmt: skip
    """The model metadata, in the converter's order (the file's bytes follow the order of these calls)."""
    import gguf

    n_head = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    theta, _ = _rope(cfg)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or model_dir.name)
    if name:
        w.add_basename(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(cfg.num_key_value_heads or n_head)
    if arch_name == "llama":  # the converter's LlamaModel writes these; Qwen2Model leaves them to llama.cpp
        w.add_rope_dimension_count(head_dim)
        w.add_vocab_size(cfg.vocab_size)
    if "head_dim" in archs.model_config(
        model_dir
    ):  # written as the converter does: when config.json names it
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_freq_base(theta)
    if rope.get("rope_type", rope.get("type", "default")) == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocab(w: Any, model_dir: Path, vocab: tuple[list[str], list[int], str, Any],
               chat_template: str | None) -> None:  # fmt: skip
    """The tokenizer: tokens, their types, the pre-tokenizer, special tokens and the chat template."""
    import gguf

    tokens, types, pre, tokenizer = vocab
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    # What HF does when encoding plain text, so llama.cpp tokenizes prompts into the same ids.
    probe = tokenizer("1")["input_ids"]
    special.add_special_token["bos"] = bool(
        tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    )
    special.add_special_token["eos"] = bool(
        tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id]
    )
    if chat_template is not None:
        special.chat_template = chat_template
    elif special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(w, quiet=True)


def _add_tensors(
    w: Any, summary: GgufSummary, model: Any, arch: Any, rope: dict[str, Any], outtype: str
) -> None:
    """Every weight under its GGUF name (Llama's q/k permuted as the converter does), 2-D ones as `outtype`."""
    import gguf

    cfg, arch_name = model.config, summary.arch
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head

    def add(name: str, data: np.ndarray) -> None:
        w.add_tensor(name, data)
        summary.tensors[name] = (tuple(reversed(data.shape)), "F16" if data.dtype == np.float16 else "F32")

    if rope.get("rope_type", rope.get("type", "default")) == "llama3":  # the converter's extra tensors first
        theta, _ = _rope(cfg)
        add(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS], _llama3_rope_factors(theta, head_dim, rope))
    name_map = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    ftype = np.float16 if outtype == "f16" else np.float32
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, t in sorted(model.state_dict().items()):  # then the checkpoint's, in name order
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"cannot map tensor {hf_name!r} to a GGUF name for {arch_name}")
        data = t.detach().float().cpu().numpy()
        if arch_name == "llama" and hf_name.endswith("q_proj.weight"):
            data = _permute_qk(data, n_head)
        elif arch_name == "llama" and hf_name.endswith("k_proj.weight"):
            data = _permute_qk(data, n_kv)
        add(name, data.astype(ftype if data.ndim > 1 else np.float32))


def write_gguf(model_dir: Path, out_path: Path, outtype: str = "f16", *, model: Any = None,
               name: str | None = None, chat_template: str | None = None) -> GgufSummary:  # fmt: skip
    """Write `model_dir` (an HF directory with tokenizer.json) as an f32/f16 GGUF at `out_path`.

    Llama and Qwen2 are written here, from `model` when given (the already loaded torch model saves a second
    load): tensors and metadata equal to llama.cpp's converter (tests/test_export_archs.py). The other
    architectures of exporters/archs.py are written by that converter (exporters/llama_converter.py).
    1-D tensors stay f32 like llama.cpp's converter does; 2-D weights get `outtype`. `name` becomes
    general.name and general.basename (default: the directory's name, no basename); `chat_template`
    replaces the tokenizer's (the package's: exporters/chat_template.py), for both writers.
    """
    import gguf

    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in FLOAT_TYPES:
        raise ExportError(f"gguf outtype {outtype!r}: choose one of {FLOAT_TYPES} (then quantize)")
    row = archs.check_architecture(model_dir, "gguf")
    if row.gguf_writer == archs.CONVERTER:
        return _write_with_converter(model_dir, out_path, outtype, name=name, chat_template=chat_template)
    arch = getattr(gguf.MODEL_ARCH, OWN_ARCHS[row.model_type])
    if model is None:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = model.config
    _, rope = _rope(cfg)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3", "linear"):
        raise ExportError(f"{model_dir}: rope type {rope_type!r} is not supported (default, linear, llama3)")

    vocab = _vocab(model_dir, cfg.vocab_size)
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    w = gguf.GGUFWriter(out_path, arch_name)
    _add_hparams(w, cfg, model_dir, arch_name, rope, outtype, name)
    _add_vocab(w, model_dir, vocab, chat_template)
    summary = GgufSummary(out_path, arch_name, n_vocab=len(vocab[0]), pre=vocab[2])
    _add_tensors(w, summary, model, arch, rope, outtype)
    w.add_size_label(gguf.size_label(*w.get_total_parameter_count()))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    logger.info("wrote %s (%s, %d tensors, pre=%s)", out_path, outtype, len(summary.tensors), summary.pre)
    return summary
