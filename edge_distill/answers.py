"""The one answer extractor and comparer, used for teacher filtering, student sampling and eval alike.

Using a single implementation everywhere matters: if filtering accepted "1,000" but eval did not, the
student would be trained on data the metric then calls wrong. Numbers are compared exactly as
fractions, within a relative tolerance (|a-b| <= rel_tol * max(1, |b|), rel_tol 1e-4 unless the config
key `answers.rel_tol` says otherwise: callers pass it, `Judging.rel_tol`; there is no process-wide value)
so that 0.3333 matches 1/3 and float noise from PoT programs ("0.30000000000000004") does not count as a
wrong answer.

Answers come from models and user files, so nothing here raises on any input: a number with more than
`MAX_DIGITS` digits (or an exponent beyond +-50), or an answer text longer than `MAX_ANSWER_CHARS`, is
not an answer. `normalize_number` gives None for it and `answers_match` False (a bare 5000-digit gold
used to crash the load with Python's int-digit-limit ValueError).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache

from edge_distill.types import DEFAULT_REL_TOL, MAX_REL_TOL

__all__ = [
    "ANSWER_MARKER",
    "MAX_REL_TOL",
    "REL_TOL",
    "answers_match",
    "extract_answer",
    "gsm8k_gold",
    "normalize_number",
    "parse_number",
]

ANSWER_MARKER = "The answer is"
REL_TOL = Fraction(1, 10_000)  # the default of `answers.rel_tol` (types.DEFAULT_REL_TOL)
# A model that runs past its answer starts the next few-shot block; nothing from there is its answer.
_RUN_ON_RE = re.compile(r"\n\s*Question:")
# Non-terminating fractions (1/3) are written with this many decimals; the tolerance is far coarser.
_DECIMALS = 10
# Anything longer is not a final answer but a paragraph that happens to follow a marker.
_MAX_TEXT_ANSWER = 40
# No word-problem answer has more digits; Python cannot even print an int past 4300 of them.
MAX_DIGITS = 100
# A text that *is* one number ("$1,000.50 dollars") is short; longer ones are not parsed at all.
MAX_ANSWER_CHARS = 1000
_ABSURD = re.compile(rf"\d{{{MAX_DIGITS + 1}}}")

# A plain number: thousands groups must be well formed so a list "1,2,3" is not read as 123.
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
# The sign only counts when it is not a binary minus ("5-3" is 5 and 3, not 5 and -3).
_SIGNED = rf"(?<![\w.)\]}}])[-−–]?\s?\$?\s?(?:{_NUM})"
_NUMBER_RE = re.compile(
    rf"(?P<mixed>{_SIGNED}\s+\d+\s*/\s*\d+)(?![\d/])"  # 2 1/2
    rf"|(?P<frac>{_SIGNED}\s*/\s*\d+)(?![\d/.])"  # 3/4 (not a date 1/2/2020)
    rf"|(?P<sci>{_SIGNED}[eE][-+]?\d+)(?![\d])"  # 1.5e3
    rf"|(?P<num>{_SIGNED})"
)
# Final-answer markers, strongest first. "Answer 2:" (an L2M step) deliberately does not match.
_MARKERS = [
    re.compile(r"the (?:final )?answer is\s*[:=]?", re.IGNORECASE),
    re.compile(r"####"),
    re.compile(r"\\boxed\s*\{"),
    re.compile(r"(?:final answer|\banswer)\s*[:=]", re.IGNORECASE),
]
_LATEX_SUBS = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"(\1)/(\2)"),
    (re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[,!;: ]"), ""),
    (re.compile(r"\\(?:left|right)\b"), ""),
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\\(?:cdot|times)"), "*"),
]
_SIMPLE_FRAC = re.compile(r"\((-?\d+(?:\.\d+)?)\)/\((-?\d+(?:\.\d+)?)\)")


def _clean_latex(text: str) -> str:
    for pattern, repl in _LATEX_SUBS:
        text = pattern.sub(repl, text)
    return _SIMPLE_FRAC.sub(r"\1/\2", text)


def _to_fraction(token: str) -> Fraction | None:
    """Exact value of a plain decimal token such as "-1,000.50" (sign, `$`, commas allowed)."""
    token = token.replace(",", "").replace("$", "").replace(" ", "")
    token = token.replace("−", "-").replace("–", "-")
    if sum(c.isdigit() for c in token) > MAX_DIGITS:
        return None
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return Fraction(value)


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if len(text) <= MAX_DIGITS else None


def _match_value(m: re.Match[str]) -> Fraction | None:
    text = m.group(0)
    try:
        if m.group("mixed"):
            whole, frac = re.match(r"(.*\d)\s+(\d+\s*/\s*\d+)$", text).groups()  # type: ignore[union-attr]
            w = _to_fraction(whole)
            num, den = (_int(x) for x in frac.split("/"))
            if w is None or num is None or not den:
                return None
            f = Fraction(num, den)
            return w - f if w < 0 or whole.strip().startswith(("-", "−", "–")) else w + f
        if m.group("frac"):
            num_s, den_s = text.rsplit("/", 1)
            num, den = _to_fraction(num_s), _int(den_s)
            return None if num is None or not den else num / den
        if m.group("sci"):
            mant, exp = re.split(r"[eE]", text)
            mv, ev = _to_fraction(mant), int(exp)
            if mv is None or abs(ev) > 50:  # an exponent this large is not a word-problem answer
                return None
            return mv * Fraction(10) ** ev
        return _to_fraction(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _format(value: Fraction) -> str:
    """Canonical text of a number: integers plainly, other values as a decimal without trailing zeros."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1 and value.denominator <= 10**_DECIMALS:
        text = f"{Decimal(value.numerator) / Decimal(value.denominator):f}"
    else:
        text = f"{round(Decimal(value.numerator) / Decimal(value.denominator), _DECIMALS):f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


