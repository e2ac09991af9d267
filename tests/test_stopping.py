"""The stop rule (edge_distill/stopping.py): where a student's answer is complete, on examples, on generated
well-formed answers (hypothesis), on every recorded teacher sample, and incrementally == on the whole text."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_distill import stopping
from edge_distill.data import load_problems
from edge_distill.decoding import answer_prompt, two_stage
from edge_distill.stopping import AnswerStop, answer_end, cut_answer, program_status
from edge_distill.strategies import format_response, parse_response, response_after_tag, student_prompt
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Strategy

S = Strategy
AUTO = student_prompt("Tom has 3 apples and buys 4 more. How many apples does he have?")


def forced(s: Strategy) -> str:
    return student_prompt("Tom has 3 apples and buys 4 more. How many apples does he have?", s)


def streamed(text: str, prompt: str, step: int = 1) -> int | None:
    """The cut a decoder makes feeding the text `step` characters at a time (a token is a few)."""
    rule = AnswerStop(prompt)
    for k in range(step, len(text) + step, step):
        got = rule(text[:k])
        if got is not None:
            return got
    return None


# (prompt, generated text, what a decoder returns: None = no stop before EOS / the budget)
CASES = [
    # CoT / L2M: the answer line, finished by a newline or by '.' + a non-digit
    (AUTO, " [cot]: 3 + 4 = 7.\nThe answer is 7.\nThe answer is 7.", " [cot]: 3 + 4 = 7.\nThe answer is 7."),
    (AUTO, " [cot]: x.\nThe answer is 1.5", None),  # EOS may still follow, or more digits
    (AUTO, " [cot]: x.\nThe answer is 1.", None),  # "1." may become "1.5"
    (AUTO, " [cot]: x.\nThe answer is 1.5. So", " [cot]: x.\nThe answer is 1.5."),
    (AUTO, " [cot]: x.\nThe answer is $1,200.\n[pot]:", " [cot]: x.\nThe answer is $1,200."),
    (AUTO, " [cot]: x.\nThe answer is -3. Then", " [cot]: x.\nThe answer is -3."),
    (AUTO, " [cot]: x.\nThe answer is 2 1/2 cups.\nQ", " [cot]: x.\nThe answer is 2 1/2 cups."),
    (AUTO, " [cot]: x.\nThe answer is 50%.[cot]", " [cot]: x.\nThe answer is 50%."),
    (AUTO, " [cot]: x.\nThe answer is 72\nmore", " [cot]: x.\nThe answer is 72"),
    (AUTO, " [cot]: So the answer is approx. 5. Yes", " [cot]: So the answer is approx. 5."),
    (AUTO, " [cot]: The answer is:\n5 apples.\n", None),  # no number on the marker's line
    (AUTO, " [cot]: He had 5. Then 7.\nmore", None),  # sentences with numbers, no answer line
    (
        AUTO,
        " [l2m]: Sub-question 1: How many? Answer 1: 7.\nThe answer is 7.\n",
        " [l2m]: Sub-question 1: How many? Answer 1: 7.\nThe answer is 7.",
    ),
    (
        AUTO,
        " He has 7 apples.\nThe answer is 7. Question",
        " He has 7 apples.\nThe answer is 7.",
    ),  # untagged: prose
    (forced(S.COT), " 3 + 4 = 7.\nThe answer is 7.\n", " 3 + 4 = 7.\nThe answer is 7."),
    (
        forced(S.L2M),
        " Sub-question 1: a? Answer 1: 7.\nThe answer is 7.\n",
        " Sub-question 1: a? Answer 1: 7.\nThe answer is 7.",
    ),
    # CasCoD's answer stage: the prompt ends inside the answer line
    (answer_prompt(AUTO, " [cot]: 3 + 4 = 7", two_stage()), " 7.\nThe answer", " 7."),
    (answer_prompt(AUTO, " [cot]: 3 + 4 = 7", two_stage()), " 7.", None),
    # a new question block ends any response where it starts
    (AUTO, " [cot]: 3 + 4 = 7\n\n  Question: next one", " [cot]: 3 + 4 = 7"),
    (forced(S.POT), " x = 7\n\nQuestion: next", " x = 7"),
    # PoT: cut at the last line where the program parsed and set its answer, once a line cannot continue it
    (AUTO, " [pot]: x = 3\nanswer = x + 4\nThe answer is 7.\n", " [pot]: x = 3\nanswer = x + 4"),
    (forced(S.POT), " x = 3\nanswer = x + 4\n[cot]: 7\n", " x = 3\nanswer = x + 4"),
    (forced(S.POT), " answer = 3 + 4\n    y = 1\n", " answer = 3 + 4"),  # an indented line after it
    (
        forced(S.POT),
        " answer = 7 / 2\nanswer = int(answer)\nThe end\n",
        " answer = 7 / 2\nanswer = int(answer)",
    ),
    (forced(S.POT), " answer = 3 + 4\nprint(answer)\n", None),  # valid Python goes on
    (
        forced(S.POT),
        " answer = (3 +\n4)\nThe answer is 7.\n",
        " answer = (3 +\n4)",
    ),  # a bracket over two lines
    (
        forced(S.POT),
        " total = 0\nfor i in range(3):\n    total += i\nanswer = total\n  x\n",
        " total = 0\nfor i in range(3):\n    total += i\nanswer = total",
    ),
    (
        forced(S.POT),
        " def solution():\n    a = 3 + 4\n    return a\nThe answer is 7.\n",
        " def solution():\n    a = 3 + 4\n    return a",
    ),
    (forced(S.POT), " result = 7\nSo 7.\n", " result = 7"),  # the sandbox's other answer names
    (forced(S.POT), " x = 7\nThe answer is 7.\n", None),  # never set its answer: the program is what it is
    (AUTO, " [pot]: 100 - 4 = 90\nstep_1: 96\n", None),  # never parsed: prose may precede a code fence
    (
        forced(S.POT),
        " Here is the program:\n```python\nanswer = 7\n``` That is all",
        " Here is the program:\n```python\nanswer = 7\n```",
    ),
    # the tag in the response wins over the forced one, as in parse_response
    (forced(S.COT), " [pot]: answer = 7\nThe answer is 7.\n", " [pot]: answer = 7"),
    (forced(S.POT), " [cot]: 3 + 4 = 7.\nThe answer is 7.\n", " [cot]: 3 + 4 = 7.\nThe answer is 7."),
    (AUTO, " [", None),
]


@pytest.mark.parametrize("prompt, text, want", CASES)
def test_cases(prompt, text, want):
    got = answer_end(text, prompt)
    assert (None if got is None else text[:got]) == want
    assert cut_answer(text, prompt) == (text if want is None else want)
    for step in (1, 2, 5):  # token by token: the same cut
        assert streamed(text, prompt, step) == got


def test_a_rule_keeps_its_cut_and_never_looks_back():
    rule = AnswerStop(AUTO)
    assert rule(" [cot]: The answer is 7.") is None
    assert rule(" [cot]: The answer is 7.\n") == len(" [cot]: The answer is 7.")
    assert rule(" [cot]: The answer is 7.\nThe answer is 8.\n") == len(" [cot]: The answer is 7.")


def test_program_status():
    assert program_status("answer = 1") == ("complete", True)
    assert program_status("x = 1") == ("complete", False)
    assert program_status("if x:\n    answer = 1") == ("complete", True)
    assert program_status("def f():\n    answer = 1") == ("complete", False)  # a function's own name
    assert program_status("def solution():\n    return 1") == ("complete", True)
    assert program_status("x = (1,") == ("incomplete", False)
    assert program_status("for i in x:") == ("incomplete", False)
    assert program_status('s = """abc') == ("incomplete", False)
    assert program_status("100 - 4 = 90") == ("invalid", False)
    assert program_status("x = 1\nThe answer is 1.") == ("invalid", False)
    assert program_status("x = 1\x00") == ("invalid", False)
    assert program_status("(" * 300)[0] in ("incomplete", "invalid")  # hostile nesting: no crash


