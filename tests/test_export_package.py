"""Package contract: manifest fields and hashes, verify() catches any change, failures leave nothing, LoRA merge."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from exporters import ExportError, ParityError, export_model, verify
from exporters.merge import prepare_full_model
from exporters.package import default_prompt_template, write_archive, write_manifest
from exporters.parity import ParityReport, enforce

MANIFEST_KEYS = {
    "format",
    "quant",
    "files",
    "source_run",
    "config_digest",
    "source_accuracy",
    "runtime",
    "created",
}


@pytest.fixture
def pkg(tmp_path) -> Path:
    p = tmp_path / "gguf-q4_k_m"
    (p / "sub").mkdir(parents=True)
    (p / "model-q4_k_m.gguf").write_bytes(bytes(range(256)) * 40)
    (p / "tokenizer.json").write_text('{"x": 1}')
    (p / "sub" / "extra.txt").write_text("hello")
    (p / "prompt_template.json").write_text(json.dumps(default_prompt_template()))  # essential for verify
    write_manifest(p, fmt="gguf", quant="q4_k_m", source_run="runs/a", config_digest="sha256:abc",
                   source_accuracy={"dev": 0.25, "n": 40})  # fmt: skip
    return p


def test_manifest_has_contract_fields_and_hashes(pkg):
    m = json.loads((pkg / "manifest.json").read_text())
    assert MANIFEST_KEYS <= set(m)
    assert m["runtime"] == "llama.cpp" and m["source_accuracy"] == {"dev": 0.25, "n": 40}
    assert set(m["files"]) == {"model-q4_k_m.gguf", "tokenizer.json", "sub/extra.txt", "prompt_template.json"}
    assert m["files"]["model-q4_k_m.gguf"]["bytes"] == 256 * 40
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())
    assert verify(pkg).ok and verify(pkg).checked == 4


def test_flipped_byte_fails_verify(pkg):
    model = pkg / "model-q4_k_m.gguf"
    data = bytearray(model.read_bytes())
    data[1000] ^= 0x01
    model.write_bytes(bytes(data))
    result = verify(pkg)
    assert not result.ok and result.problems == ["model-q4_k_m.gguf: sha256 mismatch"]


def test_missing_truncated_and_unlisted_files_fail_verify(pkg):
    (pkg / "tokenizer.json").unlink()
    (pkg / "sub" / "extra.txt").write_text("hello!")
    (pkg / "notes.txt").write_text("sneaked in")
    problems = verify(pkg).problems
    assert "tokenizer.json: missing" in problems
    assert any(p.startswith("sub/extra.txt: 6 bytes") for p in problems)
    assert "notes.txt: not in manifest" in problems
    assert not verify(pkg.parent / "nope").ok


def test_archive_contains_the_package(pkg):
    archive = write_archive(pkg)
    with tarfile.open(archive) as tar:
        assert f"{pkg.name}/manifest.json" in tar.getnames()


def test_prompt_template_carries_strategy_formats_and_decoding():
    from edge_distill.decoding import two_stage

    tpl = default_prompt_template(two_stage("The answer is"))
    assert "{question}" in tpl["student_prompt"] and tpl["strategies"] == ["cot", "l2m", "pot"]
    assert tpl["response"]["cot"].startswith(" [cot]: ") and tpl["decoding"]["stages"] == 2
    assert default_prompt_template()["decoding"] == {"stages": 1, "stop_at_answer": True}


def _report(quant: str, identical: int, ppl_ratio: float) -> ParityReport:
    return ParityReport("llama.cpp", quant, 48, identical / 3, identical, 3, 2.0, 2.0 + 0.1, ppl_ratio)


def test_parity_error_carries_numbers():
    with pytest.raises(ParityError) as e:
        enforce(_report("f16", 2, 1.0))
    assert e.value.numbers["identical_prompts"] == 2 and e.value.numbers["n_prompts"] == 3
    with pytest.raises(ParityError, match="perplexity ratio"):
        enforce(_report("q4_k_m", 0, 3.0))
    enforce(_report("q4_k_m", 0, 1.1))  # quantized: disagreement is reported, not fatal


def test_failed_parity_leaves_no_package(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    import exporters.api as api

    def boom(report, **kw):
        raise ParityError("forced", report.as_dict())

    monkeypatch.setattr(api.parity, "enforce", boom)
    out = tmp_path / "export" / "gguf-f16"
    with pytest.raises(ParityError):
        api.export_model(
            tiny_model_dir, out, "gguf", "f16", threads=1, parity_tokens=2, check_transformers=False
        )
    assert list((tmp_path / "export").iterdir()) == []


def _lora_adapter(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    return out


def test_lora_is_merged_into_full_weights(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = _lora_adapter(tiny_model_dir, tmp_path / "adapter")
    merged = prepare_full_model(adapter, tmp_path / "work")
    assert (merged / "tokenizer.json").is_file() and not (merged / "adapter_config.json").exists()
    ids = torch.tensor([[5, 17, 42, 99]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        want = PeftModel.from_pretrained(base, adapter)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)(ids).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert prepare_full_model(tiny_model_dir, tmp_path / "w2") == tiny_model_dir  # full fine-tune: no-op


def test_lora_with_absent_base_is_refused_without_files(tmp_path):
    from exporters import export_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/nowhere/base"}))
    with pytest.raises(ExportError, match="base model '/nowhere/base' is not a local model directory"):
        export_model(adapter, tmp_path / "out" / "gguf-f16", "gguf", "f16")
    assert not (tmp_path / "out").exists()


def test_run_directory_resolves_to_final_model_and_metadata(tiny_model_dir, tmp_path):
    import shutil

    from exporters import resolve_source

    run = tmp_path / "runs" / "demo"
    shutil.copytree(tiny_model_dir, run / "train" / "final")
    (run / "config.yaml").write_text("name: demo\n")
    (run / "eval").mkdir()
    (run / "eval" / "dev.json").write_text(json.dumps({"accuracy": 0.3, "n": 50}))
    model, meta = resolve_source(run)
    assert model == run / "train" / "final"
    assert meta["source_accuracy"] == {"dev": 0.3, "n": 50} and meta["config_digest"].startswith("sha256:")
    assert resolve_source(tiny_model_dir)[0] == tiny_model_dir
    with pytest.raises(ExportError, match="neither a run directory"):
        resolve_source(tmp_path)


def test_export_targets_refuses_a_bad_target_before_exporting_any(tiny_model_dir, tmp_path):
    from exporters import export_targets

    targets = [{"format": "gguf", "quant": "f16"}, {"format": "gguf", "quant": "q4_kk"}]
    with pytest.raises(ExportError, match="q4_kk"):
        export_targets(tiny_model_dir, tmp_path / "export", targets)
    assert not (tmp_path / "export").exists()


def test_unknown_format_fails_with_the_known_ones_everywhere(tiny_model_dir, tmp_path):
    """One format table: exporter, config and bench refuse a format they don't know, naming the known ones."""
    from device_profiles.package import PackageError, _model_path
    from edge_distill.config import config_from_dict
    from edge_distill.errors import ConfigError
    from exporters import FORMATS, get_format

    with pytest.raises(ExportError, match=r"'pte'.*\['gguf', 'onnx', 'executorch'\]"):
        export_model(tiny_model_dir, tmp_path / "out", "pte", "q4")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"export.targets.0.*'pte'.*gguf"):
        config_from_dict({"export": {"targets": [{"format": "pte", "quant": "q4"}]}})
    with pytest.raises(ConfigError, match=r"onnx quant 'q4_k_m'"):
        config_from_dict({"export": {"targets": [{"format": "onnx", "quant": "q4_k_m"}]}})
    with pytest.raises(PackageError, match="the bench runs gguf, onnx"):
        _model_path(tmp_path, {"format": "pte", "files": {}})
    files = ["model-q4_k_m.gguf", "tokenizer.json", "sub/genai_config.json"]
    assert _model_path(tmp_path, {"format": "gguf", "files": dict.fromkeys(files)}) == tmp_path / files[0]
    assert _model_path(tmp_path, {"format": "onnx", "files": dict.fromkeys(files)}) == tmp_path / "sub"
    for f in FORMATS.values():  # every row's named callables exist (imported lazily, so check them here)
        assert callable(f.load("writer")) and callable(f.load("check_source"))
        assert f.load("parity_runtime").__name__ and f.load("bench_session").__name__
    assert get_format("gguf").runtime == "llama.cpp" and "f16" in get_format("gguf").lossless


