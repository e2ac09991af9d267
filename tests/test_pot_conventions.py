"""Foreign teacher data: PoT programs in the published conventions run through the real sandbox, the CoT
parser takes the last well-formed answer, every empty PoT prediction says why, the tolerance is a key."""

from __future__ import annotations

import logging

import pytest

from edge_distill import answers
from edge_distill.answers import answers_match, extract_answer
from edge_distill.config import load_config
from edge_distill.sandbox import run_programs
from edge_distill.scoring import score
from edge_distill.strategies import judge_verdicts, parse_teacher_completion, split_final_answer
from edge_distill.teach import teach
from edge_distill.teachers.base import Completion
from edge_distill.types import Problem, Strategy

S = Strategy

# Program-of-Thoughts (Chen et al.) data stores the result in `ans`; ReFT/PAL-style data returns it from
# `def solution()`; others assign `result`.
PROGRAMS = {
    "ours": "apples = 4\nanswer = apples * 3",
    "pot_ans": "total = 12\nans = total / 4",
    "result": "result = sum([1, 2, 3])",
    "reft_solution": (
        'def solution():\n    """Tom has 3 boxes of 4 pens."""\n    boxes = 3\n    per_box = 4\n'
        "    result = boxes * per_box\n    return result"
    ),
    "answer_wins": "ans = 1\nresult = 2\nanswer = 3",
    "ans_before_result": "result = [1, 2]\nans = 7",
}


def test_every_convention_gives_its_answer_in_the_sandbox() -> None:
    results = run_programs(list(PROGRAMS.values()))
    got = {name: (r.ok, r.answer, r.error) for name, r in zip(PROGRAMS, results, strict=True)}
    assert got == {
        "ours": (True, "12", None),
        "pot_ans": (True, "3", None),
        "result": (True, "6", None),
        "reft_solution": (True, "12", None),
        "answer_wins": (True, "3", None),
        "ans_before_result": (True, "7", None),
    }


def test_failures_say_why() -> None:
    programs = {
        "no_answer": "x = 5\ny = x + 1",
        "not_a_number": "ans = [1, 2]",
        "solution_not_a_number": "def solution():\n    return 'many'",
        "ZeroDivisionError": "answer = 1 / 0",
        "SyntaxError": "answer = (",
        "ImportError": "import os\nanswer = 1",
        "timeout": "while True:\n    pass",
    }
    results = run_programs(list(programs.values()), timeout_s=0.5)
    reasons = {name: r.reason for name, r in zip(programs, results, strict=True)}
    assert reasons == {**{k: k for k in programs}, "solution_not_a_number": "not_a_number"}
    assert "`ans`" in results[1].error and "not a number: 'many'" in results[2].error
    assert "assigned none of `answer`, `ans`, `result`" in results[0].error


def test_solution_runs_inside_the_boundary() -> None:
    """solution() is called in the same child as the program: the audit hook and limits still apply."""
    evil = "def solution():\n    import os\n    return os.getpid()"
    spin = "def solution():\n    while True:\n        pass"
    r_evil, r_spin = run_programs([evil, spin], timeout_s=0.5)
    assert not r_evil.ok and r_evil.reason == "ImportError"
    assert not r_spin.ok and r_spin.reason == "timeout"


COT_EARLY_MARKER = (
    "Let's find the answer.\nThe answer is:\nFirst, 100 boxes of 200 items is 100 * 200 = 20000 items.\n"
    "Therefore, the answer is 20000."
)


@pytest.mark.parametrize(
    ("text", "rationale", "answer"),
    [
        (COT_EARLY_MARKER, "Let's find the answer.\nThe answer is:\nFirst, 100 boxes of 200 items is 100 * 200 = 20000 items.", "20000"),
        # one line: the reasoning shares the line with the answer and stays the rationale
        ("Tom has 3 + 4 = 7 apples, so the answer is 7.", "Tom has 3 + 4 = 7 apples", "7"),
        ("3 * 4 = 12. Therefore, the answer is 12.", "3 * 4 = 12.", "12"),
        # a draft answer the rationale corrects: the last well-formed one wins
        ("The answer is 5.\nWait, 2 + 4 = 6.\nThe answer is 6.", "The answer is 5.\nWait, 2 + 4 = 6.", "6"),
        ("a\nThe answer is Tuesday.", "a", "Tuesday"),  # no number anywhere: the text answer
    ],
)  # fmt: skip
def test_cot_parser_takes_the_last_well_formed_answer(text: str, rationale: str, answer: str) -> None:
    assert split_final_answer(text) == (rationale, answer)
    assert extract_answer(text) == answer


