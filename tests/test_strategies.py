"""Strategy text formats: exact prompt text, round trips, teacher prompts, judging (PoT via the sandbox)."""

from __future__ import annotations

import json
import re
from importlib.resources import files

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_distill.answers import gsm8k_gold
from edge_distill.strategies import (
    ANSWER_MARKER,
    STUDENT_PROMPT,
    format_response,
    gsm8k_cot,
    gsm8k_l2m,
    has_subquestions,
    judge,
    judge_many,
    parse_response,
    parse_teacher_completion,
    response_after_tag,
    split_final_answer,
    strip_annotations,
    student_prompt,
    teacher_prompt,
)
from edge_distill.types import Strategy

S = Strategy


def test_student_prompt_is_exactly_the_contract_text() -> None:
    # This string is what exported models and devices see; changing it silently breaks every checkpoint.
    assert STUDENT_PROMPT == (
        "Question: {question}\nSolve it with one strategy: [cot] step-by-step reasoning, [l2m] sub-questions "
        "and answers, or [pot] a Python program that sets `answer`.\nSolution:"
    )
    assert student_prompt("How many?") == STUDENT_PROMPT.format(question="How many?")
    assert student_prompt("  How many?\n") == student_prompt("How many?")
    # no trailing blank: the continuation carries its own space (token-exact, tests/test_prompt_boundary.py)
    assert student_prompt("Q?", S.POT).endswith("Solution: [pot]:")
    assert student_prompt("Q?", "l2m").endswith("Solution: [l2m]:")  # type: ignore[arg-type]
    assert ANSWER_MARKER == "The answer is"


def test_format_response_shapes() -> None:
    assert (
        format_response(S.COT, "48/2 = 24.\n48+24 = 72.", "72")
        == " [cot]: 48/2 = 24.\n48+24 = 72.\nThe answer is 72."
    )
    assert format_response(S.L2M, "Sub-question 1: a? Answer 1: 2", "2") == (
        " [l2m]: Sub-question 1: a? Answer 1: 2\nThe answer is 2."
    )
    assert format_response(S.POT, "answer = 1 + 1", "2") == " [pot]: answer = 1 + 1"  # answer is computed
    assert format_response(S.COT, "  no answer  ", None) == " [cot]: no answer"
    # the forced prompt + what the student writes after the tag is the free prompt + the response
    r = format_response(S.L2M, "\n x", "1")
    assert student_prompt("Q?", S.L2M) + response_after_tag(r) == student_prompt("Q?") + r
    assert response_after_tag(r) == " x\nThe answer is 1."
    assert parse_response(r) == parse_response(response_after_tag(r), S.L2M)
    with pytest.raises(ValueError, match="not a response"):
        response_after_tag("no tag")


@pytest.mark.parametrize("strategy", [S.COT, S.L2M])
def test_format_parse_roundtrip(strategy: Strategy) -> None:
    rationale = (
        "Sub-question 1: How many in May? Answer 1: 48/2 = 24 clips.\nSub-question 2: Total? Answer 2: 72."
    )
    text = format_response(strategy, rationale, "72")
    parsed = parse_response(text)
    assert parsed.strategy is strategy
    assert parsed.rationale == rationale
    assert parsed.answer_text == "72"


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="[]"), max_size=80),
    st.integers(-(10**6), 10**6),
)
def test_roundtrip_property(rationale: str, answer: int) -> None:
    rationale = rationale.strip()
    if ANSWER_MARKER.lower() in rationale.lower() or "question:" in rationale.lower():
        return
    parsed = parse_response(format_response(S.COT, rationale, str(answer)))
    assert parsed.strategy is S.COT
    assert parsed.answer_text == str(answer)
    assert parsed.rationale == rationale.strip()


def test_parse_response_variants() -> None:
    pot = parse_response("[pot]: x = 2\nanswer = x * 3")
    assert (pot.strategy, pot.rationale, pot.answer_text) == (S.POT, "x = 2\nanswer = x * 3", None)
    fenced = parse_response("[pot]: ```python\nanswer = 4\n```")
    assert fenced.rationale == "answer = 4"
    # forced tag: the generated text has no tag of its own
    forced = parse_response("2+2 = 4\nThe answer is 4.", strategy=S.COT)
    assert (forced.strategy, forced.rationale, forced.answer_text) == (S.COT, "2+2 = 4", "4")
    # no tag at all: strategy unknown, answer still extracted
    untagged = parse_response("so it is 9")
    assert untagged.strategy is None and untagged.answer_text == "9"
    # a run-on into the next question is cut
    runon = parse_response("[cot]: 3+4 = 7\nThe answer is 7.\n\nQuestion: next one\n[cot]: The answer is 1.")
    assert runon.answer_text == "7" and "next" not in runon.rationale
    # text after the answer line is dropped from the rationale
    assert parse_response("[cot]: a\nThe answer is 3.\nbla 99").rationale == "a"


def test_has_subquestions() -> None:
    assert has_subquestions("Sub-question 1: How many? Answer 1: 5 apples.")
    assert has_subquestions("x\nSub-question 2: How many? Answer 2: 5\n")
    assert not has_subquestions("First we compute 5. Then 7. The answer is 7.")
    assert not has_subquestions("Sub-question 1: How many?")  # no answer to it
    assert not has_subquestions("Sub-question 1: How many? Answer 2: 5")  # numbering must agree
    assert not has_subquestions("")


