"""GGUF export: writer + readback, parity with torch (f16 exact), quantized load, Qwen2, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporters import ExportError, export_model, verify
from exporters.gguf_writer import detect_pre_tokenizer, write_gguf

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


@pytest.fixture(scope="module")
def f16_package(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "export" / "gguf-f16"
    return export_model(tiny_model_dir, out, "gguf", "f16", source_run="runs/t", config_digest="sha256:x",
                        source_accuracy={"dev": 0.5, "n": 10}, threads=1)  # fmt: skip


@pytest.mark.integration
def test_f16_gguf_greedy_tokens_identical_to_torch(f16_package):
    parity = _manifest(f16_package)["parity"]
    greedy = parity["greedy"]
    assert greedy["identical_prompts"] == greedy["n_prompts"] == 3
    assert greedy["token_agreement"] == 1.0 and greedy["tokens_compared"] >= 3 * 8
    assert abs(greedy["ppl_ratio"] - 1) < 1e-3
    assert parity["tokenizer_llama_cpp"]["mismatches"] == 0
    assert parity["transformers_gguf"]["tokenizer_mismatches"] == 0
    assert abs(parity["transformers_gguf"]["ppl_ratio"] - 1) < 1e-3
    assert parity["gguf_readback"]["problems"] == []
    assert verify(f16_package).ok


@pytest.mark.integration
def test_q4_k_m_gguf_loads_and_generates(tiny_model_dir, tmp_path):
    pkg = export_model(
        tiny_model_dir, tmp_path / "gguf-q4_k_m", "gguf", "q4_k_m", threads=1, check_transformers=False
    )
    m = _manifest(pkg)
    assert m["quant"] == "q4_k_m" and m["runtime"] == "llama.cpp"
    assert 0.0 <= m["parity"]["greedy"]["token_agreement"] <= 1.0
    assert "Q4_K" in m["parity"]["gguf_readback"]["types"]
    model = pkg / m["model_file"]
    llm = llama_cpp.Llama(str(model), n_ctx=256, n_threads=1, verbose=False)
    out = llm("Question: 2 + 3?\nSolution: ", max_tokens=8, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1
    llm.close()


def test_gguf_writer_reads_back_and_matches_torch_in_transformers(tiny_model_dir, tmp_path):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    summary = write_gguf(tiny_model_dir, tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert {t.name for t in reader.tensors} == set(summary.tensors)
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert "output.weight" not in summary.tensors  # tied embeddings: llama.cpp reuses token_embd
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():  # the q/k permutation round-trips exactly in f32
        assert torch.allclose(ref(ids).logits, back(ids).logits, atol=1e-4)


def _tiny_qwen2(src: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(src)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.08) if p.dim() >= 2 else None
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.integration
def test_qwen2_f16_gguf_parity(tiny_model_dir, tmp_path):
    src = _tiny_qwen2(tiny_model_dir, tmp_path / "qwen2")
    pkg = export_model(src, tmp_path / "gguf-f16", "gguf", "f16", threads=1)
    greedy = _manifest(pkg)["parity"]["greedy"]
    assert greedy["identical_prompts"] == greedy["n_prompts"]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_unsupported_architecture_is_refused_without_files(tiny_model_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="gpt_neox.*not supported.*llama.*qwen2"):
        export_model(src, tmp_path / "out" / "gguf-f16", "gguf", "f16")
    assert _leftovers(tmp_path / "out") == []


def test_missing_tokenizer_is_refused_without_files(tiny_model_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    (src / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="no tokenizer.json"):
        export_model(src, tmp_path / "out" / "gguf-f16", "gguf", "f16")
    assert _leftovers(tmp_path / "out") == []


def test_bad_quant_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ExportError, match="q4_k_m"):
        export_model(tiny_model_dir, tmp_path / "x", "gguf", "q4_km")
    with pytest.raises(ExportError, match="format"):
        export_model(tiny_model_dir, tmp_path / "x", "tflite", "int8")


def test_pre_tokenizer_detection():
    bl = {"type": "ByteLevel", "use_regex": True}
    assert detect_pre_tokenizer({"pre_tokenizer": bl}) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert (
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, bl]}})
        == "smollm"
    )
    llama3 = {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t)|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"}}
    seq = {"type": "Sequence", "pretokenizers": [llama3, {"type": "ByteLevel", "use_regex": False}]}
    assert detect_pre_tokenizer({"pre_tokenizer": seq}) == "llama-bpe"
    with pytest.raises(ExportError, match="pre-tokenizer"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})


def test_llama3_rope_factors_match_transformers():
    """llama.cpp's rope_freqs tensor = default inverse frequencies / transformers' llama3-scaled ones."""
    import numpy as np
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from exporters.gguf_writer import _llama3_rope_factors, _rope

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
    cfg = LlamaConfig(hidden_size=2048, num_attention_heads=32, rope_parameters=rope)
    theta, params = _rope(cfg)
    head_dim = 64
    factors = _llama3_rope_factors(theta, head_dim, params)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg)
    base = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    assert np.allclose(base / scaled.numpy(), factors, rtol=1e-4)


@pytest.mark.parametrize("quant", ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"])
def test_llama_cpp_quantizer_writes_each_quant(tiny_model_dir, tmp_path_factory, quant):
    import gguf

    from exporters.quantize import quantize_gguf

    f16 = tmp_path_factory.getbasetemp() / "quant-src.gguf"
    if not f16.exists():
        write_gguf(tiny_model_dir, f16, "f16")
    out = quantize_gguf(f16, tmp_path_factory.mktemp(quant) / f"m-{quant}.gguf", quant, threads=1)
    types = {t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    expected = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K", "q4_k_m": "Q4_K", "q4_0": "Q4_0"}[quant]
    assert expected in types and out.stat().st_size < f16.stat().st_size