def test_a_new_format_row_is_all_config_profiles_and_the_bench_need(tmp_path, monkeypatch):
    """The 'new export format' recipe (docs/ARCHITECTURE.md): one row in exporters.formats, nothing else,
    is what config, profile validation and the bench's package reader consult."""
    import dataclasses

    import yaml

    from device_profiles.loader import load_profile
    from device_profiles.package import _model_path
    from edge_distill.config import config_from_dict
    from exporters import formats

    row = dataclasses.replace(
        formats.FORMATS["gguf"], name="pte", runtime="executorch", quants=("q4",), model_entry="*.pte",
        weight_suffixes=(".pte",),
    )  # fmt: skip
    monkeypatch.setitem(formats.FORMATS, "pte", row)
    cfg = config_from_dict({"export": {"targets": [{"format": "pte", "quant": "q4"}]}})
    assert cfg.export.targets[0].format == "pte"
    files = {"model.pte": {"bytes": 5}, "tokenizer.json": {"bytes": 1}}
    assert _model_path(tmp_path, {"format": "pte", "files": files}) == tmp_path / "model.pte"
    profile = yaml.safe_load(
        (Path(__file__).parents[1] / "device_profiles/profiles/pixel-8.yaml").read_text()
    )
    profile.update(format="pte", runtime="executorch")
    (tmp_path / "phone.yaml").write_text(yaml.safe_dump(profile))
    assert load_profile(tmp_path / "phone.yaml").format == "pte"
