"""SIKeD iterations (edge_distill.methods.siked / loop): records add up, resume, dev-only selection.

Fast tests use stand-in stage functions and a scripted sampler (no torch); the end-to-end test at the
bottom trains the tiny random Llama through the pipeline's own train/eval functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_distill.config import SikedConfig
from edge_distill.methods import MethodInputs, Stages, should_stop
from edge_distill.methods.loop import MethodOptions, run_methods
from edge_distill.methods.sampling import SamplingParams
from edge_distill.methods.siked import run_siked
from edge_distill.types import Problem, Sample, Strategy

N = 6
PROBLEMS = [
    Problem(f"p{i}", f"Tom has {i} apples and buys {i + 1} more. How many now?", str(2 * i + 1))
    for i in range(N)
]
DEV = [Problem(f"d{i}", f"Ann has {i} pens and finds {i} more. How many pens?", str(2 * i)) for i in range(3)]
TEACHER = [
    Sample(p.id, p.question, p.answer, s, r, correct=True, source="teacher")
    for p in PROBLEMS
    for s, r in (
        (Strategy.COT, f"{p.answer} in total."),
        (Strategy.L2M, "Sub-question 1: how many? Answer 1: some."),
    )
]


class ScriptedSampler:
    """Solves problem i with CoT when i is even, with L2M (real sub-questions) when i % 3 == 0, else wrong."""

    name = "scripted"

    def __init__(self, calls: list[str]):
        self.calls = calls

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        self.calls.append("sample")
        out = []
        for prompt in prompts:
            p = next((p for p in PROBLEMS if p.question in prompt), None)
            if p is None:  # a problem FDD added: never solved
                out.append(["[cot]: no idea.\nThe answer is -7."] * params.n)
                continue
            i = int(p.id[1:])
            texts = []
            if i % 2 == 0:
                texts.append(f"[cot]: add them.\nThe answer is {p.answer}.")
            if i % 3 == 0:
                texts.append(
                    f"[l2m]: Sub-question 1: how many? Answer 1: {p.answer}.\nThe answer is {p.answer}."
                )
            texts.append("[pot]: answer = -1")
            texts.append("no tag at all. The answer is 0.")
            out.append((texts * params.n)[: params.n])
        return out


class FakeStages:
    """train_fn writes a directory; eval_fn returns scripted accuracies; both count their calls."""

    def __init__(self, accuracies: list[float], fail_on_train: int | None = None):
        self.accuracies, self.fail_on_train = accuracies, fail_on_train
        self.trained: list[tuple[int, str]] = []
        self.evaluated: list[list[str]] = []

    def train(self, samples: list[Sample], base: Path, out_dir: Path) -> Path:
        if self.fail_on_train is not None and len(self.trained) == self.fail_on_train:
            self.fail_on_train = None
            raise KeyboardInterrupt("killed mid-iteration")
        self.trained.append((len(samples), str(base)))
        model = out_dir / "final"
        model.mkdir(parents=True, exist_ok=True)
        (model / "config.json").write_text("{}")
        return model

    def evaluate(self, model: Path, problems: list[Problem], out_dir: Path) -> dict:
        self.evaluated.append([p.id for p in problems])
        acc = self.accuracies[min(len(self.evaluated) - 1, len(self.accuracies) - 1)]
        return {"accuracy": acc, "n": len(problems), "per_strategy": {"cot": {"accuracy": acc, "n": 2}}}

    def stages(self) -> Stages:
        return Stages(train=self.train, evaluate=self.evaluate)


def _run(
    tmp_path: Path, fake: FakeStages, calls: list[str], rule: str = "adaptive", iterations: int = 2,
    patience: int = 0,
):  # fmt: skip
    params = SikedConfig(iterations=iterations, mixing=rule, samples_per_question=4, patience=patience)
    return run_siked(tmp_path, _inputs(tmp_path, fake, calls), params)


def _inputs(tmp_path: Path, fake: FakeStages, calls: list[str]) -> MethodInputs:
    return MethodInputs(
        train_problems=PROBLEMS,
        dev_problems=DEV,
        teacher_samples=TEACHER,
        base_model=tmp_path / "base",
        stages=fake.stages(),
        sampler_factory=lambda model: ScriptedSampler(calls),
    )


@pytest.mark.parametrize("rule", ["adaptive", "all", "standard", "teacher"])
def test_iteration_records_add_up_for_each_mixing_rule(tmp_path, rule):
    fake, calls = FakeStages([0.2, 0.5]), []
    result = _run(tmp_path, fake, calls, rule)
    assert [r["iteration"] for r in result.records] == [0, 1]
    # records store the model relative to the method's directory (a copied run finds its own)
    assert result.best == 1 and result.model == tmp_path / result.records[1]["model"]
    r0, r1 = (json.loads((tmp_path / f"iter_{k}" / "record.json").read_text()) for k in (0, 1))
    assert r0["alpha"] == 1.0 and r0["train_size"] == len(TEACHER)
    train = [json.loads(line) for line in (tmp_path / "iter_1" / "train.jsonl").read_text().splitlines()]
    by_source = r1["composition"]["by_source"]
    assert sum(by_source.values()) == r1["train_size"] == len(train) == fake.trained[1][0]
    assert r1["alpha"] == pytest.approx(by_source.get("teacher", 0) / len(train))
    # student solved p0,p2,p4 with CoT and p0,p3 with L2M; one sample per question
    assert len({t["problem_id"] for t in train}) == len(train)
    solved = {"p0", "p2", "p3", "p4"}
    if rule == "standard":
        assert {t["problem_id"] for t in train} == solved and r1["alpha"] == 0.0
    if rule == "teacher":  # the control: the teacher's data again, the student never sampled
        assert calls == [] and r1["student_samples"] == 0 and r1["student_strategy_mix"] == {}
        assert len(train) == N and r1["alpha"] == 1.0 and {t["source"] for t in train} == {"teacher"}
        assert {t["strategy"] for t in train} == {"cot"}  # one per question by priority, as for SIKeD's rules
    elif rule != "standard":
        assert len(train) == N
        student_ids = {t["problem_id"] for t in train if t["source"] == "student"}
        # CoT outranks L2M: the student's CoT wins (over the teacher's on a tie), but p3, which the student
        # solved with L2M only, gets the teacher's CoT
        assert student_ids == {"p0", "p2", "p4"}
        assert {(t["problem_id"], t["source"], t["strategy"]) for t in train if t["problem_id"] == "p3"} == {
            ("p3", "teacher", "cot")
        }
    if rule != "teacher":
        assert set(r1["student_strategy_mix"]) == {"cot", "l2m", "pot", "none"}
        assert sum(r1["student_strategy_mix"].values()) == pytest.approx(1.0)
    assert r1["dev"]["per_strategy"] == {"cot": 0.5}
    # iteration 1 starts from iteration 0's model; only dev problems were ever evaluated
    assert Path(fake.trained[1][1]) == tmp_path / r0["model"]
    assert all(ids == [p.id for p in DEV] for ids in fake.evaluated)


def test_resume_after_kill_mid_iteration_redoes_nothing_finished(tmp_path):
    calls: list[str] = []
    fake = FakeStages([0.2, 0.5, 0.6], fail_on_train=1)  # dies while training iteration 1
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, fake, calls, iterations=3)
    assert (tmp_path / "iter_0" / "record.json").is_file() and not (
        tmp_path / "iter_1" / "record.json"
    ).exists()
    assert calls == ["sample"] and len(fake.trained) == 1
    result = _run(tmp_path, fake, calls, iterations=3)
    assert len(fake.trained) == 3  # iteration 0 not retrained; 1 and 2 trained once each
    assert calls == ["sample", "sample"]  # iteration 1's student samples were reused, iteration 2 sampled
    assert [r["iteration"] for r in result.records] == [0, 1, 2]
    # a third call finds everything finished: no training, no sampling, no eval
    n_eval = len(fake.evaluated)
    _run(tmp_path, fake, calls, iterations=3)
    assert len(fake.trained) == 3 and calls == ["sample", "sample"] and len(fake.evaluated) == n_eval


def test_patience_stops_and_the_best_iteration_on_dev_is_the_result(tmp_path):
    fake, calls = FakeStages([0.3, 0.5, 0.4, 0.45, 0.9]), []
    result = _run(tmp_path, fake, calls, iterations=5, patience=2)
    assert len(result.records) == 4 and result.best == 1
    assert not (tmp_path / "iter_4").exists()


def test_should_stop():
    assert not should_stop([0.1, 0.2, 0.1], 0)
    assert should_stop([0.1, 0.2, 0.1], 1)
    assert not should_stop([0.1, 0.2, 0.1], 2)
    assert should_stop([0.1, 0.2, 0.1, 0.2], 2)
    assert not should_stop([0.1], 1)


def test_run_methods_writes_summary_report_and_plots(tmp_path):
    fake, calls = FakeStages([0.2, 0.5]), []
    options = MethodOptions(siked=SikedConfig(iterations=2, samples_per_question=2))
    summary = run_methods(["siked"], tmp_path, _inputs(tmp_path, fake, calls), options)
    assert summary["model"].endswith("iter_1/train/final") and summary["dev_accuracy"] == 0.5
    pngs = sorted(p.name for p in (tmp_path / "methods").glob("*.png"))
    assert pngs == [
        "siked_alpha.png",
        "siked_composition.png",
        "siked_dev_accuracy.png",
        "siked_strategy_mix.png",
    ]
    assert all((tmp_path / "methods" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    md = (tmp_path / "methods" / "methods.md").read_text()
    assert "| 1 **best** | 0.500 |" in md and "siked_alpha.png" in md
    written = json.loads((tmp_path / "methods" / "summary.json").read_text())["siked"]
    assert written["best"] == 1 and written["step_dirs"] == [
        "iter_0",
        "iter_1",
    ]  # relative: what the report reads


# ---------------------------------------------------------------------------------------------- end to end
def tiny_run(tmp_path: Path, tiny_model_dir: Path, methods: list[str], **sections):
    """A run directory through the pipeline's data/teach/filter stages (recorded teacher), tiny student."""
    from edge_distill import pipeline
    from edge_distill.config import config_from_dict
    from edge_distill.rundir import RunDir

    test_file = tmp_path / "test.jsonl"  # poisoned: every gold answer is wrong
    test_file.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "#### 3"}) + "\n")
    data = {
        "name": "r",
        "runs_dir": str(tmp_path),
        "methods": methods,
        "student": {"model": str(tiny_model_dir)},
        "data": {"test": str(test_file), "dev_size": 3, "limit_train": 4},
        "teacher": {"cache": str(tmp_path / "teacher.sqlite")},
        "train": {"max_steps": 1, "batch_size": 4, "max_length": 512, "save_steps": 1},
        "eval": {"max_new_tokens": 12, "batch_size": 8},
        "siked": {"iterations": 2, "samples_per_question": 2, "max_new_tokens": 12, "patience": 0},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    cfg = config_from_dict(data)
    run = RunDir(cfg, resume=True)
    for name in ("data", "teach", "filter"):
        if not run.done(name):
            run.mark_done(name, 0.0, getattr(pipeline, f"stage_{name}")(cfg, run))
    run.release()  # setup done: a test's own subprocess may open this run directory next
    return cfg, run


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["adaptive", "all", "standard", "teacher"])
def test_end_to_end_two_iterations_select_on_dev_only(tmp_path, tiny_model_dir, monkeypatch, rule):
    from edge_distill import pipeline, stages
    from edge_distill.methods.loop import run_methods_from_config

    cfg, run = tiny_run(tmp_path, tiny_model_dir, ["siked"], siked={"mixing": rule})
    test_reads, evaluated = [], []
    real_load_test, real_eval = stages.load_test, stages.evaluate_student
    monkeypatch.setattr(stages, "load_test", lambda d: test_reads.append(1) or real_load_test(d))
    monkeypatch.setattr(
        stages,
        "evaluate_student",
        lambda e, t, m, problems, o, split, judging: (
            evaluated.append(([p.id for p in problems], split))
            or real_eval(e, t, m, problems, o, split, judging)
        ),
    )
    summary = run_methods_from_config(cfg, run)
    dev_ids = [p.id for p in stages.load_split(run, "dev")]
    assert test_reads == [] and evaluated == [(dev_ids, "dev")] * 2  # selection saw dev only
    for k in (0, 1):
        rec = json.loads((run.path / f"iter_{k}" / "record.json").read_text())
        assert sum(rec["composition"]["by_source"].values()) == rec["train_size"]
        n_llm = rec["composition"]["by_source"].get("teacher", 0)
        assert rec["alpha"] == (n_llm / rec["train_size"] if rec["train_size"] else None)
        assert rec["dev"]["n"] == len(dev_ids)
    rec1 = json.loads((run.path / "iter_1" / "record.json").read_text())
    assert rec1["rule"] == rule
    assert (rec1["sampler"] == {}) if rule == "teacher" else (rec1["sampler"]["samples"] == 2 * 4)
    assert summary["model"] in {
        str(run.path / json.loads((run.path / f"iter_{k}" / "record.json").read_text())["model"])
        for k in (0, 1)
    }
    # the summary names the best step's directory: the final eval reuses its dev eval, nothing decodes names
    best_dir = Path(summary["best_dir"])
    assert str(run.path / json.loads((best_dir / "record.json").read_text())["model"]) == summary["model"]
    assert Path(summary["best_eval"]) == best_dir / "eval"
    # the final eval, after all selection, is the one place that reads the test split
    run.mark_done("methods", 0.0, summary)
    cfg.eval.final_test = True
    final = pipeline.stage_eval(cfg, run)
    assert test_reads == [1] and final["test"]["n"] == 1 and final["test"]["accuracy"] == 0.0
    # dev reused from the best step; the untrained baseline on the same dev and test problems
    assert [split for _, split in evaluated] == ["dev", "dev", "test", "baseline_dev", "baseline_test"]
    assert evaluated[3][0] == evaluated[0][0] and evaluated[4][0] == evaluated[2][0]


