"""Every student architecture of exporters/archs.py, each on a tiny random model of that architecture:

- the f16 GGUF our export writes has the same tensors (names, types, shapes, bytes, order) and metadata as
  llama.cpp's own convert_hf_to_gguf.py (the one vendored in the llama-cpp-python sdist setup keeps). For
  Llama/Qwen2 that compares our writer with the converter; for the architectures the converter writes for us it
  checks that the export path hands the converter the model as the reference run does (deterministic, same name
  and pre-tokenizer);
- llama.cpp's greedy tokens on that f16 GGUF equal torch's: every step along llama.cpp's greedy path is torch's
  argmax up to f16 near-ties (TIE_TOL, below), with the logit error itself bounded;
- q8_0 and q4_k_m quantize (Q8_0 / Q4_K tensors present), pass the export's parity and tokenizer checks, load in
  llama.cpp and generate;
- ONNX (onnxruntime-genai's builder; Gemma 3 through exporters/onnx_builder.py's rope fix) fp32 greedy tokens
  equal torch's, a clear refusal for a Gemma 3 rope the builder would get wrong, and one clear refusal, listing
  what is supported, for an unknown architecture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporters import ExportError, export_model
from exporters.archs import ARCHS, CONVERTER, OWN
from exporters.gguf_checks import diff_gguf
from tests.tiny_models import TINY_ARCHS, build_tiny_arch

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch -> tiny random model directory, each built once per module."""
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            # not named after the arch: llama.cpp keys Phi-3 SentencePiece token fixes on general.name "phi3"
            built[arch] = build_tiny_arch(tmp_path_factory.mktemp(arch) / "student", arch)
        return built[arch]

    return get


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


def test_every_supported_architecture_has_a_tiny_model():
    assert set(TINY_ARCHS) == set(ARCHS)
    assert {a.gguf_writer for a in ARCHS.values()} == {OWN, CONVERTER}


@pytest.mark.integration
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_f16_gguf_equals_llama_cpp_converter(arch, tiny, tmp_path):
    import gguf

    from exporters.gguf_writer import fallback_pre_tokenizer, write_gguf
    from exporters.llama_converter import convert

    src = tiny(arch)
    ours = write_gguf(src, tmp_path / "ours.gguf", "f16").path
    name = gguf.GGUFReader(ours).fields["general.name"].contents()
    # The reference run: the converter's own CLI on the same directory. Only the pre-tokenizer lookup is widened
    # (its hash table knows released tokenizers, not one trained in a test), see exporters/llama_converter.py.
    ref = convert(src, tmp_path / "ref.gguf", "f16", name=name, fallback_pre=fallback_pre_tokenizer(src))
    assert diff_gguf(ours, ref) == []
    types = {t.tensor_type.name for t in gguf.GGUFReader(ours).tensors}
    assert types == {"F16", "F32"}  # 2-D weights f16, norms (and biases, conv states) f32


def _completion_tokens(path: Path, prompt: str, n: int = 8) -> int:
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    try:
        return llm.create_completion(prompt, max_tokens=n, temperature=0)["usage"]["completion_tokens"]
    finally:
        llm.close()


# llama.cpp computes f16 matmuls with f16-rounded activations and keeps an f16 KV cache, so its logits differ from
# torch's f32 ones by up to ~0.01 on these models (measured, all six: max |diff| 0.0005-0.0095 teacher-forced over
# 196 tokens). A random tiny model has near-ties below that (measured: Phi-3 seed 0, top-2 gap 0.0045 at step 8;
# Gemma 3 seed 1, gap 7e-7), where f16 and f32 may each pick either token. So every llama.cpp greedy step must be
# torch's argmax, or within TIE_TOL of it, and the logit error itself is bounded by TIE_TOL / 2.
TIE_TOL = 0.02


