"""GGUF-specific checks: the file reads back with gguf's reader and loads in transformers' GGUF loader."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from exporters.errors import ParityError
from exporters.gguf_writer import GgufSummary

logger = logging.getLogger(__name__)


def check_gguf_readback(path: Path, summary: GgufSummary, *, exact_types: bool) -> dict[str, Any]:
    """Names and shapes must match what was written; types too for f16/f32 (quantized types vary by tensor)."""
    import gguf

    reader = gguf.GGUFReader(path)
    got = {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}
    problems = []
    if set(got) != set(summary.tensors):
        problems.append(f"tensor names differ: missing {sorted(set(summary.tensors) - set(got))[:5]}, "
                        f"extra {sorted(set(got) - set(summary.tensors))[:5]}")  # fmt: skip
    for name, (shape, typ) in summary.tensors.items():
        if name not in got:
            continue
        if tuple(got[name][0]) != tuple(shape):
            problems.append(f"{name}: shape {got[name][0]} != written {shape}")
        if exact_types and got[name][1] != typ:
            problems.append(f"{name}: type {got[name][1]} != written {typ}")
    arch = reader.fields["general.architecture"].contents()
    n_tokens = len(reader.fields["tokenizer.ggml.tokens"].data)
    if arch != summary.arch or n_tokens != summary.n_vocab:
        problems.append(f"metadata: arch {arch!r}/{summary.arch!r}, tokens {n_tokens}/{summary.n_vocab}")
    numbers = {
        "tensors": len(got),
        "types": dict(Counter(t for _, t in got.values())),
        "problems": problems[:10],
    }
    if problems:
        raise ParityError(f"{path.name} does not read back as written", numbers)
    return numbers


def check_transformers_gguf(path: Path, ref_text_ids: list[list[int]], ref_nll: float, tokenizer: Any,
                            strings: list[str]) -> dict[str, Any]:  # fmt: skip
    """Load with `from_pretrained(dir, gguf_file=...)`: model NLL and tokenizer ids vs the source."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge_distill.errors import ModelError
    from edge_distill.models import gguf_pre_tokenizer, restore_pre_tokenizer
    from exporters.parity import _nll_from_logits

    kw = {"gguf_file": path.name}
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    # transformers' GGUF loader drops the pre-tokenizer the file names (SmolLM2's digit split among them), so a
    # raw load disagrees with llama.cpp on digits: restore it the way edge-distill loads GGUFs (models.py), and
    # record that a plain `from_pretrained(gguf_file=...)` needs this step
    pre: str | None = gguf_pre_tokenizer(path)
    gguf_tok = AutoTokenizer.from_pretrained(path.parent, **kw)
    try:
        gguf_tok = restore_pre_tokenizer(gguf_tok, pre, source=path)
    except ModelError:  # no HF equivalent known here: compare the loader's own tokenizer as it is
        pre = None
    with torch.no_grad():
        nll = float(
            np.mean(
                [_nll_from_logits(model(torch.tensor([ids])).logits[0].numpy(), ids) for ids in ref_text_ids]
            )
        )
    bad = [s for s in strings if gguf_tok(s)["input_ids"] != tokenizer(s)["input_ids"]]
    numbers = {"nll_ref": ref_nll, "nll_transformers_gguf": nll, "ppl_ratio": float(np.exp(nll - ref_nll)),
               "tokenizer_mismatches": len(bad), "first_mismatch": bad[0] if bad else None,
               "pre_tokenizer_restored": pre}  # fmt: skip
    if bad:
        raise ParityError("transformers' GGUF tokenizer disagrees with the source tokenizer", numbers)
    return numbers


def _field_value(field: Any) -> Any:
    """A reader field as plain Python: strings, numbers, or lists of them (token lists included)."""
    import gguf

    types = field.types
    if types and types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist() for i in field.data]
    return field.contents()


def diff_gguf(a: Path, b: Path, *, ignore_keys: tuple[str, ...] = ()) -> list[str]:
    """Every difference between two GGUF files: metadata keys/values (minus `ignore_keys`) and tensors (name,
    type, shape, bytes, order). Empty when they are the same model, written the same way."""
    import gguf

    a, b = Path(a), Path(b)
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    out = []
    fa = {k: f for k, f in ra.fields.items() if not k.startswith("GGUF.") and k not in ignore_keys}
    fb = {k: f for k, f in rb.fields.items() if not k.startswith("GGUF.") and k not in ignore_keys}
    for k in sorted(set(fa) | set(fb)):
        if k not in fb or k not in fa:
            out.append(f"metadata {k}: only in {(a if k in fa else b).name}")
        elif (va := _field_value(fa[k])) != (vb := _field_value(fb[k])):
            out.append(f"metadata {k}: {str(va)[:80]} != {str(vb)[:80]}")
    ta, tb = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
    if list(ta) != list(tb) and set(ta) == set(tb):
        out.append("tensor order differs")
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            out.append(f"tensor {name}: only in {(a if name in ta else b).name}")
            continue
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            out.append(
                f"tensor {name}: {x.tensor_type.name}{list(x.shape)} != {y.tensor_type.name}{list(y.shape)}"
            )
        elif bytes(x.data.tobytes()) != bytes(y.data.tobytes()):
            out.append(f"tensor {name}: bytes differ")
    return out