_KILL_SCRIPT = """
import sys
from pathlib import Path
from tests.test_siked import tiny_run
from edge_distill.methods.loop import run_methods_from_config
cfg, run = tiny_run(Path(sys.argv[1]), Path(sys.argv[2]), ["siked"])
run_methods_from_config(cfg, run)
"""


@pytest.mark.slow
def test_end_to_end_kill_mid_iteration_then_resume(tmp_path, tiny_model_dir, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time

    from edge_distill import stages
    from edge_distill.methods.loop import run_methods_from_config

    cfg, run = tiny_run(tmp_path, tiny_model_dir, ["siked"])
    marker = run.path / "iter_1" / "train.jsonl"  # iteration 1 has sampled and mixed: it is training now
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path), str(tiny_model_dir)],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (run.path / "iter_1" / "record.json").exists()
    finished = {
        p: p.stat().st_mtime_ns
        for p in (run.path / "iter_0" / "record.json", run.path / "iter_1" / "student_samples.jsonl")
    }
    trained = []
    real_train = stages.train_student
    monkeypatch.setattr(stages, "train_student", lambda *a, **k: trained.append(a[3]) or real_train(*a, **k))
    monkeypatch.setattr("edge_distill.methods.siked.sample_student", lambda *a, **k: pytest.fail("resampled"))
    run_methods_from_config(cfg, run)
    assert trained == [run.path / "iter_1" / "train"]  # iteration 0 untouched, iteration 1 finished
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert json.loads((run.path / "iter_1" / "record.json").read_text())["iteration"] == 1
