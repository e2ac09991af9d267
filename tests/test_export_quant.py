"""The honest quantization report (bits/weight, type mix, LM head read back from the file), llama.cpp's log
kept out of the terminal, the teacher-forced fidelity metric and `quant: auto`, on tiny random models through
the real llama.cpp quantizer / onnxruntime-genai builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporters.errors import ExportError
from exporters.quantize import LLAMA_LOG, gguf_quant_report, onnx_quant_report, summary_line


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


@pytest.fixture(scope="module")
def odd_width_model(tmp_path_factory):
    """hidden 320 / MLP 960: not multiples of 256, like SmolLM2's 576, so llama.cpp's k-quants fall back."""
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-320"), hidden_size=320)


@pytest.fixture(scope="module")
def q4_package(odd_width_model, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from exporters import export_model

    out = tmp_path_factory.mktemp("q4") / "gguf-q4_k_m"
    return export_model(
        odd_width_model, out, "gguf", "q4_k_m", threads=1, parity_tokens=4, check_transformers=False
    )


@pytest.mark.integration
def test_gguf_report_reads_the_real_types_and_counts_every_byte(q4_package):
    import gguf

    path = q4_package / "model-q4_k_m.gguf"
    report = gguf_quant_report(path)
    tensors = gguf.GGUFReader(path).tensors
    # independent arithmetic from the GGML block sizes, not from the reader's n_bytes
    bits = 0
    for t in tensors:
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        bits += 8 * int(t.n_elements) // block * size
    assert report["params"] == sum(int(t.n_elements) for t in tensors)
    assert report["bits_per_weight"] == pytest.approx(bits / report["params"], abs=1e-3)
    assert sum(m["share"] for m in report["type_mix"].values()) == pytest.approx(1.0, abs=1e-3)
    # the width is not a multiple of 256: most weights are NOT Q4_K, and the file says so
    assert report["type_mix"].get("Q4_K", {"share": 0})["share"] < 0.5
    assert report["bits_per_weight"] > 5.0
    head = report["lm_head"]
    assert head["tensor"] == "token_embd.weight" and head["tied_to_embedding"]
    assert head["type"] == {t.name: t.tensor_type.name for t in tensors}["token_embd.weight"]
    line = summary_line("q4_k_m", report)
    assert (
        line.startswith(f"q4_k_m: {report['bits_per_weight']:.2f} bpw (")
        and f"LM head {head['type']}" in line
    )


@pytest.mark.integration
def test_manifest_and_model_card_state_the_quantization(q4_package):
    m = _manifest(q4_package)
    q = m["quantization"]
    assert q["requested"] == "q4_k_m" and q["log"] == LLAMA_LOG  # relative to the package
    assert q == {**gguf_quant_report(q4_package / "model-q4_k_m.gguf"), "requested": "q4_k_m",
                 "log": LLAMA_LOG, "summary": q["summary"], "fallback": q["fallback"]}  # fmt: skip
    import gguf

    n_tensors = len(gguf.GGUFReader(q4_package / "model-q4_k_m.gguf").tensors)
    assert (
        0 < q["fallback"]["tensors"] <= q["fallback"]["of"] == n_tensors
    )  # llama.cpp's own count, from its log
    card = (q4_package / "README.md").read_text()
    assert "## Quantization" in card and f"**{q['bits_per_weight']:.2f} bits per weight**" in card
    for typ, mix in q["type_mix"].items():
        assert f"| {typ} | {100 * mix['share']:.1f} % |" in card
    assert f"LM head: `token_embd.weight` {q['lm_head']['type']} (tied to the token embedding)" in card
    assert f"llama.cpp could not give {q['fallback']['tensors']} of {q['fallback']['of']} tensors" in card
    assert LLAMA_LOG in m["files"]  # the log is part of the package, hashed like every file
    # llama.cpp's own account agrees: "llama_model_quantize_impl: quant size = ... MiB (6.19 BPW)"
    import re

    bpw = re.search(r"quant size\s*=\s*[\d.]+ MiB \(([\d.]+) BPW\)", (q4_package / LLAMA_LOG).read_text())
    assert bpw is not None and float(bpw.group(1)) == pytest.approx(q["bits_per_weight"], abs=0.01)


@pytest.mark.integration
def test_llama_cpp_log_goes_to_the_package_not_the_terminal(odd_width_model, tmp_path, capfd):
    pytest.importorskip("llama_cpp")
    from exporters import export_model

    capfd.readouterr()
    pkg = export_model(odd_width_model, tmp_path / "gguf-q5_k_m", "gguf", "q5_k_m", threads=1, parity_tokens=2,
                       check_transformers=False)  # fmt: skip
    out, err = capfd.readouterr()
    log = (pkg / LLAMA_LOG).read_text()
    assert "llama_model_quantize" in log and "falling back to" in log  # the k-quant fallback warnings, kept
    for noise in ("llama_model_quantize", "falling back", "llama_model_loader", "converting to"):
        assert noise not in out and noise not in err


@pytest.mark.integration
def test_fidelity_is_teacher_forced_over_a_few_hundred_held_out_tokens(q4_package, tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from exporters import export_model
    from exporters.parity import fidelity_texts

    texts = fidelity_texts()
    assert all(t.startswith("Question: ") and "[cot]: " in t and "The answer is" in t for t in texts)
    fid = _manifest(q4_package)["fidelity"]
    assert fid["fidelity_tokens"] >= 200
    assert 0.0 <= fid["top1_agreement"] <= 1.0 and fid["nll_ratio"] > 0
    f16 = export_model(tiny_model_dir, tmp_path / "gguf-f16", "gguf", "f16", threads=1, parity_tokens=2,
                       check_transformers=False)  # fmt: skip
    lossless = _manifest(f16)["fidelity"]
    assert lossless["top1_agreement"] >= 0.99 and lossless["nll_ratio"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.integration
@pytest.mark.slow
def test_quant_auto_picks_the_smallest_candidate_meeting_the_threshold(odd_width_model, tmp_path):
    pytest.importorskip("llama_cpp")
    from exporters import export_model

    pkg = export_model(odd_width_model, tmp_path / "gguf-auto", "gguf", "auto", threads=1, parity_tokens=2,
                       check_transformers=False, auto_min_top1=0.0, auto_max_nll_ratio=10.0)  # fmt: skip
    m = _manifest(pkg)
    auto = m["quant_auto"]
    cands = auto["candidates"]
    assert [c["quant"] for c in cands] == ["q4_k_m", "q5_k_m", "q6_k", "q8_0"]
    assert all(c["meets_threshold"] and c["top1_agreement"] is not None for c in cands)
    smallest = min(cands, key=lambda c: c["weight_bytes"])
    assert auto["chosen"] == smallest["quant"] == m["quant"] and m["quantization"]["requested"] == "auto"
    assert m["model_file"] == f"model-{smallest['quant']}.gguf"
    # the packaged model is what the candidate measured: same bytes of weights
    assert m["quantization"]["weight_bytes"] == smallest["weight_bytes"]
    assert "`quant: auto` chose" in (pkg / "README.md").read_text()
    # a threshold nothing meets: a clear error with every candidate's numbers, and no package
    with pytest.raises(ExportError, match="no candidate meets") as e:
        export_model(odd_width_model, tmp_path / "gguf-auto2", "gguf", "auto", threads=1, parity_tokens=2,
                     check_transformers=False, auto_min_top1=1.0, auto_max_nll_ratio=1.0)  # fmt: skip
    assert "q8_0: top-1" in str(e.value)
    assert not (tmp_path / "gguf-auto2").exists()


def test_auto_is_a_quant_only_where_the_format_has_candidates():
    from edge_distill.config import ExportTarget
    from exporters.formats import get_format

    get_format("gguf").check_quant("auto")
    get_format("onnx").check_quant("auto")
    assert ExportTarget(format="gguf", quant="auto").quant == "auto"
    with pytest.raises(ExportError, match="auto"):
        get_format("gguf").check_quant("q4_k_z")  # the message lists auto among the choices


@pytest.mark.integration
@pytest.mark.slow
def test_onnx_int4_report_from_initializers(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxruntime_genai")
    from exporters.onnx_export import build_onnx

    out = build_onnx(tiny_model_dir, tmp_path / "onnx-int4", "int4", block_size=32, work_dir=tmp_path)
    r = onnx_quant_report(out / "model.onnx")
    # block 32 with an fp32 scale per block: 4 + 32/32 = 5 bits on the packed weights
    assert r["type_mix"]["int4"]["bpw"] == pytest.approx(5.0) and r["type_mix"]["int4"]["share"] > 0.99
    assert r["lm_head"]["type"] == "int4" and r["lm_head"]["tied_to_embedding"]
    # every byte of the external data file is a weight or the rotary cos/sin tables
    import onnx

    cache = sum(
        int({e.key: e.value for e in t.external_data}["length"])
        for t in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.initializer
        if t.name.endswith(("cos_cache", "sin_cache"))
    )
    assert r["weight_bytes"] + cache == (out / "model.onnx.data").stat().st_size