def test_teacher_completion_keeps_the_last_answer_and_is_trained_on() -> None:
    kept = parse_teacher_completion(S.COT, COT_EARLY_MARKER + "\nAnything after.\n\nQuestion: next")
    assert kept == COT_EARLY_MARKER
    problems = [Problem("p1", "How many items?", "20000"), Problem("p2", "How many apples?", "7")]

    class OneLine:
        name = "one-line"

        def generate(self, ps: list[Problem], strategy: Strategy, k: int) -> list[list[Completion]]:
            texts = {"p1": COT_EARLY_MARKER, "p2": "Tom has 3 + 4 = 7 apples, so the answer is 7."}
            return [[Completion(texts[p.id])] for p in ps]

    samples, stats = teach(OneLine(), problems, [S.COT], 1, progress=False)
    assert stats["correct"] == 2 and [s.rationale.strip() != "" for s in samples] == [True, True]


def test_eval_predictions_record_why_a_pot_prediction_is_empty() -> None:
    problems = [Problem(f"p{i}", "q?", "6") for i in range(5)]
    responses = [
        "[pot]: ans = 6",
        "[pot]: x = 6",
        "[pot]: while True:\n    pass",
        "[pot]: answer = 6 / 0",
        "[cot]: no number here",
    ]
    result = score(problems, responses)
    assert [(r["pred"], r["correct"], r["reason"]) for r in result.predictions] == [
        ("6", True, None),
        (None, False, "no_answer"),
        (None, False, "timeout"),
        (None, False, "ZeroDivisionError"),
        (None, False, "unparseable"),
    ]
    assert judge_verdicts([(S.POT, "[pot]: ")], ["1"])[0].reason == "empty_program"


def test_teach_warns_loudly_when_a_strategy_yields_nothing(caplog: pytest.LogCaptureFixture) -> None:
    problems = [Problem("p1", "What is 2+3?", "5"), Problem("p2", "What is 1+1?", "2")]

    class PotOnlyWrongVariable:
        name = "foreign"

        def generate(self, ps: list[Problem], strategy: Strategy, k: int) -> list[list[Completion]]:
            if strategy is S.POT:
                return [[Completion("x = 5\nprint(x)"), Completion("while True:\n    pass")] for _ in ps]
            return [[Completion("2+3 = 5\nThe answer is 5."), Completion("The answer is 3.")] for _ in ps]

    with caplog.at_level(logging.WARNING):
        _, stats = teach(
            PotOnlyWrongVariable(), problems, [S.COT, S.POT], 2, progress=False, pot_timeout_s=0.5
        )
    pot = stats["by_strategy"]["pot"]
    assert pot["correct"] == 0 and pot["pot_error"] == 2 and pot["timeout"] == 2
    assert pot["pot_reasons"] == {"no_answer": 2, "timeout": 2}
    assert stats["by_strategy"]["cot"]["wrong"] == 3 and stats["by_strategy"]["cot"]["correct"] == 1
    assert len(stats["warnings"]) == 1 and "pot: 0 of 4 completions correct" in stats["warnings"][0]
    assert "2 pot_error, 2 timeout" in stats["warnings"][0]
    assert [r.levelno for r in caplog.records if "0 of 4" in r.getMessage()] == [logging.WARNING]


def test_tolerance_is_one_config_key_passed_as_an_argument() -> None:
    from edge_distill.scoring import score
    from edge_distill.types import Judging, Problem

    assert answers_match("0.3333", "1/3")  # default 1e-4
    assert not answers_match("100.5", "100")
    judging = Judging.of(load_config(None, ["answers.rel_tol=0.01"]))
    assert judging.rel_tol == 0.01 and answers_match("100.5", "100", judging.rel_tol)
    assert not answers_match("100.5", "100")  # no process-wide state: the default is unchanged
    assert not answers_match("0.3333", "1/3", 0) and answers_match("0.5", "1/2", 0)
    with pytest.raises(ValueError, match="between 0 and 0.01"):
        answers_match("1", "1", 0.5)
    with pytest.raises(ValueError, match="between 0 and 0.01"):
        Judging(rel_tol=0.5)
    with pytest.raises(Exception, match="answers.rel_tol"):
        load_config(None, ["answers.rel_tol=0.5"])
    # the scorer judges with the judging it is given, the same responses differently
    problems = [Problem("p", "q?", "100")]
    responses = [" [cot]: 201 / 2 = 100.5\nThe answer is 100.5."]
    assert score(problems, responses, judging=judging).correct == 1
    assert score(problems, responses).correct == 0
    assert float(answers.REL_TOL) == Judging().rel_tol
