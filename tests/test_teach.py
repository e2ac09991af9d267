"""teach(): every completion judged and counted by failure reason; filter_samples keeps trainable ones."""

from __future__ import annotations

import pytest

from edge_distill.data import load_problems
from edge_distill.errors import TeacherError
from edge_distill.teach import FAILURE_REASONS, filter_samples, teach
from edge_distill.teachers.base import Completion
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Problem, Sample, Strategy

S = Strategy
PROBLEMS = [
    Problem("p1", "What is 2+3?", "5"),
    Problem("p2", "What is 10-4?", "6"),
    Problem("p3", "New?", ""),
]


class ScriptedTeacher:
    """Returns fixed completions per (strategy, problem id)."""

    name = "scripted"

    def __init__(self, script: dict[tuple[Strategy, str], list[Completion]]) -> None:
        self.script = script
        self.calls: list[tuple[Strategy, int]] = []

    def generate(self, problems: list[Problem], strategy: Strategy, k: int) -> list[list[Completion]]:
        self.calls.append((strategy, k))
        return [
            self.script.get((strategy, p.id), [Completion("", "error", error="none")])[:k] for p in problems
        ]


def _script() -> dict[tuple[Strategy, str], list[Completion]]:
    return {
        (S.COT, "p1"): [
            Completion("2+3 = 5\nThe answer is 5.\n\nQuestion: junk"),  # correct, boundary cut
            Completion("2+3 = 6\nThe answer is 6."),  # wrong
            Completion("2+3 = 5 and then", finish_reason="length"),  # truncated, even if a number is there
        ],
        (S.COT, "p2"): [Completion("I am not sure."), Completion("", "error", error="HTTP 500")],
        (S.COT, "p3"): [Completion("The answer is 4.")],  # no gold
        (S.L2M, "p1"): [Completion("Sub-question 1: Sum? Answer 1: 5.\nThe answer is 5.")],
        (S.L2M, "p2"): [Completion("10-4 = 6.\nThe answer is 6.")],  # correct but no sub-questions
        (S.POT, "p1"): [Completion("```python\na = 2\nanswer = a + 3\n```"), Completion("answer = 1/0")],
        (S.POT, "p2"): [Completion("import os\nanswer = 6")],
    }


def test_teach_counts_every_failure_reason() -> None:
    teacher = ScriptedTeacher(_script())
    samples, stats = teach(teacher, PROBLEMS, [S.COT, S.L2M, S.POT], k=3, progress=False)
    assert teacher.calls == [(S.COT, 3), (S.L2M, 3), (S.POT, 3)]
    assert stats["completions"] == len(samples) == 13
    by = stats["by_strategy"]
    assert by["cot"] == {
        "completions": 6, "correct": 1, "error": 1, "truncated": 1, "unparseable": 1, "pot_error": 0,
        "timeout": 0, "wrong": 1, "no_gold": 1, "problems_solved": 1,
    }  # fmt: skip
    assert by["l2m"]["correct"] == 2 and by["l2m"]["error"] == 1
    assert by["pot"]["correct"] == 1 and by["pot"]["pot_error"] == 2 and by["pot"]["error"] == 1
    assert by["pot"]["pot_reasons"] == {"ZeroDivisionError": 1, "ImportError": 1}
    assert stats["warnings"] == []
    assert stats["correct"] == 4 and stats["problems_solved_any"] == 2
    assert set(stats["failures"]) == set(FAILURE_REASONS)
    assert sum(stats["failures"].values()) + stats["correct"] == stats["completions"]

    first = samples[0]
    assert (first.problem_id, first.strategy, first.correct, first.pred) == ("p1", S.COT, True, "5")
    assert first.rationale == "2+3 = 5" and first.raw.endswith("junk") and first.gold == "5"
    assert "failure" not in first.meta
    truncated = samples[2]
    assert truncated.meta["failure"] == "truncated" and not truncated.correct
    pot_ok = next(s for s in samples if s.strategy is S.POT and s.correct)
    assert pot_ok.rationale == "a = 2\nanswer = a + 3" and pot_ok.pred == "5"
    pot_err = [s for s in samples if s.strategy is S.POT and s.meta.get("failure") == "pot_error"]
    assert any("ZeroDivisionError" in s.meta["error"] for s in pot_err)
    assert any("not allowed" in s.meta["error"] for s in pot_err)


def test_filter_samples() -> None:
    samples, _ = teach(ScriptedTeacher(_script()), PROBLEMS, [S.COT, S.L2M, S.POT], k=3, progress=False)
    kept = filter_samples(samples)
    assert all(s.correct for s in kept)
    # the L2M answer without sub-questions is correct but not kept
    assert [(s.problem_id, s.strategy) for s in kept] == [("p1", S.COT), ("p1", S.L2M), ("p1", S.POT)]
    dup = Sample("p1", "q", "5", S.COT, "2+3 = 5", pred="5", correct=True)
    other = Sample("p1", "q", "5", S.COT, "3+2 = 5", pred="5", correct=True)
    assert filter_samples([dup, dup, other], keep="one_per_strategy") == [dup]
    assert filter_samples([dup, dup, other], keep="all") == [dup, other]  # exact duplicates dropped
    with pytest.raises(ValueError, match="keep must be"):
        filter_samples(samples, keep="best")


def test_teacher_returning_wrong_count_is_an_error() -> None:
    class Broken:
        name = "broken"

        def generate(self, problems, strategy, k):  # noqa: ANN001, ANN202
            return []

    with pytest.raises(TeacherError, match="0 completion lists for 3 problems"):
        teach(Broken(), PROBLEMS, [S.COT], 1, progress=False)
    with pytest.raises(ValueError):
        teach(Broken(), PROBLEMS, [S.COT], 0, progress=False)


def test_recorded_teacher_end_to_end() -> None:
    problems = load_problems("builtin:gsm8k-sample")[:60]
    samples, stats = teach(RecordedTeacher(), problems, list(S), 1, progress=False)
    assert stats["by_strategy"]["cot"]["correct"] == 60 and stats["by_strategy"]["l2m"]["correct"] == 60
    assert stats["by_strategy"]["pot"]["correct"] >= 58
    kept = filter_samples(samples)
    assert len(kept) == stats["correct"]
    roundtrip = [Sample.from_dict(s.to_dict()) for s in samples]
    assert roundtrip == samples  # samples serialize for teacher/samples.jsonl