def parse_number(s: str) -> Fraction | None:
    """Exact value of a text that *is* one number ("$1,000", "3/4", "2 1/2", "50%", "\\frac{1}{2}", "-3.")."""
    if not isinstance(s, str) or len(s) > MAX_ANSWER_CHARS:
        return None
    text = _clean_latex(s.strip())
    text = text.strip().strip("{}").strip()
    text = re.sub(r"[.。]+$", "", text).strip()
    text = re.sub(r"\s*%$|\s*percent$", "", text).strip()
    text = re.sub(r"^\$\s*|\s*(?:dollars?|usd)$", "", text, flags=re.IGNORECASE).strip()
    m = _NUMBER_RE.fullmatch(text)
    if m is None:
        # A number followed by a unit word ("18 eggs", "5 cm^2") still is one number.
        m = _NUMBER_RE.match(text)
        if m is None or not re.fullmatch(r"\s*[A-Za-z][A-Za-z\s.'/-]{0,30}(?:\^?[23²³])?", text[m.end() :]):
            return None
    return _match_value(m)


def normalize_number(s: str | None) -> str | None:
    """Canonical string of a number written in any usual way, or None if `s` is not one number.

    "1,000" -> "1000", "$5.50" -> "5.5", "3/4" -> "0.75", "-0.0" -> "0", "1/3" -> "0.3333333333".
    Idempotent: normalizing a normalized string gives it back. Never raises: anything that is not one
    number of at most MAX_DIGITS digits (a 5000-digit string, an object, a 1 MB text) gives None.
    """
    if s is None:
        return None
    value = parse_number(s)
    return None if value is None else _format(value)


def _first_number(text: str) -> Fraction | None:
    for m in _NUMBER_RE.finditer(text):
        value = _match_value(m)
        if value is not None:
            return value
    return None


def _last_number(text: str) -> Fraction | None:
    found = None
    for m in _NUMBER_RE.finditer(text):
        value = _match_value(m)
        if value is not None:
            found = value
    return found


