"""The text formats of the three strategies, identical in training, eval, export and on device.

The student sees plain text, no chat template, so torch, llama.cpp and ONNX Runtime GenAI see the same
tokens. Its response starts with a strategy tag: ` [cot]: <rationale>\\nThe answer is N.` (CoT, L2M) or
` [pot]: <program that assigns answer>` (PoT; the sandbox computes the answer).

Token-exact boundaries: training encodes the prompt and the response separately and concatenates the
ids, while llama.cpp, Ollama and chat templates tokenize the whole rendered string. So every prompt ends
on a pre-token boundary and every continuation starts with its own space: the prompt ends with
`Solution:` (no trailing blank — a lone trailing space would become `Ġ` alone in training but merge into
`Ġ[` in a whole-string tokenization), the response starts with ` [cot]:`, a forced prompt ends with
`Solution: [cot]:` and the student continues with ` <rationale>`. Rationales are stripped, so no leading
whitespace can merge across the boundary. `FORCED_TAG` is the one definition of the tag text; prompts,
responses, `_TAG_RE`, the packaged prompt template and the chat templates derive from it. The teacher gets
completion-style few-shot prompts built from 8 GSM8K train problems per strategy.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from edge_distill.answers import ANSWER_MARKER, answers_match, extract_answer, normalize_number
from edge_distill.types import DEFAULT_JUDGING, Judging, Strategy

__all__ = [
    "ANSWER_MARKER",
    "STUDENT_PROMPT",
    "ParsedResponse",
    "format_l2m",
    "FORCED_TAG",
    "forced_tag",
    "format_response",
    "response_after_tag",
    "gsm8k_cot",
    "gsm8k_l2m",
    "has_subquestions",
    "judge",
    "Verdict",
    "judge_many",
    "judge_verdicts",
    "well_formed",
    "parse_response",
    "parse_teacher_completion",
    "split_final_answer",
    "strip_annotations",
    "student_prompt",
    "teacher_prompt",
]

STUDENT_PROMPT = (
    "Question: {question}\nSolve it with one strategy: [cot] step-by-step reasoning, [l2m] sub-questions and "
    "answers, or [pot] a Python program that sets `answer`.\nSolution:"
)
# What follows the prompt: the tag (forced in the prompt, or the start of the student's response), then
# " " + the rationale. The leading space belongs to the tag so the prompt ends on a token boundary.
FORCED_TAG = " [{strategy}]:"
_TAG_RE = re.compile(
    r"^\s*" + re.escape(FORCED_TAG.strip()).replace(re.escape("{strategy}"), "(cot|l2m|pot)") + r"[ \t]?"
)
# A model that misses EOS tends to start the next few-shot/prompt block; everything from there is not ours.
_BOUNDARY_RE = re.compile(r"\n\s*Question:")
_ANSWER_LINE_RE = re.compile(rf"^.*?{ANSWER_MARKER}.*$", re.MULTILINE | re.IGNORECASE)
_MARKER_RE = re.compile(rf"(?:\bthe\s+final\s+answer\s+is|{ANSWER_MARKER})", re.IGNORECASE)
# "..., so" / "Therefore," left before an answer that shared its line with the reasoning
_LEAD_IN_RE = re.compile(r"[\s,;:]*\b(?:so|thus|hence|therefore|then|and)?[\s,;:]*$", re.IGNORECASE)
_SUBQ_RE = re.compile(r"Sub-question (\d+):\s*\S.*?\s*Answer \1:\s*\S", re.IGNORECASE | re.DOTALL)
_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")
_FENCE_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def student_prompt(question: str, strategy: Strategy | None = None) -> str:
    """The student's input; with `strategy` the tag is forced (`... Solution: [cot]:`; the student then
    generates ` <rationale>`, the response after its tag)."""
    prompt = STUDENT_PROMPT.format(question=question.strip())
    return prompt if strategy is None else prompt + forced_tag(strategy)


def forced_tag(strategy: Strategy | str) -> str:
    """The tag text after the prompt, leading space included (` [cot]:`)."""
    return FORCED_TAG.format(strategy=Strategy(strategy).value)


def format_response(strategy: Strategy, rationale: str, answer: str | None) -> str:
    """The training target after `student_prompt(question)` (EOS is appended by the tokenizer side):
    `forced_tag(strategy)` + ` ` + the stripped rationale, so `student_prompt(q) + format_response(...)`
    tokenizes whole exactly as the two encoded apart (see the module docstring).

    For CoT/L2M the final line `The answer is N.` is added when `answer` is given; PoT ignores it.
    """
    strategy = Strategy(strategy)
    body = rationale.strip()
    if strategy is Strategy.POT or answer is None:
        return f"{forced_tag(strategy)} {body}"
    return f"{forced_tag(strategy)} {body}\n{ANSWER_MARKER} {answer}."


def response_after_tag(response: str) -> str:
    """What the student generates after a forced-tag prompt: `format_response(...)` without its tag
    (` <rationale>…`, leading space kept)."""
    m = _TAG_RE.match(response)
    tag = forced_tag(m.group(1)) if m else ""
    if not tag or not response.startswith(tag):
        raise ValueError(f"not a response from format_response: {response[:40]!r}")
    return response[len(tag) :]


@dataclass(frozen=True)
class ParsedResponse:
    """A student response split into tag, rationale (no answer line) and extracted, normalized answer.

    `answer_text` is None for PoT (the sandbox computes it) and when no answer could be found.
    """

    strategy: Strategy | None
    rationale: str
    answer_text: str | None


def _final_answer(text: str) -> tuple[int, int, str] | None:
    """(start of the marker, end of its line, normalized number) of the LAST well-formed final answer:
    a `The answer is` followed by a number on its line. An early "The answer is:" without one, or a
    draft answer the rationale then corrects, does not count; see `answers.extract_answer`."""
    found = None
    for m in _MARKER_RE.finditer(text):
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        answer = extract_answer(text[m.start() : end])
        if answer is not None and normalize_number(answer) is not None:
            found = (m.start(), end, answer)
    return found


def split_final_answer(text: str) -> tuple[str, str | None]:
    """Split a CoT/L2M text at its last well-formed `The answer is N`: (rationale before it, answer).

    Reasoning that shares the line with the answer stays in the rationale ("3+4 = 7, so the answer is
    7." -> "3+4 = 7"). Without a well-formed answer: split at the first `The answer is` line (its text
    answer, "Tuesday", may still match), else the whole text and its last number."""
    final = _final_answer(text)
    if final is not None:
        start, _, answer = final
        return _LEAD_IN_RE.sub("", text[:start]).strip(), answer
    m = _ANSWER_LINE_RE.search(text)
    if m is None:
        return text.strip(), extract_answer(text)
    return text[: m.start()].strip(), extract_answer(m.group(0))


def parse_response(text: str, strategy: Strategy | None = None) -> ParsedResponse:
    """Parse what the student generated after `student_prompt(q)`.

    When the tag was forced in the prompt, the generated text has no tag: pass that `strategy`.
    """
    text = _BOUNDARY_RE.split(text, maxsplit=1)[0]
    m = _TAG_RE.match(text)
    if m is not None:
        strategy, text = Strategy(m.group(1)), text[m.end() :]
    elif strategy is not None:
        strategy = Strategy(strategy)
    if strategy is Strategy.POT:
        return ParsedResponse(strategy, _program(text), None)
    rationale, answer = split_final_answer(text)
    return ParsedResponse(strategy, rationale, answer)


def _program(text: str) -> str:
    m = _FENCE_RE.search(text)
    return (m.group(1) if m else text).strip()


_ANY_TAG_RE = re.compile(re.escape(FORCED_TAG.strip()).replace(re.escape("{strategy}"), "(?:cot|l2m|pot)"))


def well_formed(text: str, strategy: Strategy | None = None) -> bool:
    """Format adherence of a student response: exactly one strategy tag (or `strategy` forced in the prompt
    and none generated) and a well-formed body — a CoT/L2M whose last line is its answer line
    (`The answer is N`), a PoT that parses as Python and sets the answer at top level (`answer = ...`, or
    a `solution()` function). Text after a `Question:` boundary is ignored, as the parser ignores it."""
    text = _BOUNDARY_RE.split(text, maxsplit=1)[0]
    m = _TAG_RE.match(text)
    if m is not None:
        strategy, text = Strategy(m.group(1)), text[m.end() :]
    elif strategy is None:
        return False
    if _ANY_TAG_RE.search(text):  # a second tag: `[pot]: [cot]: ...`
        return False
    if Strategy(strategy) is Strategy.POT:
        return _sets_answer(_program(text))
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return bool(lines) and _final_answer(lines[-1]) is not None


def _sets_answer(program: str) -> bool:
    """The program parses and, at top level, assigns one of the names the sandbox reads its answer from
    or defines the function it calls (one rule: `sandbox_worker.ANSWER_NAMES`, `SOLUTION_FUNCTION`)."""
    from edge_distill.sandbox_worker import ANSWER_NAMES, SOLUTION_FUNCTION

    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == SOLUTION_FUNCTION:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id in ANSWER_NAMES for t in targets):
            return True
    return False


def has_subquestions(rationale: str) -> bool:
    """An L2M rationale really contains at least one `Sub-question k: ... Answer k: ...` pair."""
    return _SUBQ_RE.search(rationale) is not None


# --------------------------------------------------------------------------- GSM8K conversions
def strip_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations: "48/2 = <<48/2=24>>24" -> "48/2 = 24"."""
    return _ANNOTATION_RE.sub("", text)


