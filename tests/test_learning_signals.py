"""Format adherence (`strategies.well_formed`) and GSM8K difficulty (`data.calc_steps`, `data.dev_max_calc_steps`):
the measures the learning curve and the quickstart report beside accuracy."""

from __future__ import annotations

import pytest

from edge_distill.data import calc_steps, difficulty, load_problems, restrict_dev, split_dev
from edge_distill.errors import DataError
from edge_distill.strategies import format_response, well_formed
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Problem, Strategy


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (" [cot]: 48/2 = 24 in May.\n48+24 = 72 in all.\nThe answer is 72.", True),
        (" [l2m]: Sub-question 1: How many? Answer 1: 3.\nThe answer is 3.", True),
        (" [pot]: step_1 = 48 / 2\nanswer = 48 + step_1", True),
        (" [pot]: def solution():\n    return 4", True),
        (" [pot]: ```python\nanswer = 3\n```", True),
        (" [cot]: 3 + 4 = 7\n3 + 4 = 7\n3 + 4", False),  # cut at the budget, no answer line
        (" [cot]: The answer is 7.\nThen 3 more.", False),  # the answer is not the last line
        (" [pot]: step_1 = 100 - 4 = 90", False),  # not Python
        (" [pot]: x = 3", False),  # runs, sets no answer
        (" [pot]: [cot]: [l2m]: 3", False),  # a tag loop
        (" 48 + 24 = 72. The answer is 72.", False),  # no tag
        ("", False),
        (" [cot]: 2+2 = 4\nThe answer is 4.\nQuestion: next problem ...", True),  # cut at the boundary
    ],
)
def test_well_formed(text: str, ok: bool) -> None:
    assert well_formed(text) is ok


def test_well_formed_with_forced_tag() -> None:
    assert well_formed(" answer = 3", Strategy.POT)
    assert not well_formed(" answer = 3")
    assert not well_formed(" answer = 3 [pot]:", Strategy.POT)


def test_every_recorded_teacher_response_is_well_formed() -> None:
    """What the student is trained on is well-formed by the same rule (else adherence could never reach 100 %)."""
    problems = load_problems("builtin:gsm8k-sample")[:120]
    teacher = RecordedTeacher()
    checked = 0
    for strategy in Strategy:
        for p, (c,) in zip(problems, teacher.generate(problems, strategy, 1), strict=True):
            if c.finish_reason == "error":
                continue
            answer = None if strategy is Strategy.POT else p.answer
            response = format_response(strategy, c.text.rsplit("\nThe answer is", 1)[0], answer)
            assert well_formed(response), response
            checked += 1
    assert checked > 300


def test_calc_steps_and_difficulty() -> None:
    p = Problem("a", "q", "72", solution="48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72")
    assert calc_steps(p) == 2 and difficulty(p) == "1-2"
    assert difficulty(Problem("b", "q", "1", solution="<<1=1>>" * 3)) == "3-4"
    assert difficulty(Problem("c", "q", "1", solution="<<1=1>>" * 5)) == "5+"
    assert difficulty(Problem("d", "q", "1", solution="no annotation")) == "1-2"
    assert calc_steps(Problem("e", "q", "1")) is None and difficulty(Problem("e", "q", "1")) is None


def test_restrict_dev_keeps_short_problems_of_the_carved_dev() -> None:
    problems = load_problems("builtin:gsm8k-sample")
    _, dev = split_dev(problems, 200, 0)
    easy = restrict_dev(dev, 2)
    assert 0 < len(easy) < len(dev)
    assert all(calc_steps(p) <= 2 for p in easy)
    assert [p.id for p in easy] == [p.id for p in dev if calc_steps(p) <= 2]  # order kept, nothing else
    with pytest.raises(DataError, match="data.dev_max_calc_steps needs GSM8K-style"):
        restrict_dev([Problem("x", "q", "1")], 2)