def _braced(text: str, start: int) -> str:
    """Content of a {...} group whose opening brace is just before `start` (nested braces allowed)."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def extract_answer(text: str | None) -> str | None:
    """The final answer of a rationale, normalized (see `normalize_number`), or None.

    The text is first cut where a model that ran past its answer starts a new "Question:". Then, per
    final-answer marker kind, strongest first ("The answer is", "####", "\\boxed{}", "Answer:"), the
    LAST marker followed by a number wins: an early "The answer is:" with the number on a later line, or
    a draft answer that the rationale then corrects, must not beat "Therefore, the answer is 20000.".
    Without any marker: the last number in the text. If a marker is only followed by a short non-numeric
    answer ("The answer is Tuesday.") that text is returned, so it can still match a non-numeric gold.
    """
    if not text or not isinstance(text, str):
        return None
    text = _clean_latex(_RUN_ON_RE.split(text, maxsplit=1)[0])
    text_answer: str | None = None
    for marker in _MARKERS:
        found: Fraction | None = None
        for m in marker.finditer(text):
            if marker.pattern.startswith("\\\\boxed"):
                tail = _braced(text, m.end())
            else:
                tail = text[m.end() :].split("\n", 1)[0]
                # "The answer is \boxed{5}" and "#### 1,000" both end up here.
                tail = re.sub(r"\\boxed\s*\{", "", tail)
            value = _first_number(tail)
            if value is not None:
                found = value
                continue
            cleaned = tail.strip().strip("*").strip().rstrip(".").strip()
            if text_answer is None and 0 < len(cleaned) <= _MAX_TEXT_ANSWER:
                text_answer = cleaned
        if found is not None:
            return _format(found)
    if text_answer is not None:
        return text_answer
    value = _last_number(text)
    return None if value is None else _format(value)


def _text_key(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().rstrip(".").strip().casefold())


@lru_cache(maxsize=64)
def _tolerance(rel_tol: float) -> Fraction:
    if isinstance(rel_tol, bool) or not 0 <= float(rel_tol) <= MAX_REL_TOL:
        raise ValueError(f"answers.rel_tol must be between 0 and {MAX_REL_TOL}, got {rel_tol!r}")
    return Fraction(str(float(rel_tol)))


def answers_match(pred: str | None, gold: str | None, rel_tol: float = DEFAULT_REL_TOL) -> bool:
    """Whether a predicted answer equals the gold answer.

    Numbers: |a-b| <= rel_tol * max(1, min(|a|, |b|)) (`rel_tol`: the run's `answers.rel_tol`, at most
    MAX_REL_TOL; 0 = exact). That is
    the contract's rel_tol*max(1,|gold|) whenever |pred| >= |gold|, and slightly stricter otherwise, which
    makes the relation symmetric (a prediction is never "correct" against a gold that would not accept
    it back). Non-numbers: case-insensitive text.
    """
    if pred is None or gold is None:
        return False
    try:
        pred, gold = str(pred), str(gold)
    except ValueError:  # str() of an int past Python's digit limit: not an answer
        return False
    if max(len(pred), len(gold)) > MAX_ANSWER_CHARS or _ABSURD.search(pred) or _ABSURD.search(gold):
        # not an answer, not even as text
        return False
    a, b = parse_number(pred), parse_number(gold)
    if a is not None and b is not None:
        scale = max(Fraction(1), min(abs(a), abs(b)))
        return abs(a - b) <= _tolerance(rel_tol) * scale
    if a is not None or b is not None:
        return False
    ka, kb = _text_key(pred), _text_key(gold)
    return bool(ka) and ka == kb


def gsm8k_gold(answer_field: str) -> str:
    """Normalized gold answer of a GSM8K answer field ("...\\n#### 1,000" -> "1000") or a bare number.

    Raises ValueError naming what was found when there is no number after "####".
    """
    if not isinstance(answer_field, str):
        answer_field = str(answer_field)
    text = answer_field.rsplit("####", 1)[1] if "####" in answer_field else answer_field
    value = normalize_number(text.strip())
    if value is None:
        shown = text.strip()[:60]
        where = "after '####'" if "####" in answer_field else "(no '#### N' line either)"
        raise ValueError(f"no number {where}: {shown!r}")
    return value