def gsm8k_cot(solution: str) -> str:
    """CoT rationale (no answer line) from a GSM8K gold solution."""
    lines = [ln.strip() for ln in strip_annotations(solution).split("\n")]
    return "\n".join(ln for ln in lines if ln and not ln.startswith("####"))


def format_l2m(steps: list[tuple[str, str]]) -> str:
    """The L2M rationale for (sub-question, answer) pairs — the one L2M format used everywhere."""
    return "\n".join(
        f"Sub-question {i}: {q.strip()} Answer {i}: {a.strip()}" for i, (q, a) in enumerate(steps, 1)
    )


def gsm8k_l2m(socratic: str) -> str:
    """L2M rationale from a GSM8K socratic solution ("How many ...? ** Natalia sold ..." per line).

    A line without " ** " continues the previous answer (it happens a few times in GSM8K).
    """
    steps: list[tuple[str, str]] = []
    for line in strip_annotations(socratic).split("\n"):
        line = line.strip()
        if not line or line.startswith("####"):
            continue
        q, sep, a = line.partition(" ** ")
        if sep:
            steps.append((q, a))
        elif steps:
            steps[-1] = (steps[-1][0], f"{steps[-1][1]} {line}")
    return format_l2m(steps)


# --------------------------------------------------------------------------- teacher prompts
# (question, GSM8K socratic solution, PoT program): the first 8 problems of GSM8K train. CoT and L2M
# exemplars are derived with the same converters the recorded teacher uses, so their formats agree.
_EXEMPLARS: list[tuple[str, str, str]] = [
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
        "How many clips did Natalia sell in May? ** Natalia sold 48/2 = 24 clips in May.\nHow many clips did Natalia sell altogether in April and May? ** Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72",
        "clips_april = 48\nclips_may = clips_april / 2\nanswer = clips_april + clips_may",
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
        "How much does Weng earn per minute? ** Weng earns 12/60 = $0.2 per minute.\nHow much did Weng earn? ** Working 50 minutes, she earned 0.2 x 50 = $10.\n#### 10",
        "pay_per_hour = 12\nminutes_worked = 50\npay_per_minute = pay_per_hour / 60\nanswer = pay_per_minute * minutes_worked",
    ),
    (
        "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much more money does Betty need to buy the wallet?",
        "How much money does Betty have in the beginning? ** In the beginning, Betty has only 100 / 2 = $50.\nHow much money did Betty's grandparents give her? ** Betty's grandparents gave her 15 * 2 = $30.\nHow much more money does Betty need to buy the wallet? ** This means, Betty needs 100 - 50 - 30 - 15 = $5 more.\n#### 5",
        "wallet_cost = 100\nsavings = wallet_cost / 2\nfrom_parents = 15\nfrom_grandparents = 2 * from_parents\nanswer = wallet_cost - savings - from_parents - from_grandparents",
    ),
    (
        "Julie is reading a 120-page book. Yesterday, she was able to read 12 pages and today, she read twice as many pages as yesterday. If she wants to read half of the remaining pages tomorrow, how many pages should she read?",
        "How many pages did Julie read today? ** Julie read 12 x 2 = 24 pages today.\nHow many pages did Julie read since yesterday? ** So she was able to read a total of 12 + 24 = 36 pages since yesterday.\nHow many pages are left to be read? ** There are 120 - 36 = 84 pages left to be read.\nHow many pages should she read tomorrow? ** Since she wants to read half of the remaining pages tomorrow, then she should read 84/2 = 42 pages.\n#### 42",
        "total_pages = 120\nread_yesterday = 12\nread_today = 2 * read_yesterday\nremaining = total_pages - read_yesterday - read_today\nanswer = remaining / 2",
    ),
    (
        "James writes a 3-page letter to 2 different friends twice a week.  How many pages does he write a year?",
        "How many pages does he write to his friends each time? ** He writes each friend 3*2=6 pages a week\nHow many pages does he write every week? ** So he writes 6*2=12 pages every week\nHow many pages does he write a year? ** That means he writes 12*52=624 pages a year\n#### 624",
        "pages_per_letter = 3\nfriends = 2\ntimes_per_week = 2\nweeks_per_year = 52\nanswer = pages_per_letter * friends * times_per_week * weeks_per_year",
    ),
    (
        "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow, and there are 80% more of those in purple. There are only 25% as many green flowers as there are yellow and purple flowers. How many flowers does Mark have in his garden?",
        "How many more purple flowers are there than yellow flowers? ** There are 80/100 * 10 = 8 more purple flowers than yellow flowers.\nHow many purple flowers are there? ** So in Mark's garden, there are 10 + 8 = 18 purple flowers.\nHow many yellow and purple flowers are there? ** Purple and yellow flowers sum up to 10 + 18 = 28 flowers.\nHow many green flowers are there? ** That means in Mark's garden there are 25/100 * 28 = 7 green flowers.\nHow many plants does Mark have in his garden? ** So in total Mark has 28 + 7 = 35 plants in his garden.\n#### 35",
        "yellow = 10\npurple = yellow + yellow * 80 / 100\ngreen = (yellow + purple) * 25 / 100\nanswer = yellow + purple + green",
    ),
    (
        "Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza has 8 slices. If he eats it all, how many pieces does he eat that day?",
        "How many slices are in the large pizzas? ** He eats 32 from the largest pizzas because 2 x 16 = 32\nHow many slices are in the small pizzas? ** He eats 16 from the small pizza because 2 x 8 = 16\nHow many pieces does he eat that day? ** He eats 48 pieces because 32 + 16 = 48\n#### 48",
        "large_pizzas = 2\nsmall_pizzas = 2\nslices_large = 16\nslices_small = 8\nanswer = large_pizzas * slices_large + small_pizzas * slices_small",
    ),
    (
        "Ken created a care package to send to his brother, who was away at boarding school.  Ken placed a box on a scale, and then he poured into the box enough jelly beans to bring the weight to 2 pounds.  Then, he added enough brownies to cause the weight to triple.  Next, he added another 2 pounds of jelly beans.  And finally, he added enough gummy worms to double the weight once again.  What was the final weight of the box of goodies, in pounds?",
        "What was the weight after the brownies? ** To the initial 2 pounds of jelly beans, he added enough brownies to cause the weight to triple, bringing the weight to 2*3=6 pounds.\nWhat was the weight after the second jelly beans? ** Next, he added another 2 pounds of jelly beans, bringing the weight to 6+2=8 pounds.\nWhat was the final weight? ** And finally, he added enough gummy worms to double the weight once again, to a final weight of 8*2=16 pounds.\n#### 16",
        "weight = 2\nweight = weight * 3\nweight = weight + 2\nweight = weight * 2\nanswer = weight",
    ),
]
_INSTRUCTIONS = {
    Strategy.COT: 'Solve each math word problem step by step. End with the line "The answer is N."',
    Strategy.L2M: (
        "Solve each math word problem by breaking it into sub-questions and answering them in order, "
        'one per line as "Sub-question k: ... Answer k: ...". End with the line "The answer is N."'
    ),
    Strategy.POT: (
        "Solve each math word problem with a Python program that stores the final number in a variable "
        "named `answer`. Only math, fractions, itertools, sympy and similar modules are available."
    ),
}