def test_pot_parses_once_per_newline(monkeypatch):
    """Cheap per token: the parser runs at newlines only, once each, however the text is fed."""
    calls = []
    real = stopping.program_status
    monkeypatch.setattr(stopping, "program_status", lambda p: calls.append(p) or real(p))
    text = " x = 3\ny = 4\nanswer = x + y\nprint(answer)\nprint(answer)\n"
    assert streamed(text, forced(S.POT), 1) is None
    assert len(calls) == text.count("\n")


# --------------------------------------------------------------------------- generated well-formed answers
_WORDS = st.sampled_from(
    [
        "He",
        "has",
        "3",
        "apples",
        "1.5",
        "$1,200",
        "-4",
        "=",
        "+",
        "*",
        "so",
        "each",
        "of",
        "them.",
        "2/3",
        "(x)",
        "50%",
    ]
)
_LINE = st.lists(_WORDS, min_size=1, max_size=8).map(" ".join)
_NUMBER = st.one_of(
    st.integers(-(10**7), 10**7).map(str),
    st.integers(0, 10**6).map(lambda n: f"${n:,}"),
    st.decimals(-(10**4), 10**4, places=2, allow_nan=False, allow_infinity=False).map(str),
    st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(2, 9)).map(lambda t: f"{t[0]} {t[1]}/{t[2]}"),
    st.integers(0, 100).map(lambda n: f"{n}%"),
)
# what a student writes after its answer, when it misses EOS: anything not continuing the number
_AFTER = st.one_of(
    st.just(""),
    st.sampled_from(["\n", "\nThe answer is 9.", " [pot]: [cot]:", "\nQuestion: x", " So", "\n\n"]),
    st.text(min_size=1, max_size=20).filter(lambda t: not t[0].isdecimal()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([S.COT, S.L2M]), st.lists(_LINE, min_size=1, max_size=4), _NUMBER, st.booleans(), _AFTER,
       st.integers(1, 6))  # fmt: skip
def test_never_cuts_inside_a_well_formed_cot_answer(strategy, lines, number, force, after, step):
    wf = format_response(strategy, "\n".join(lines), number)  # " [cot]: ...\nThe answer is N."
    prompt = forced(strategy) if force else AUTO
    body = response_after_tag(wf) if force else wf
    full = body + after
    got = streamed(full, prompt, step)
    assert got == answer_end(full, prompt)
    if not after:  # EOS right after the answer: nothing to stop
        assert got is None
        return
    assert got == len(body)  # never inside the answer line, never past it
    want = parse_response(body, strategy if force else None).answer_text
    assert parse_response(full[:got], strategy if force else None).answer_text == want


_STATEMENT = st.sampled_from(
    ["x = 3", "y = x * 2", "total = x + 4", "z = (x +\n     y)", "if x > 1:\n    y = 2"]
)
_JUNK = st.sampled_from(
    [
        "The answer is 7.",
        "[cot]: 3 + 4 = 7",
        "Question: next",
        "    indented = 1",
        "step 1: 3 - 1 = 2",
        "So the answer is 7",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_STATEMENT, max_size=5), st.sampled_from(["answer", "ans", "result"]), st.booleans(), _JUNK,
       st.integers(1, 6))  # fmt: skip
def test_pot_stops_after_the_program_and_keeps_it_whole(statements, name, force, junk, step):
    program = "\n".join(["x = 3", *statements, f"{name} = x + 4"])
    wf = format_response(S.POT, program, None)
    prompt = forced(S.POT) if force else AUTO
    body = response_after_tag(wf) if force else wf
    assert streamed(body, prompt, step) is None  # EOS ends it
    full = body + "\n" + junk + "\nmore text"
    got = streamed(full, prompt, step)
    assert got == answer_end(full, prompt) == len(body)
    assert parse_response(full[:got], S.POT if force else None).rationale == program


# --------------------------------------------------------------------------- every recorded teacher sample
# EOS, or what a student that misses EOS writes next (a PoT program ends once a whole line cannot follow it)
_RUN_ON = [
    "",
    "\nThe answer is 123456.\n[cot]: again",
    "\n[pot]: [cot]: [l2m]:\n",
    "\nQuestion: Next one?\nSolution:",
]


@pytest.fixture(scope="module")
def recorded():
    problems = load_problems("builtin:gsm8k-sample")
    teacher = RecordedTeacher()
    out = []
    for s in (S.COT, S.L2M, S.POT):
        for p, comps in zip(problems, teacher.generate(problems, s, 1), strict=True):
            for c in comps:
                out.append((s, p, c.text))
    return out


def test_every_recorded_teacher_sample_stops_at_its_end(recorded):
    """The student's training targets (format_response of every recorded teacher sample), decoded with and
    without a forced tag and followed by EOS or by what a student writes when it misses EOS: the cut is
    exactly the end of the target, and the parsed answer (PoT: the program the sandbox runs) is the
    target's."""
    from edge_distill.strategies import parse_teacher_completion, split_final_answer

    checked = 0
    for s, p, text in recorded:
        solution = parse_teacher_completion(s, text)
        rationale, answer = (solution, None) if s is S.POT else split_final_answer(solution)
        if (s is S.POT and program_status(rationale) != ("complete", True)) or (
            s is not S.POT and answer is None
        ):
            continue  # not a training target (the filter drops it): no well-formed answer to stop after
        checked += 1
        wf = format_response(s, rationale, answer)
        for force in (False, True):
            prompt = student_prompt(p.question, s) if force else student_prompt(p.question)
            body = response_after_tag(wf) if force else wf
            want = parse_response(body, s if force else None)
            for after in _RUN_ON:
                full = body + after
                got = answer_end(full, prompt)
                assert got == (None if after == "" else len(body)), (s, p.id, after, full[:200])
                if got is not None:
                    cut = parse_response(full[:got], s if force else None)
                    assert (cut.answer_text, cut.rationale) == (want.answer_text, want.rationale)
    assert checked >= 2900, checked  # 1000 problems x 3 strategies, a few PoT conversions empty
