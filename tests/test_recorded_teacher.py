"""Recorded teacher: GSM8K CoT/L2M/PoT conversions (PoT checked in the sandbox) and JSONL replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_distill.answers import answers_match
from edge_distill.data import load_problems
from edge_distill.errors import DataError
from edge_distill.sandbox import run_programs
from edge_distill.strategies import has_subquestions, parse_teacher_completion, split_final_answer
from edge_distill.teachers.base import Completion, Teacher
from edge_distill.teachers.recorded import RecordedTeacher, pot_from_annotations
from edge_distill.types import Problem, Strategy

S = Strategy


@pytest.fixture(scope="module")
def sample() -> list[Problem]:
    return load_problems("builtin:gsm8k-sample")


def test_is_a_teacher() -> None:
    assert isinstance(RecordedTeacher(), Teacher)
    assert RecordedTeacher().name == "recorded:builtin:gsm8k"


def test_cot_and_l2m_from_gold(sample: list[Problem]) -> None:
    t = RecordedTeacher()
    cot = t.generate(sample[:1], S.COT, 1)[0][0]
    assert cot == Completion(
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
        "The answer is 72."
    )
    l2m = t.generate(sample[:1], S.L2M, 1)[0][0].text
    assert l2m == (
        "Sub-question 1: How many clips did Natalia sell in May? Answer 1: Natalia sold 48/2 = 24 clips in May.\n"
        "Sub-question 2: How many clips did Natalia sell altogether in April and May? Answer 2: Natalia sold "
        "48+24 = 72 clips altogether in April and May.\nThe answer is 72."
    )
    for strategy in (S.COT, S.L2M):
        for p, [c] in zip(sample, t.generate(sample, strategy, 3), strict=True):
            rationale, pred = split_final_answer(parse_teacher_completion(strategy, c.text))
            assert pred == p.answer and "<<" not in rationale
            assert strategy is S.COT or has_subquestions(rationale)


def test_pot_program_shape() -> None:
    solution = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    )
    assert pot_from_annotations(solution, "72") == (
        "# Natalia sold 48/2 = 24 clips in May.\nstep_1 = 48 / 2\n"
        "# Natalia sold 48+24 = 72 clips.\nstep_2 = 48 + step_1\nanswer = step_2"
    )


@pytest.mark.parametrize(
    ("solution", "gold"),
    [
        # the final step is plain prose arithmetic without an annotation
        (
            "5*8 = <<5*8=40>>40 hours.\nThen 10*3 = <<10*3=30>>30 hours.\nAll took 30+40 = 70 hours.\n#### 70",
            "70",
        ),
        # a percentage answer stated with %
        ("There are 6 - 2 = <<6-2=4>>4 birds.\n6 monkeys / 10 animals * 100% = 60%\n#### 60", "60"),
        # an algebra solution without any annotation
        (
            "Let x be the area. So 4 * x + 600 = 10000.\nSubtracting, 4 * x = 9400\nSo x = 2350.\n#### 2350",
            "2350",
        ),
        # the gold is an earlier step, not the last
        ("He has 2*3 = <<2*3=6>>6.\nCheck 6-1 = <<6-1=5>>5 left over.\n#### 6", "6"),
        # the gold is the last result rounded up
        ("He needs 15/2 = <<15/2=7.5>>7.5 cans, so 8 cans.\n#### 8", "8"),
    ],
)
def test_pot_handles_harder_solutions(solution: str, gold: str) -> None:
    program = pot_from_annotations(solution, gold)
    assert program is not None
    [res] = run_programs([program])
    assert res.ok and answers_match(res.answer, gold), (program, res)


def test_pot_without_any_calculation() -> None:
    assert pot_from_annotations("She has five.\n#### 5", "5") is None
    c = RecordedTeacher().generate([Problem("p", "Q?", "5", "She has five.\n#### 5")], S.POT, 1)[0][0]
    assert c.finish_reason == "error" and "no calculation" in (c.error or "")


def _reproduced(problems: list[Problem]) -> float:
    completions = RecordedTeacher().generate(problems, S.POT, 1)
    idx = [i for i, [c] in enumerate(completions) if c.finish_reason == "stop"]
    results = run_programs([completions[i][0].text for i in idx], timeout_s=5.0)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]  # every program runs
    return sum(answers_match(r.answer, problems[i].answer) for i, r in zip(idx, results, strict=True)) / len(
        problems
    )


def test_pot_reproduces_gold_on_the_shipped_sample(sample: list[Problem]) -> None:
    # 98.7 % on this 1000-problem sample; the full-train figure is the slow test below.
    assert _reproduced(sample) >= 0.985


@pytest.mark.slow
def test_pot_reproduces_gold_on_full_gsm8k_train() -> None:
    """The acceptance number: >= 99 % of GSM8K train (benchmarks/pot_from_annotations.py prints it)."""
    path = Path("/work/shared/datasets/gsm8k/train.jsonl")
    if not path.is_file():
        pytest.skip(f"{path} not available")
    assert _reproduced(load_problems(path, socratic=None)) >= 0.99


def test_missing_inputs_are_error_completions() -> None:
    bare = Problem("p1", "Q?", "3")  # no solution, no socratic
    for strategy in S:
        [[c]] = RecordedTeacher().generate([bare], strategy, 1)
        assert c.finish_reason == "error" and "p1" in (c.error or "")


def test_jsonl_replay(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    rows = [
        {"id": "p1", "strategy": "cot", "rationale": "1+1 = 2\nThe answer is 2."},
        {"id": "p1", "strategy": "cot", "rationale": "second sample\nThe answer is 2."},
        {"question": "What is 3+4?", "strategy": "POT", "rationale": "answer = 3 + 4"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    t = RecordedTeacher(path)
    problems = [Problem("p1", "What is 1+1?", "2"), Problem("p2", "What is 3+4?", "7")]
    cot = t.generate(problems, S.COT, 5)
    assert [c.text for c in cot[0]] == [rows[0]["rationale"], rows[1]["rationale"]]
    assert cot[1][0].finish_reason == "error" and "p2" in (cot[1][0].error or "")
    assert [c.text for c in t.generate(problems, S.COT, 1)[0]] == [rows[0]["rationale"]]  # at most k
    assert t.generate(problems, S.POT, 1)[1][0].text == "answer = 3 + 4"  # matched by question text


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "p", "strategy": "sql", "rationale": "x"}',
        '{"strategy": "cot", "rationale": "x"}',
        "{bad json",
    ],
)
def test_jsonl_replay_errors(tmp_path: Path, line: str) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text('{"id": "p", "strategy": "cot", "rationale": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"{path}:2:"):
        RecordedTeacher(path)
    with pytest.raises(DataError, match="not found"):
        RecordedTeacher(tmp_path / "missing.jsonl")
