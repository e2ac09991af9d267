"""The published layouts of math word-problem datasets, and the rules that read a row's fields.

`LAYOUTS` is the table `data.load_problems` recognises a file by (one row per layout, each tested on a
fixture in `tests/fixtures/published/`); `gold` is the gold-answer rule of `edge_distill.data`'s
docstring, the one place it lives; `choose_layout` picks the layout of a file's rows. A row-level problem
raises `Malformed`, which the loader turns into a DataError naming the file and row (or a counted skip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edge_distill.answers import gsm8k_gold, normalize_number

_TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
# bracketed text with a letter in it: ASDiv's "(apples)", "[cm]"; "(-5)" is a number and stays
_UNIT_BRACKETS_RE = re.compile(r"\s*(?:\([^()\[\]]*[A-Za-z][^()\[\]]*\)|\[[^()\[\]]*[A-Za-z][^()\[\]]*\])")
_BOXED_RE = re.compile(r"\\boxed\s*\{")
NOT_A_NUMBER = "answer is not a number"  # the skip reason that never stops a load

Row = tuple[str, Any]  # (location inside the file: "3", "item 3", "Problem 3", "row 3"; parsed row)


class Malformed(Exception):
    """A row-level problem; turned into a DataError (or a counted skip) with file:row attached.

    `reason` is the short category the skip summary counts ("missing field 'Answer'")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Layout:
    """How one published dataset lays out a problem: the fields that recognise it and where the question,
    the gold answer and the id are. `question` is a field or a template ("{Body} {Question}"); `ids` are
    tried in order (none present: a hash of the question); `gold` "number" is the gold-answer rule,
    "boxed" the last \\boxed{} of the field (MATH solutions); `solution` a field kept as the reference
    rationale. `datasets`: the names (`NAME:PATH`) published in this layout."""

    name: str
    fields: frozenset[str]
    question: str
    answer: str
    ids: tuple[str, ...] = ()
    gold: str = "number"
    solution: str | None = None
    datasets: tuple[str, ...] = ()


def _layout(name: str, fields: str, question: str, answer: str, ids: str = "", *, datasets: str,
            gold: str = "number", solution: str | None = None) -> Layout:  # fmt: skip
    return Layout(name, frozenset(fields.split()), question, answer, tuple(ids.split()), gold, solution,
                  tuple(datasets.split()))  # fmt: skip


_MAWPS_NAMES = "mawps multiarith addsub singleeq singleop"
# Recognition tries these in order: the first whose fields a row has wins, so specific layouts come first.
LAYOUTS: tuple[Layout, ...] = (
    # ASDiv (XML <Problem ID=..> or its JSON export): Body + Question, "9 (apples)", Formula
    _layout("asdiv", "Body Question Answer Formula", "{Body} {Question}", "Answer", "ID", datasets="asdiv"),
    # SVAMP.json (arkilpatel/SVAMP, ChilleD/SVAMP): Body + Question, Answer (a float), ID, Equation, Type
    _layout("svamp", "Body Question Answer", "{Body} {Question}", "Answer", "ID", datasets="svamp asdiv"),
    # ToRA's asdiv jsonl: lower-case body/question/answer ("9 (apples)", or a name: skipped)
    _layout("asdiv-tora", "body question answer", "{body} {question}", "answer", "idx id", datasets="asdiv"),
    # MultiArith / AddSub / SingleEq / MAWPS as published: iIndex, sQuestion, lEquations, lSolutions
    _layout("mawps", "sQuestion lSolutions", "sQuestion", "lSolutions", "iIndex", datasets=_MAWPS_NAMES),
    # LLM-Adapters (dataset/<name>/test.json, math_10k.json): instruction (+ input), output, answer
    _layout(
        "llm-adapters",
        "instruction input answer",
        "{instruction} {input}",
        "answer",
        solution="output",
        datasets=f"{_MAWPS_NAMES} svamp gsm8k aqua",
    ),  # fmt: skip
    # GSM-Hard (reasoning-machines/gsm-hard): input, code (a Python program), target (a float)
    _layout("gsm-hard", "input code target", "input", "target", "idx id", datasets="gsm-hard gsmhard"),
    # ToRA's jsonl (data/mawps/*.jsonl, gsm-hard): input, target
    _layout(
        "input-target",
        "input target",
        "input",
        "target",
        "idx id",
        datasets=f"{_MAWPS_NAMES} gsm-hard gsmhard svamp",
    ),  # fmt: skip
    # MATH-500 (problem, solution, answer, unique_id); MATH (problem, solution with \boxed{}, level, type)
    _layout(
        "math-answer",
        "problem answer",
        "problem",
        "answer",
        "unique_id id",
        solution="solution",
        datasets="math math500",
    ),  # fmt: skip
    _layout(
        "math",
        "problem solution",
        "problem",
        "solution",
        "unique_id id",
        gold="boxed",
        solution="solution",
        datasets="math math500",
    ),  # fmt: skip
    # MultiArith on the hub (ChilleD/MultiArith): question, final_ans
    _layout("question-final_ans", "question final_ans", "question", "final_ans", "id", datasets="multiarith"),
    # Calc-X (MU-NLPC/Calc-gsm8k, Calc-svamp, ...): id, question, chain, result
    _layout(
        "calc-x",
        "question result",
        "question",
        "result",
        "id",
        datasets=f"calc-x gsm8k svamp asdiv {_MAWPS_NAMES}",
    ),  # fmt: skip
    # GSM8K main and socratic (openai/gsm8k), and every {question, answer} file (ToRA's, this project's)
    _layout("gsm8k", "question answer", "question", "answer", "id idx", datasets="gsm8k gsm8k-socratic"),
)
DATASET_NAMES = tuple(sorted({n for layout in LAYOUTS for n in layout.datasets}))


def field_value(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise Malformed(f"missing field {name!r} (fields present: {present})", f"missing field {name!r}")
    return row[name]


def text_of(row: dict[str, Any], spec: str) -> Any:
    """A field's value, or a template of fields rendered as text ("{Body} {Question}")."""
    if "{" not in spec:
        return field_value(row, spec)

    def fill(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        value = field_value(row, m.group(1))
        return "" if value is None else str(value).strip()

    return " ".join(_TEMPLATE_RE.sub(fill, spec).split())


def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces allowed), or None."""
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def gold_answer(value: Any, field: str, rule: str = "number") -> tuple[str, str | None]:
    """(normalized answer, solution text or None): the gold-answer rule of the module docstring."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise Malformed(f"field {field!r} is an empty list", "answer is an empty list")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Malformed(
            f"field {field!r} must be a number or a '#### N' solution, got {type(value).__name__}",
            "answer has the wrong type",
        )
    text = str(value)
    if rule == "boxed":
        boxed = _last_boxed(text) if len(text) <= 100_000 else None
        answer = normalize_number(boxed) if boxed is not None else None
        if answer is None:
            shown = "no \\boxed{}" if boxed is None else f"\\boxed{{{boxed[:60]}}}"
            raise Malformed(f"field {field!r} is not a number: {shown}", NOT_A_NUMBER)
        return answer, text
    if "####" in text:
        try:
            return gsm8k_gold(text), text
        except ValueError as e:
            raise Malformed(f"field {field!r}: {e}", NOT_A_NUMBER) from e
    answer = normalize_number(text)
    if answer is None and len(text) <= 1000:
        answer = normalize_number(_UNIT_BRACKETS_RE.sub("", text))
    if answer is None:
        raise Malformed(f"field {field!r} is not a number: {text[:60]!r}", NOT_A_NUMBER)
    return answer, None
