"""exporters.ort_tokenizer: which pre-tokenizers are rewritten for onnxruntime-extensions, and into what.

The end-to-end proof (onnxruntime-genai tokenizing the SmolLM2 student like HF and llama.cpp on all shipped
GSM8K texts, and a control without the rewrite) is in tests/test_tokenizer_fidelity.py.
"""

from __future__ import annotations

import json

import pytest

from exporters.ort_tokenizer import BYTE_LEVEL_REGEX, ort_pre_tokenizer, rewrite_for_ort

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def _split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def test_smollm2_digits_and_byte_level_become_splits():
    pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]}
    assert ort_pre_tokenizer(pre) == {
        "type": "Sequence",
        "pretokenizers": [_split(r"\p{N}"), _split(BYTE_LEVEL_REGEX), {**BYTE_LEVEL, "use_regex": False}],
    }


def test_grouped_digits_keep_runs_together():
    pre = {"type": "Digits", "individual_digits": False}
    assert ort_pre_tokenizer(pre) == {"type": "Sequence", "pretokenizers": [_split(r"\p{N}+")]}


def test_what_onnxruntime_extensions_implements_is_kept():
    # a lone ByteLevel (its built-in GPT-2 regex) and Split+ByteLevel (Llama 3, Qwen2) need no rewrite
    assert ort_pre_tokenizer(BYTE_LEVEL) is None
    qwen = {"type": "Sequence", "pretokenizers": [_split(r"\p{N}"), {**BYTE_LEVEL, "use_regex": False}]}
    assert ort_pre_tokenizer(qwen) is None
    assert ort_pre_tokenizer(None) is None


def test_rewrite_for_ort_changes_only_the_pre_tokenizer(tmp_path):
    from tests.tiny_models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    path = tmp_path / "tokenizer.json"
    before = path.read_bytes()
    assert not rewrite_for_ort(path)  # the tiny tokenizer's lone ByteLevel: the file is left untouched
    assert not rewrite_for_ort(tmp_path / "absent.json")
    assert path.read_bytes() == before
    data = json.loads(before)
    data["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    assert rewrite_for_ort(path)
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["pre_tokenizer"] == {"type": "Sequence", "pretokenizers": [_split(r"\p{N}")]}
    assert {k: v for k, v in after.items() if k != "pre_tokenizer"} == {
        k: v for k, v in data.items() if k != "pre_tokenizer"
    }


@pytest.mark.integration
@pytest.mark.slow
def test_onnx_export_of_a_digit_splitting_tokenizer_passes_the_fatal_ort_check(tmp_path):
    """End to end through `export_model`: a tiny Llama whose tokenizer splits digits one by one (SmolLM2's
    pre-tokenizer). The export rewrites the package's tokenizer.json and its ORT GenAI check, now fatal, passes."""
    pytest.importorskip("onnxruntime_genai")
    from transformers import AutoTokenizer

    from edge_distill.models import restore_pre_tokenizer
    from exporters import export_model
    from tests.tiny_models import build_tiny_llama

    src = build_tiny_llama(tmp_path / "hf", vocab_size=384)
    tok = AutoTokenizer.from_pretrained(src)
    restore_pre_tokenizer(tok, "smollm").save_pretrained(src)
    assert AutoTokenizer.from_pretrained(src)("x  12", add_special_tokens=False)["input_ids"][-2:] == [
        tok.convert_tokens_to_ids("1"),
        tok.convert_tokens_to_ids("2"),
    ]
    pkg = export_model(src, tmp_path / "onnx-fp32", "onnx", "fp32", threads=1)
    ort = json.loads((pkg / "manifest.json").read_text(encoding="utf-8"))["parity"]["tokenizer_ort_genai"]
    assert ort["mismatches"] == 0 and ort["pre_tokenizer_rewritten_for_ort"] is True
    pre = json.loads((pkg / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]
    assert [s["type"] for s in pre["pretokenizers"]] == ["Split", "Split", "ByteLevel"]