def _exemplar_solution(strategy: Strategy, socratic: str, program: str) -> str:
    if strategy is Strategy.POT:
        return program
    gold = socratic.rsplit("####", 1)[1].strip()
    body = gsm8k_cot(re.sub(r"^.*? \*\* ", "", socratic, flags=re.MULTILINE))
    if strategy is Strategy.L2M:
        body = gsm8k_l2m(socratic)
    return f"{body}\n{ANSWER_MARKER} {gold}."


def teacher_prompt(strategy: Strategy, question: str, n_shots: int = 8) -> str:
    """Few-shot completion prompt; the teacher continues after the final `Solution:` line."""
    strategy = Strategy(strategy)
    if not 0 <= n_shots <= len(_EXEMPLARS):
        raise ValueError(f"n_shots must be in 0..{len(_EXEMPLARS)}, got {n_shots}")
    blocks = [_INSTRUCTIONS[strategy]]
    for q, socratic, program in _EXEMPLARS[:n_shots]:
        blocks.append(f"Question: {q}\nSolution:\n{_exemplar_solution(strategy, socratic, program)}")
    blocks.append(f"Question: {question.strip()}\nSolution:\n")
    return "\n\n".join(blocks)


def parse_teacher_completion(strategy: Strategy, text: str) -> str:
    """The teacher's solution, cut at the next exemplar boundary.

    CoT/L2M keep their last well-formed `The answer is N.` line (anything after it is dropped); PoT returns the bare
    program (code fences removed). Use `split_final_answer` to separate rationale and answer.
    """
    strategy = Strategy(strategy)
    text = _BOUNDARY_RE.split(text, maxsplit=1)[0]
    if strategy is Strategy.POT:
        return _program(text)
    final = _final_answer(text)
    if final is not None:
        return text[: final[1]].strip()
    m = _ANSWER_LINE_RE.search(text)
    return (text[: m.end()] if m else text).strip()


