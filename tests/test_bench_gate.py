"""Bench logic without a runtime: accuracy arithmetic, gates, estimates, detection, report outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_profiles import accuracy, estimate, gate, load_profile
from device_profiles.bandwidth import HostHardware
from device_profiles.bench import BenchReport
from device_profiles.loader import Budget
from device_profiles.package import Package
from device_profiles.report import write_outputs
from device_profiles.worker import RuntimeMeasurement, Spread
from edge_distill.types import Problem, Strategy

PROBLEMS = [Problem(f"p{i}", f"q{i}?", gold) for i, gold in enumerate(["5", "8", "42", "1"])]
COMPLETIONS = [
    "[cot]: 2 + 3 = 5\nThe answer is 5.",
    "[l2m]: Sub-question 1: what? Answer 1: 7.\nThe answer is 7.",
    "[pot]: answer = 6 * 7",
    "no idea",
]
HOST = HostHardware(
    "test cpu", "x86_64", 2, 16.0, bandwidth_gbs=10.0, compute_gflops=100.0, threads=2, method="t"
)


def _measurement(decode: float = 50.0, prefill: float = 500.0, ttft: float = 0.2) -> RuntimeMeasurement:
    return RuntimeMeasurement(
        "llama.cpp", "m.gguf", 2, 0.1, 0.1, 100, 64, 3, Spread.of([ttft] * 3), Spread.of([prefill] * 3),
        Spread.of([decode * 0.9, decode, decode * 1.1]), peak_rss_mb=300.0, baseline_rss_mb=30.0,
    )  # fmt: skip


def test_accuracy_arithmetic_with_known_outputs():
    r = accuracy.score(COMPLETIONS, PROBLEMS, source_accuracy=(0.75, 100))
    from edge_distill.stats import wilson_ci

    assert (r.n, r.correct, r.accuracy) == (4, 2, 0.5)
    assert (r.ci_low, r.ci_high) == pytest.approx(wilson_ci(2, 4))
    assert r.drop == pytest.approx(0.25)
    # eval's scorer and summary shape: an untagged output counts under "none", judged as prose
    assert {k: (v["n"], v["correct"]) for k, v in r.per_strategy.items()} == {
        "cot": (1, 1),
        "l2m": (1, 0),
        "none": (1, 0),
        "pot": (1, 1),
    }
    from edge_distill.eval import score as eval_score

    assert r.per_strategy == eval_score(PROBLEMS, COMPLETIONS).per_strategy
    assert [p["correct"] for p in r.predictions] == [True, False, True, False]
    assert r.summary()["ci95"] == [r.ci_low, r.ci_high]
    assert accuracy.score(COMPLETIONS, PROBLEMS).drop is None


def test_forced_strategy_and_packaged_prompt(monkeypatch, tmp_path):
    template = {"student_prompt": "Q: {question}\nA: ", "forced_strategy_suffix": "<{strategy}> "}
    manifest = {
        "format": "gguf",
        "runtime": "llama.cpp",
        "files": {},
        "source_accuracy": {"dev": 0.5, "n": 10},
    }
    pkg = Package(tmp_path, manifest, template, tmp_path / "m.gguf")
    seen: dict[str, list[str]] = {}

    def fake_generate(runtime, model_path, threads, prompts, *, max_new_tokens, stop_at_answer):
        seen["prompts"] = prompts
        return ["answer = 5", "answer = 2"]

    monkeypatch.setattr("device_profiles.worker.generate", fake_generate)
    r = accuracy.run_accuracy(pkg, 2, PROBLEMS[:2], strategy=Strategy.POT)
    assert seen["prompts"] == ["Q: q0?\nA: <pot> ", "Q: q1?\nA: <pot> "]
    # the manifest's dev accuracy came from other problems: no drop without the source on these ones
    assert (r.correct, r.n, r.source_accuracy, r.drop) == (1, 2, None, None)
    source = {"p0": True, "p1": True, "p2": False}
    r = accuracy.run_accuracy(pkg, 2, PROBLEMS[:2], strategy=Strategy.POT, source_correct=source)
    assert (r.correct, r.n, r.source_accuracy, r.source_n, r.drop) == (1, 2, 1.0, 2, 0.5)
    # the source judged on only some of the problems: still no comparison
    r = accuracy.run_accuracy(pkg, 2, PROBLEMS[1:3], source_correct={"p1": True})
    assert r.source_accuracy is None


def test_accuracy_pass_uses_the_strategy_the_package_was_exported_with(monkeypatch, tmp_path):
    """A package exported with eval.strategy=cot is benched with the forced tag, like its source accuracy
    was measured; an explicit strategy still wins."""
    template = {
        "student_prompt": "Q: {question}\nA: ",
        "forced_strategy_suffix": "[{strategy}]: ",
        "strategy": "cot",
    }
    manifest = {"format": "gguf", "runtime": "llama.cpp", "files": {}}
    pkg = Package(tmp_path, manifest, template, tmp_path / "m.gguf")
    seen: list[list[str]] = []

    def fake_generate(runtime, model_path, threads, prompts, *, max_new_tokens, stop_at_answer):
        seen.append(prompts)
        return ["2 + 3 = 5.\nThe answer is 5.", "answer = 2"][: len(prompts)]

    monkeypatch.setattr("device_profiles.worker.generate", fake_generate)
    r = accuracy.run_accuracy(pkg, 2, [Problem("a", "q0?", "5"), Problem("b", "q1?", "2")])
    assert pkg.strategy is Strategy.COT and seen[0] == ["Q: q0?\nA: [cot]: ", "Q: q1?\nA: [cot]: "]
    assert [p["strategy"] for p in r.predictions] == ["cot", "cot"]  # judged as the forced strategy
    accuracy.run_accuracy(pkg, 2, [Problem("b", "q1?", "2")], strategy=Strategy.POT)
    assert seen[-1] == ["Q: q1?\nA: [pot]: "]
    assert Package(tmp_path, manifest, {**template, "strategy": "auto"}, pkg.model_path).strategy is None


def test_accuracy_pass_decodes_a_cascod_package_in_two_stages(monkeypatch, tmp_path):
    """The bench decodes as the package's prompt_template.json says, like eval does (fake runtime: the
    orchestration is under test; test_bench_runtime runs real llama.cpp)."""
    from edge_distill.decoding import two_stage

    template = {"student_prompt": "Q: {question}\nA: ", "decoding": two_stage("The answer is")}
    manifest = {"format": "gguf", "runtime": "llama.cpp", "files": {}}
    pkg = Package(tmp_path, manifest, template, tmp_path / "m.gguf")
    calls: list[tuple[list[str], int, bool]] = []

    def fake_generate(runtime, model_path, threads, prompts, *, max_new_tokens, stop_at_answer):
        calls.append((prompts, max_new_tokens, stop_at_answer))
        return ["[cot]: 2 + 3 = 5.", "[pot]: answer = 2"] if len(calls) == 1 else [" 5."]

    monkeypatch.setattr("device_profiles.worker.generate", fake_generate)
    r = accuracy.run_accuracy(pkg, 2, [Problem("a", "q0?", "5"), Problem("b", "q1?", "2")])
    # PoT needs no answer step; both stages stop at a complete answer, as the package's decoding says
    assert calls[1] == (["Q: q0?\nA: [cot]: 2 + 3 = 5.\nThe answer is"], 24, True) and calls[0][2] is True
    assert r.predictions[0]["raw"] == "[cot]: 2 + 3 = 5.\nThe answer is 5." and r.correct == 2
    legacy = Package(
        tmp_path, manifest, {**template, "decoding": None, "cascod": {"stages": 2}}, pkg.model_path
    )
    old = Package(tmp_path, manifest, {}, pkg.model_path)  # exported before "decoding": to EOS, as then
    assert (legacy.decoding["stages"], legacy.decoding["stop_at_answer"]) == (2, False)
    assert (old.decoding["stages"], old.decoding["stop_at_answer"]) == (1, False)


def test_eval_problems_builtin_slice():
    probs = accuracy.load_eval_problems(limit=5)
    assert len(probs) == 5 and probs[0].answer == "18"  # GSM8K test[0]: Janet's ducks


def test_gate_lines():
    budget = Budget(max_package_mb=100, max_peak_rss_mb=250, min_decode_tok_s=10, max_ttft_s=None,
                    min_accuracy=0.4, max_accuracy_drop=0.1)  # fmt: skip
    fig = estimate.Figures("estimated", 50.0, 20.0, 100.0, 1.0, 300.0, 10.0, 100.0, 0.2, "n")
    acc = accuracy.AccuracyResult(4, 2, 0.5, 0.15, 0.85, 0.7, 100)
    lines = {g.name: g for g in gate.evaluate(budget, fig, acc)}
    assert {k: g.status for k, g in lines.items()} == {
        "max_package_mb": "pass", "max_peak_rss_mb": "fail", "min_decode_tok_s": "pass", "max_ttft_s": "n/a",
        "min_accuracy": "pass", "max_accuracy_drop": "fail",
    }  # fmt: skip
    assert lines["max_peak_rss_mb"].basis == "estimated" and lines["max_package_mb"].basis == "measured"
    assert not gate.passed(list(lines.values()))
    better = accuracy.AccuracyResult(4, 4, 1.0, 0.5, 1.0, 0.7, 100)  # quantized beats source: negative drop
    assert gate.evaluate(Budget(max_accuracy_drop=0.0), fig, better)[-1].status == "pass"
    assert gate.passed(gate.evaluate(Budget(), fig, None))  # nothing gated -> pass


def test_estimate_is_max_of_calibrated_memory_time_and_scaled_compute_time():
    pi = load_profile("raspberry-pi-5")
    sustained = pi.hardware.memory_bandwidth.sustained_gbs
    assert sustained is not None and sustained < pi.hardware.memory_bandwidth.gbs  # below the datasheet peak
    m = _measurement()  # 50 tok/s on a 10 GB/s host with 1e8 weight bytes: roofline 100 tok/s
    f = estimate.figures_for(pi, m, HOST, package_bytes=2**20, weight_bytes=10**8, on_target=False)
    assert f.basis == "estimated" and f.calibration == pytest.approx(0.5)
    memory_s = 1e8 / (sustained * 1e9 * 0.5)
    compute_s = (1 / 50.0) / (153.6 / 100.0)
    assert f.decode_tok_s == pytest.approx(1 / max(memory_s, compute_s))
    assert f.bound == ("memory" if memory_s > compute_s else "compute/overhead")
    assert f.prefill_tok_s == pytest.approx(500.0 * 153.6 / 100.0)
    assert f.ttft_s == pytest.approx(100 / f.prefill_tok_s + 1 / f.decode_tok_s)
    assert f.roofline_tok_s == pytest.approx(sustained * 10) and f.bandwidth_gbs == sustained
    assert f.peak_rss_mb == 300.0 and f.package_mb == 1.0
    assert any("sustained" in a and "sbc-reviews" in a for a in f.assumptions)
    assert any("calibration 0.50" in a for a in f.assumptions)
    g = estimate.figures_for(pi, m, HOST, package_bytes=2**20, weight_bytes=10**8, on_target=True)
    assert g.basis == "measured" and g.decode_tok_s == 50.0 and g.ttft_s == 0.2 and not g.assumptions
    assert g.roofline_fraction == pytest.approx(50.0 / 100.0)


def test_estimate_switches_bound_and_says_when_no_sustained_figure():
    # a fast-core, slow-memory target: memory bound; the reverse: compute/overhead bound
    d = estimate.estimate_decode(10**8, host_decode_tok_s=50.0, calibration=0.5, target_bandwidth_gbs=1.0,
                                 compute_ratio=10.0)  # fmt: skip
    assert d.bound == "memory" and d.tok_s == pytest.approx(1 / (1e8 / 0.5e9))
    d = estimate.estimate_decode(10**8, host_decode_tok_s=50.0, calibration=0.5, target_bandwidth_gbs=100.0,
                                 compute_ratio=0.5)  # fmt: skip
    assert d.bound == "compute/overhead" and d.tok_s == pytest.approx(25.0)
    # a profile without sustained_gbs falls back to its peak and says the estimate is optimistic
    pixel = load_profile("pixel-8")
    assert pixel.hardware.memory_bandwidth.sustained_gbs is None
    f = estimate.figures_for(
        pixel, _measurement(), HOST, package_bytes=1, weight_bytes=10**8, on_target=False
    )
    assert f.bandwidth_gbs == pixel.hardware.memory_bandwidth.gbs
    assert any("NO sustained figure" in a and "optimistic" in a for a in f.assumptions)


def test_calibration_fit_is_the_geometric_mean_of_ratios():
    assert estimate.calibration_factor(30.0, 10.0, 10**8) == pytest.approx(0.3)
    k = estimate.fit_calibration([(20.0, 10.0, 10**8), (80.0, 10.0, 10**8)])  # ratios 0.2 and 0.8
    assert k == pytest.approx(0.4)
    with pytest.raises(ValueError):
        estimate.fit_calibration([])


def test_runs_on_detection(monkeypatch):
    assert estimate.runs_on(load_profile("host"))
    pi = load_profile("raspberry-pi-5")
    monkeypatch.setattr(estimate.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(estimate, "device_model", lambda: "Raspberry Pi 5 Model B Rev 1.0")
    assert estimate.runs_on(pi)
    monkeypatch.setattr(estimate, "device_model", lambda: "Raspberry Pi 4 Model B")
    assert not estimate.runs_on(pi)


def _report(profile: str, on_target: bool, acc: accuracy.AccuracyResult | None) -> BenchReport:
    p = load_profile(profile)
    m = _measurement()
    f = estimate.figures_for(p, m, HOST, package_bytes=2**20, weight_bytes=10**8, on_target=on_target)
    return BenchReport("/x/gguf-q4_k_m", "gguf-q4_k_m", "gguf", "q4_k_m", p.name, p.source_file, p.format,
                       p.budget, 10**8, m, HOST, f, acc, gate.evaluate(p.budget, f, acc))  # fmt: skip


def test_report_outputs(tmp_path: Path):
    acc = accuracy.AccuracyResult(50, 1, 0.02, 0.004, 0.1, 0.04, 100)
    reports = [_report("host", True, acc), _report("pixel-8", False, acc)]
    paths = write_outputs(reports, tmp_path)
    md = paths["md"].read_text()
    assert "gguf-q4_k_m on host — PASS (MEASURED)" in md
    assert "gguf-q4_k_m on pixel-8 — FAIL (ESTIMATED)" in md  # min_accuracy 0.05 > 0.02
    assert "| min_accuracy | 0.020 | 0.050 | measured | **FAIL** |" in md
    assert "pixel-8 prefers onnx; this package is gguf" in md
    assert "assumptions of this estimate:" in md and "compute/overhead time" in md
    assert "weights: quantization not recorded" in md  # no manifest report in this synthetic package
    data = json.loads(paths["json"].read_text())
    assert data["all_passed"] is False and [r["basis"] for r in data["reports"]] == ["measured", "estimated"]
    assert data["reports"][1]["gates"][2]["basis"] == "estimated"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_states_the_packaged_quantization(tmp_path: Path):
    r = _report("raspberry-pi-5", False, None)
    r.quantization = {
        "bits_per_weight": 6.19,
        "type_mix": {"Q5_0": {"share": 0.58}, "Q8_0": {"share": 0.21}, "Q4_K": {"share": 0.21},
                     "F32": {"share": 0.0003}},
        "lm_head": {"tensor": "token_embd.weight", "type": "Q8_0", "tied_to_embedding": True},
    }  # fmt: skip
    md = write_outputs([r], tmp_path)["md"].read_text()
    assert "- weights q4_k_m: 6.19 bpw (Q5_0 58%, Q8_0 21%, Q4_K 21%), LM head Q8_0 (tied)" in md
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["reports"][0]["quantization"]["bits_per_weight"] == 6.19
    assert data["reports"][0]["figures"]["assumptions"] and data["reports"][0]["figures"]["bound"]


def test_bench_summary_for_the_pipeline():
    from device_profiles import bench_summary

    acc = accuracy.AccuracyResult(50, 1, 0.02, 0.004, 0.1, 0.04, 100)
    s = bench_summary([_report("host", True, acc), _report("pixel-8", False, acc)])
    assert s["all_passed"] is False
    assert s["reports"][1] == {"package": "gguf-q4_k_m", "profile": "pixel-8", "basis": "estimated", "passed": False,
                               "failed": ["min_accuracy"]}  # fmt: skip
