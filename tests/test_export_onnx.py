"""ONNX export through onnxruntime-genai's builder: fp32 parity with torch, int4 loads and generates."""

from __future__ import annotations

import json

import pytest

from exporters import ExportError, export_model, verify

og = pytest.importorskip("onnxruntime_genai")


@pytest.fixture(scope="module")
def tiny_onnx_model(tmp_path_factory):
    """The tiny Llama with vocab 384: the default 512 equals its MLP width, which the builder mistakes for
    the LM head (see exporters.onnx_export.check_builder_compatible)."""
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-384"), vocab_size=384)


@pytest.mark.integration
@pytest.mark.slow
def test_fp32_onnx_greedy_tokens_identical_to_torch(tiny_onnx_model, tmp_path):
    pkg = export_model(tiny_onnx_model, tmp_path / "onnx-fp32", "onnx", "fp32", threads=1)
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["runtime"] == "onnxruntime-genai" and m["model_file"] == "model.onnx"
    greedy = m["parity"]["greedy"]
    assert greedy["identical_prompts"] == greedy["n_prompts"] == 3
    assert abs(greedy["ppl_ratio"] - 1) < 1e-3
    assert m["parity"]["tokenizer_ort_genai"]["mismatches"] == 0
    assert {
        "model.onnx",
        "model.onnx.data",
        "genai_config.json",
        "tokenizer.json",
        "prompt_template.json",
    } <= set(m["files"])
    assert verify(pkg).ok


@pytest.mark.integration
@pytest.mark.slow
def test_int4_onnx_loads_and_generates(tiny_onnx_model, tmp_path):
    pkg = export_model(
        tiny_onnx_model, tmp_path / "onnx-int4", "onnx", "int4", threads=1, format_options={"block_size": 32}
    )
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["parity"]["onnx_options"] == {"block_size": 32, "accuracy_level": 4}
    model = og.Model(str(pkg))
    tok = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=64)
    gen = og.Generator(model, params)
    prompt = tok.encode("Question: 2 + 3?\nSolution: ")
    gen.append_tokens(prompt)
    for _ in range(8):
        gen.generate_next_token()
    assert len(gen.get_sequence(0)) > len(prompt)


def test_vocab_equal_to_mlp_width_is_refused_before_building(tmp_path):
    # onnxruntime-genai's builder takes any layer as wide as the vocabulary for lm_head
    from tests.tiny_models import build_tiny_llama

    model = build_tiny_llama(tmp_path / "clash", vocab_size=512, intermediate_size=512)
    with pytest.raises(ExportError, match="vocab_size 512 equals intermediate_size"):
        export_model(model, tmp_path / "out" / "onnx-fp32", "onnx", "fp32")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_onnx_quant_is_refused(tiny_onnx_model, tmp_path):
    with pytest.raises(ExportError, match="int4"):
        export_model(tiny_onnx_model, tmp_path / "x", "onnx", "q4_k_m")