def test_gsm8k_conversions() -> None:
    solution = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    )
    assert strip_annotations(solution).startswith("Natalia sold 48/2 = 24 clips in May.")
    assert gsm8k_cot(solution) == "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips."
    socratic = (
        "How many clips did Natalia sell in May? ** Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "How many altogether? ** Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    )
    l2m = gsm8k_l2m(socratic)
    assert l2m == (
        "Sub-question 1: How many clips did Natalia sell in May? Answer 1: Natalia sold 48/2 = 24 clips in May.\n"
        "Sub-question 2: How many altogether? Answer 2: Natalia sold 48+24 = 72 clips."
    )
    assert has_subquestions(l2m)


def test_every_shipped_socratic_solution_converts_to_real_l2m() -> None:
    text = files("edge_distill").joinpath("assets/gsm8k/train_socratic.jsonl").read_text()
    rows = [json.loads(x) for x in text.splitlines()]
    for row in rows:
        l2m = gsm8k_l2m(row["answer"])
        assert has_subquestions(l2m), row["answer"]
        assert "<<" not in l2m and "####" not in l2m and " ** " not in l2m


@pytest.mark.parametrize("strategy", list(S))
def test_teacher_prompt_has_8_gsm8k_exemplars(strategy: Strategy) -> None:
    prompt = teacher_prompt(strategy, "Tom has 3 cats. How many cats?")
    assert prompt.count("Question: ") == 9
    assert prompt.endswith("Question: Tom has 3 cats. How many cats?\nSolution:\n")
    train = files("edge_distill").joinpath("assets/gsm8k/train.jsonl").read_text().splitlines()[:8]
    for row in map(json.loads, train):
        assert f"Question: {row['question']}\n" in prompt  # exemplars are real GSM8K train problems
    if strategy is S.POT:
        assert prompt.count("\nanswer = ") == 8
    else:
        assert prompt.count(f"{ANSWER_MARKER} ") == 8 + 1  # 8 exemplars + the instruction line
    if strategy is S.L2M:
        assert prompt.count("Sub-question 1: ") == 8
    assert teacher_prompt(strategy, "Q?", n_shots=2).count("Question: ") == 3
    with pytest.raises(ValueError):
        teacher_prompt(strategy, "Q?", n_shots=9)


def test_exemplar_answers_are_correct() -> None:
    """Each exemplar's answer line (CoT/L2M) and program (PoT) gives the GSM8K gold answer."""
    train = [
        json.loads(x)
        for x in files("edge_distill").joinpath("assets/gsm8k/train.jsonl").read_text().splitlines()
    ]
    golds = [gsm8k_gold(r["answer"]) for r in train[:8]]
    for strategy in S:
        prompt = teacher_prompt(strategy, "Q?")
        blocks = re.split(r"\n\nQuestion: ", prompt)[1:-1]
        bodies = [b.split("\nSolution:\n", 1)[1] for b in blocks]
        results = judge_many([(strategy, body) for body in bodies], golds)
        assert all(ok for _, ok in results), (strategy, results)


def test_parse_teacher_completion_cuts_at_boundary() -> None:
    text = "Step one 2+2=4.\nThe answer is 4.\nExtra musing 17\n\nQuestion: Another?\nSolution:\nThe answer is 9."
    assert parse_teacher_completion(S.COT, text) == "Step one 2+2=4.\nThe answer is 4."
    assert split_final_answer(parse_teacher_completion(S.COT, text)) == ("Step one 2+2=4.", "4")
    assert parse_teacher_completion(S.POT, "a = 2\nanswer = a\n\nQuestion: x") == "a = 2\nanswer = a"
    assert parse_teacher_completion(S.POT, "Here:\n```python\nanswer = 3\n```\nDone.") == "answer = 3"
    # no answer line: the whole text, for the judge to report as unparseable
    assert parse_teacher_completion(S.COT, " just words ") == "just words"


def test_judge_and_judge_many() -> None:
    assert judge(S.COT, "3+4 = 7\nThe answer is 7.", "7") == ("7", True)
    assert judge(S.COT, "The answer is 8.", "7") == ("8", False)
    assert judge(S.L2M, "nothing here", "7") == (None, False)
    assert judge(S.POT, "answer = 3 + 4", "7") == ("7", True)
    assert judge(S.POT, "[pot]: answer = 0.1 + 0.2", "0.3") == ("0.3", True)
    out = judge_many(
        [
            (S.POT, "answer = 2 * 3"),
            (S.COT, "The answer is 6."),
            (S.POT, "while True: pass"),
            (S.POT, "x = 1"),
        ],
        ["6", "6", "6", "6"],
    )
    assert out == [("6", True), ("6", True), (None, False), (None, False)]
    # strategy None: the tag decides; untagged text is prose and is never executed
    untagged = judge_many([(None, "[pot]: answer = 6"), (None, "answer = 2 * 3")], ["6", "6"])  # type: ignore[list-item]
    assert untagged == [("6", True), ("2", False)]
    with pytest.raises(ValueError):
        judge_many([(S.COT, "x")], [])
