"""report.py's result ladder from files a run leaves: baseline, one row per SIKeD iteration / FDD round,
student, packages; each paired against the baseline on the same problems, and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_distill.io import write_jsonl
from edge_distill.report import _results_table, result_rows, write_plot


def _preds(path: Path, correct: list[bool], strategy: str = "cot") -> None:
    write_jsonl(path, [{"id": f"p{i}", "strategy": strategy, "correct": ok} for i, ok in enumerate(correct)])


def test_ladder_rows_pair_every_model_with_the_baseline(tmp_path):
    run = tmp_path
    _preds(run / "eval" / "baseline_dev_predictions.jsonl", [False] * 10)
    _preds(run / "iter_0" / "eval" / "dev_predictions.jsonl", [True] * 2 + [False] * 8)
    _preds(run / "eval" / "dev_predictions.jsonl", [True] * 6 + [False] * 4, "pot")
    _preds(run / "bench" / "gguf-q4_k_m.predictions.jsonl", [True] * 5 + [False] * 3)  # first 8 only
    (run / "methods").mkdir()
    # the steps are where the method says they are (not rebuilt from its name)
    _preds(run / "elsewhere" / "eval" / "dev_predictions.jsonl", [True] * 6 + [False] * 4, "pot")
    steps = {"best": 1, "steps": 2, "unit": "iter", "step_dirs": ["iter_0", "elsewhere"]}
    (run / "methods" / "summary.json").write_text(json.dumps({"siked": steps}))

    rows = result_rows(run)
    assert [r["label"] for r in rows] == [
        "baseline (untrained student)", "siked iter 0", "siked iter 1 (best)", "student (final)",
        "package gguf-q4_k_m",
    ]  # fmt: skip
    assert "vs_baseline" not in rows[0]
    it1 = rows[2]["vs_baseline"]
    # 6 problems only the trained model got right, none the other way: p = 2 / 2**6
    assert (it1["n"], it1["delta"], it1["second_only"], it1["first_only"]) == (10, 0.6, 6, 0)
    assert it1["mcnemar_p"] == pytest.approx(2 / 64)
    pkg = rows[4]
    assert pkg["vs_baseline"]["n"] == 8 and pkg["vs_student"]["n"] == 8
    assert pkg["vs_student"]["delta"] == pytest.approx(5 / 8 - 6 / 8)
    text = "\n".join(_results_table(rows))
    assert "+60.0 pts (n=10)" in text and "0.0312" in text and "Δ vs student" in text

    png = write_plot(rows, run / "eval" / "accuracy.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_no_baseline_means_no_deltas(tmp_path):
    _preds(tmp_path / "eval" / "dev_predictions.jsonl", [True, False])
    rows = result_rows(tmp_path)
    assert len(rows) == 1 and "vs_baseline" not in rows[0]
    assert result_rows(tmp_path, "test") == []


def test_a_summary_without_step_dirs_leaves_the_steps_out_and_says_so(tmp_path, caplog):
    _preds(tmp_path / "iter_0" / "eval" / "dev_predictions.jsonl", [True, False])
    _preds(tmp_path / "eval" / "dev_predictions.jsonl", [True, False])
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "summary.json").write_text(json.dumps({"siked": {"best": 0, "steps": 1}}))
    with caplog.at_level("WARNING"):
        rows = result_rows(tmp_path)
    assert [r["label"] for r in rows] == ["student (final)"]  # iter_0 is not guessed from the name
    assert "lists no step_dirs" in caplog.text