# --------------------------------------------------------------------------- judging
def judge(
    strategy: Strategy, rationale_or_text: str, gold: str, *, judging: Judging = DEFAULT_JUDGING
) -> tuple[str | None, bool]:
    """(predicted answer, correct) for one rationale; PoT runs in the sandbox. `judging`: the run's
    tolerance and sandbox mode (callers pass the run's; the default is the config's defaults)."""
    return judge_many([(strategy, rationale_or_text)], [gold], judging=judging)[0]


@dataclass(frozen=True)
class Verdict:
    """One judged response. `reason` says why `pred` is None: "unparseable" (CoT/L2M: no answer found),
    "empty_program", or for PoT `PotResult.reason` ("timeout", "no_answer", "ZeroDivisionError", ...)."""

    pred: str | None
    correct: bool
    reason: str | None = None


def judge_many(
    items: list[tuple[Strategy | None, str]], golds: list[str], *, judging: Judging = DEFAULT_JUDGING
) -> list[tuple[str | None, bool]]:
    """Batched `judge`: all PoT programs run in one sandbox batch (parallel workers)."""
    return [(v.pred, v.correct) for v in judge_verdicts(items, golds, judging=judging)]


def judge_verdicts(
    items: list[tuple[Strategy | None, str]], golds: list[str], *, judging: Judging = DEFAULT_JUDGING
) -> list[Verdict]:
    """`judge_many` with the reason of every empty prediction."""
    if len(items) != len(golds):
        raise ValueError(f"judge_many: {len(items)} items but {len(golds)} golds")
    preds: list[str | None] = [None] * len(items)
    reasons: list[str | None] = [None] * len(items)
    pot_idx, programs = [], []
    for i, (strategy, text) in enumerate(items):
        # None = "whatever the tag says"; untagged text is then judged as prose, never executed.
        parsed = parse_response(text, strategy=None if strategy is None else Strategy(strategy))
        if parsed.strategy is Strategy.POT and not parsed.rationale.strip():
            reasons[i] = "empty_program"
        elif parsed.strategy is Strategy.POT:
            pot_idx.append(i)
            programs.append(parsed.rationale)
        else:
            preds[i] = parsed.answer_text
            reasons[i] = None if preds[i] is not None else "unparseable"
    if programs:
        from edge_distill.sandbox import run_programs  # the pool starts only when PoT is judged

        for i, res in zip(pot_idx, run_programs(programs, mode=judging.sandbox_mode), strict=True):
            preds[i], reasons[i] = (res.answer, None) if res.ok else (None, res.reason)
    tol = judging.rel_tol
    return [Verdict(p, answers_match(p, g, tol), r) for p, g, r in zip(preds, golds, reasons, strict=True)]