def _greedy_steps(gguf_path: Path, src: Path, n: int = 16) -> tuple[int, int, float]:
    """(steps, steps equal to torch's argmax, max |llama.cpp - torch| logit) along llama.cpp's greedy path on the
    export parity prompts; fails on a step that is not torch's argmax within TIE_TOL."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from exporters.api import default_parity_prompts
    from exporters.parity import LlamaCppRuntime

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    rt = LlamaCppRuntime(gguf_path, threads=1)
    steps = exact = 0
    worst = 0.0
    try:
        for prompt in default_parity_prompts():
            ids = tok(prompt)["input_ids"]
            rt.llm.reset()
            rt.llm.eval(ids)
            for _ in range(n):
                ours = np.asarray(rt.llm.scores[rt.llm.n_tokens - 1])
                with torch.no_grad():
                    ref = model(torch.tensor([ids])).logits[0, -1].numpy()
                nxt = int(np.argmax(ours))
                worst = max(worst, float(np.abs(ours - ref).max()))
                assert ref.max() - ref[nxt] <= TIE_TOL, (prompt, len(ids), nxt, int(ref.argmax()))
                steps, exact = steps + 1, exact + int(nxt == int(ref.argmax()))
                ids = ids + [nxt]
                rt.llm.eval([nxt])
    finally:
        rt.close()
    return steps, exact, worst


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_gguf_greedy_equals_torch_and_quants_generate(arch, tiny, tmp_path):
    from exporters.gguf_writer import write_gguf

    src = tiny(arch)
    steps, exact, worst = _greedy_steps(write_gguf(src, tmp_path / "f16.gguf", "f16").path, src)
    assert steps == 3 * 16 and exact >= steps - 2 and worst <= TIE_TOL / 2
    for quant, kind in (("q8_0", "Q8_0"), ("q4_k_m", "Q4_K")):
        q = export_model(src, tmp_path / f"gguf-{quant}", "gguf", quant, threads=1, check_transformers=False)
        m = _manifest(q)
        assert kind in m["parity"]["gguf_readback"]["types"]
        assert m["parity"]["tokenizer_llama_cpp"]["mismatches"] == 0
        assert 0.0 <= m["parity"]["greedy"]["token_agreement"] <= 1.0
        assert _completion_tokens(q / m["model_file"], "Question: 2 + 3?\nSolution: ") >= 1


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("arch", [a for a in TINY_ARCHS if "onnx" in ARCHS[a].exports])
def test_onnx_fp32_greedy_equals_torch(arch, tiny, tmp_path):
    pytest.importorskip("onnxruntime_genai")
    pkg = export_model(tiny(arch), tmp_path / "onnx-fp32", "onnx", "fp32", threads=1)
    greedy = _manifest(pkg)["parity"]["greedy"]
    assert greedy["identical_prompts"] == greedy["n_prompts"] == 3
    assert greedy["token_agreement"] == 1.0 and greedy["tokens_compared"] >= 3 * 8


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_every_architecture_exports_to_onnx():
    # Gemma 3 too: exporters/onnx_builder.py flattens transformers 5's per-layer-type rope for the builder
    assert [a for a in TINY_ARCHS if "onnx" not in ARCHS[a].exports] == []


def test_gemma3_rope_is_flattened_for_the_builder(tiny):
    from transformers import AutoConfig

    from exporters.onnx_builder import flatten_gemma3_rope

    config = AutoConfig.from_pretrained(tiny("gemma3_text"))
    full, local = (config.rope_parameters[k]["rope_theta"] for k in ("full_attention", "sliding_attention"))
    assert full != local  # the tiny model has distinct global/local rope bases, so greedy parity checks both
    flatten_gemma3_rope(config)
    assert config.rope_parameters["rope_type"] == "default"
    assert (config.rope_theta, config.rope_local_base_freq) == (full, local)


def test_onnx_refuses_gemma3_with_scaled_rope(tiny, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny("gemma3_text"), src)
    cfg = json.loads((src / "config.json").read_text())  # gemma-3-4b's global rope: linear, factor 8
    cfg["rope_parameters"]["full_attention"] = {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match=r"config.json: Gemma 3 rope \{'full_attention': 'linear'\}.*GGUF"):
        export_model(src, tmp_path / "out" / "onnx-fp32", "onnx", "fp32")
    assert _leftovers(tmp_path / "out") == []


def test_onnx_refuses_phi3_whose_fused_qkv_is_as_wide_as_the_vocabulary(tiny, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny("phi3"), src)
    cfg = json.loads((src / "config.json").read_text())  # 4 heads of 64 + 2 * 2 kv heads = 512 = vocab_size
    (src / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 2}))
    with pytest.raises(ExportError, match="vocab_size 512 equals fused qkv_proj width"):
        export_model(src, tmp_path / "out" / "onnx-fp32", "onnx", "fp32")
    assert _leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("fmt, quant", [("gguf", "f16"), ("onnx", "fp32")])
def test_unknown_architecture_gets_one_message_listing_the_supported(fmt, quant, tiny, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny("llama"), src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt_neox"}))
    with pytest.raises(ExportError) as err:
        export_model(src, tmp_path / "out" / f"{fmt}-{quant}", fmt, quant)
    msg = str(err.value)
    assert "'gpt_neox'" in msg and f"not supported for {fmt.upper()}" in msg
    for a in ARCHS.values():
        assert a.hf_class in msg
    assert _leftovers(tmp_path / "out") == []


def test_missing_converter_is_a_clear_error(tiny, tmp_path, monkeypatch):
    from exporters.gguf_writer import write_gguf

    monkeypatch.setenv("EDGE_DISTILL_LLAMA_CONVERTER", str(tmp_path / "nowhere"))
    with pytest.raises(ExportError, match="converter is not at .*nowhere.*scripts/setup.sh"):
        write_gguf(tiny("phi3"), tmp_path / "m.gguf", "f16")
    assert not (tmp_path / "m.gguf").exists()
