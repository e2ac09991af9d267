"""benchmarks/gpu_evidence.py in its CPU --tiny mode: every arm runs and the report has its numbers.

This proves the script runs end to end (subprocess arms, TRL arm, sampling, bf16 vs fp32, JSON), not
any GPU number: it has not been run on a GPU by this project's CI.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_evidence.py"


def _run(tmp_path, arms, monkeypatch):
    # as `python benchmarks/gpu_evidence.py` runs it: its directory first on sys.path, for its sibling modules
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_evidence", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "evidence.json"
    report = mod.main(["--tiny", f"--arms={arms}", f"--workdir={tmp_path / 'work'}", f"--out={out}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    return report


def test_tiny_mode_trains_and_samples(tmp_path, monkeypatch):
    report = _run(tmp_path, "ours,sample", monkeypatch)
    rows = {r["arm"]: r for r in report["rows"]}
    assert not any("error" in r for r in rows.values()), rows
    assert rows["ours"]["tokens_per_s"] > 0 and rows["ours"]["peak_mem_mb"] > 0
    assert rows["sample"]["continuous_tokens"] > 0 and rows["sample"]["static_tokens"] > 0
    (summary,) = report["summary"]
    assert summary["model"] == "tiny" and "sample_speedup" in summary and "ours_tok_s" in summary
    # the trainer's GFLOP/s against the dense matmul rate measured on the same machine
    assert report["env"]["matmul_gflops"] > 0
    share = rows["ours"]["gflops_per_s"] / report["env"]["matmul_gflops"]
    assert summary["ours_matmul_share"] == round(share, 3) and 0 < share


def test_linear_flops_count_every_linear_weight_once(tmp_path, tiny_model_dir, monkeypatch):
    """4 FLOPs per Linear weight for LoRA (forward + input gradient), 6 for a full fine-tune; the tied
    LM head counts (it is a matmul), the embedding lookup does not."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_evidence", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(tiny_model_dir)
    h, i, v, layers = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i  # q, o; k, v; gate, up, down
    weights = layers * per_layer + v * h
    assert mod.linear_flops_per_token(tiny_model_dir) == 4 * weights
    assert mod.linear_flops_per_token(tiny_model_dir, trainable="full") == 6 * weights


@pytest.mark.slow
def test_tiny_mode_every_arm_including_trl(tmp_path, monkeypatch):
    report = _run(tmp_path, "ours,ours-padded,trl,precision", monkeypatch)
    rows = {r["arm"]: r for r in report["rows"]}
    assert not any("error" in r for r in rows.values()), rows
    if importlib.util.find_spec("trl") is None:
        assert "trl not installed" in rows["trl"]["skipped"]
    else:
        assert rows["trl"]["tokens_per_s"] > 0 and "ours_vs_trl" in report["summary"][0]
    prec = rows["precision"]
    assert len(prec["fp32_losses"]) == len(prec["bf16_losses"]) == 2 and prec["max_rel_diff"] < 0.05
