"""The acceptance path of issue 12 at tiny scale, with real runtimes: a finished run (tiny Llama, LoRA,
exported to GGUF q4_k_m and ONNX int4, benched on the host) -> one `edge-distill eval --model RUN` prints
baseline vs student vs both packages on the same dev problems with CIs and paired p-values; the report
reads baseline -> student -> packages -> device gate; eval.* changes re-run eval only and mark later stages
stale; a copied run directory exports its own model from any cwd."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_distill.cli import main

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime_genai")
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _overrides(runs: Path, model: Path, **extra: object) -> list[str]:
    base = {
        "name": "tiny",
        "runs_dir": str(runs),
        "student.model": str(model),
        "data.limit_train": 8,
        "data.dev_size": 4,
        "teacher.cache": "null",
        "train.max_steps": 2,
        "train.batch_size": 4,
        "train.save_steps": 2,
        "train.lr": 3e-3,
        "eval.max_new_tokens": 12,
        "eval.batch_size": 4,
        "export.targets": "[{format: gguf, quant: q4_k_m}, {format: onnx, quant: int4}]",
        "export.parity_prompts": 1,
        "bench.profiles": "[host]",
        "bench.accuracy_limit": 4,
        "bench.repetitions": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from tests.tiny_models import build_tiny_llama

    # vocab 384: the ONNX builder mistakes a vocab equal to the MLP width for the LM head (test_export_onnx)
    model = build_tiny_llama(tmp_path_factory.mktemp("tiny-384"), vocab_size=384)
    runs = tmp_path_factory.mktemp("runs")
    res = CliRunner().invoke(main, ["run", *_overrides(runs, model)])
    assert res.exit_code == 0, res.output
    return runs / "tiny", runs, model


def _eval(args: list[str]):
    res = CliRunner().invoke(main, ["eval", *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_one_command_compares_baseline_student_and_packages(finished, tmp_path):
    run, _, _ = finished
    out = tmp_path / "cmp"
    text = _eval(["--model", str(run), "--out", str(out)])
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["baseline", "student", "gguf-q4_k_m", "onnx-int4"]
    assert {r["problems"] for r in rows} == {"dev"} and {r["n"] for r in rows} == {4}
    assert rows[0]["vs_reference"] is None
    for r in rows[1:]:
        v = r["vs_reference"]
        assert v["reference"] == "baseline" and v["n"] == 4 and 0 <= v["mcnemar_p"] <= 1
        assert v["delta"] == pytest.approx(r["accuracy"] - rows[0]["accuracy"])
        lo, hi = r["ci95"]
        assert lo <= r["accuracy"] <= hi
    # everything was recorded by the run itself (eval stage, bench): nothing evaluated twice
    assert [r["reused"] for r in rows] == [
        "eval/baseline_dev_predictions.jsonl",
        "eval/dev_predictions.jsonl",
        "bench/gguf-q4_k_m.predictions.jsonl",
        "bench/onnx-int4.predictions.jsonl",
    ]
    for label in ("baseline", "student", "gguf-q4_k_m", "onnx-int4", "McNemar p", "95% CI"):
        assert label in text

    # --fresh: every model really decodes again (torch for baseline/student, llama.cpp and ORT GenAI for
    # the packages) on two dev problems and a user file; greedy package decoding reproduces the bench's
    problems = tmp_path / "mine.jsonl"
    problems.write_text(
        json.dumps({"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "#### 7"}) + "\n"
    )
    out2 = tmp_path / "fresh"
    _eval(["--model", str(run), "--problems", "dev", "--problems", str(problems), "--limit", "2",
           "--fresh", "--out", str(out2)])  # fmt: skip
    rows = json.loads((out2 / "eval.json").read_text())["rows"]
    assert len(rows) == 8 and not any(r["reused"] for r in rows)
    assert [r["n"] for r in rows] == [2] * 4 + [1] * 4
    for pkg in ("gguf-q4_k_m", "onnx-int4"):
        fresh = [json.loads(x) for x in (out2 / f"{pkg}__dev.predictions.jsonl").read_text().splitlines()]
        bench = [json.loads(x) for x in (run / "bench" / f"{pkg}.predictions.jsonl").read_text().splitlines()]
        assert [r["raw"] for r in fresh] == [r["raw"] for r in bench[:2]]


def test_bare_model_and_package_dirs_with_first_as_reference(finished, tmp_path):
    run, _, model = finished
    out = tmp_path / "bare"
    _eval(["--model", str(model), "--model", str(run / "export" / "gguf-q4_k_m"),
           "--problems", "builtin:gsm8k-sample", "--limit", "2", "--max-new-tokens", "12", "--out", str(out)])  # fmt: skip
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["model", "package"]
    assert rows[1]["vs_reference"]["reference"] == rows[0]["model"]
    res = CliRunner().invoke(main, ["eval", "--model", str(model)])
    assert res.exit_code == 2 and "--problems is required" in res.output
    res = CliRunner().invoke(main, ["eval", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output


def test_report_reads_baseline_student_packages_gate(finished):
    run, _, _ = finished
    report = (run / "report.md").read_text()
    order = [
        report.index("## Results on dev"),
        report.index("| baseline (untrained student)"),
        report.index("| student (final)"),
        report.index("| package gguf-q4_k_m"),
        report.index("## Device budgets"),
        report.index("## Stages"),
    ]
    assert order == sorted(order)
    assert "Δ vs student" in report and "McNemar" in report
    assert (run / "eval" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the bench's source accuracy is the student's on the same problems, not a number from elsewhere
    bench = (run / "bench" / "bench.md").read_text()
    assert "on the same 4 problems" in bench


def test_copied_run_is_relocatable_and_eval_changes_mark_later_stages_stale(finished, tmp_path, monkeypatch):
    run, runs, model = finished
    for f in ["stages.json", *map(str, run.glob("export/*/manifest.json"))]:
        assert str(run) not in (run / f).read_text(), f  # stored paths are relative to the run
    copy = runs / "copy"
    shutil.copytree(run, copy)
    moved = run.with_name("tiny-moved-away")
    run.rename(moved)  # any path still pointing at the original would now fail
    try:
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(main, ["export", str(copy), "--format", "gguf", "--quant", "f16",
                                        "--parity-prompts", "1"])  # fmt: skip
        assert res.exit_code == 0, res.output
        manifest = json.loads((copy / "export" / "gguf-f16" / "manifest.json").read_text())
        pkg = copy / "export" / "gguf-f16"
        assert (pkg / manifest["source_model"]).resolve() == (copy / "train" / "final").resolve()
        assert (pkg / manifest["source_run"]).resolve() == copy.resolve()
        rows = CliRunner().invoke(main, ["eval", "--model", str(copy), "--out", str(tmp_path / "c")])
        assert rows.exit_code == 0, rows.output
    finally:
        monkeypatch.undo()
        moved.rename(run)

    # an eval.* change on the finished run: eval re-runs (no "config changed", no --overwrite), training is
    # kept, and export/bench are marked stale for the next run
    before = json.loads((run / "stages.json").read_text())
    res = CliRunner().invoke(main, ["eval", *_overrides(runs, model, **{"eval.max_new_tokens": 8})])
    assert res.exit_code == 0, res.output
    after = json.loads((run / "stages.json").read_text())
    assert after["train"] == before["train"] and after["eval"]["finished"] >= before["eval"]["finished"]
    assert json.loads((run / "eval" / "dev.json").read_text())["max_new_tokens"] == 8
    assert "eval re-ran" in after["export"]["stale"] and "eval re-ran" in after["bench"]["stale"]
    assert "stale" not in after["eval"]


def test_standalone_bench_uses_the_source_runs_dev_and_predictions(finished, tmp_path):
    run, _, _ = finished
    pkg = run / "export" / "gguf-q4_k_m"
    args = ["bench", str(pkg), "--profile", "host", "--accuracy-limit", "2", "--repetitions", "1"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b1")])
    assert res.exit_code in (0, 3), res.output
    assert "on the same 2 problems" in (tmp_path / "b1" / "bench.md").read_text()
    dev_ids = [json.loads(x)["id"] for x in (run / "data" / "dev.jsonl").read_text().splitlines()][:2]
    preds = [
        json.loads(x) for x in (tmp_path / "b1" / "gguf-q4_k_m.predictions.jsonl").read_text().splitlines()
    ]
    assert [p["id"] for p in preds] == dev_ids  # dev, never the test slice unless asked
    # a package away from its run: its dev problems are unknown, so the user must name the problems
    alone = tmp_path / "alone" / "gguf-q4_k_m"
    shutil.copytree(pkg, alone)
    res = CliRunner().invoke(main, ["bench", str(alone), "--profile", "host", "--out", str(tmp_path / "b2")])
    assert res.exit_code == 2 and "--split test" in res.output
    res = CliRunner().invoke(main, ["bench", str(alone), "--profile", "host", "--accuracy-limit", "1",
                                    "--repetitions", "1", "--split", "test", "--out", str(tmp_path / "b3")])  # fmt: skip
    assert res.exit_code in (0, 3), res.output
    assert "not measured on these problems" in (tmp_path / "b3" / "bench.md").read_text()
