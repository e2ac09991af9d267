"""Dual CoTs for EDIT: teacher prompts (AHP, CCP) and an offline wrong-twin generator. Torch-free.

EDIT ("Beyond Imitation: Learning Key Reasoning Steps from Dual Chain-of-Thoughts in Reasoning
Distillation", Dai et al., 2024) pairs a right and a wrong CoT that differ in a few key steps:
- AHP (answer-hint prompting): re-ask the teacher a question it got wrong, with the correct answer as a
  hint, at low temperature → a right CoT close to the wrong one.
- CCP (contrastive CoT prompting): show the teacher a right CoT and ask for a copy that changes exactly one
  step → a wrong twin.
The exemplars below are our own (not GSM8K items). A recorded teacher cannot be re-prompted, so
`perturb_gsm8k_solution` makes the wrong twin deterministically from a gold solution with calculator
annotations: it swaps the operation of one step (a logic error — the paper finds those teach more than
calculation errors), recomputes that step and carries the new value through every later step.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from dataclasses import dataclass

from edge_distill.strategies import ANSWER_MARKER

# --------------------------------------------------------------------------- prompts
_EXEMPLARS: list[tuple[str, str, str, str]] = [
    # (question, right CoT, wrong twin that changes one step, gold answer)
    (
        "A baker makes 36 muffins. She sells 5 boxes of 6 muffins each. How many muffins are left?",
        "The boxes hold 5 * 6 = 30 muffins.\nShe has 36 - 30 = 6 muffins left.",
        "The boxes hold 5 + 6 = 11 muffins.\nShe has 36 - 11 = 25 muffins left.",
        "6",
    ),
    (
        "Tom reads 12 pages a day for 4 days, then reads half as many pages on the fifth day as on "
        "each earlier day. How many pages did he read in total?",
        "In the first 4 days he reads 12 * 4 = 48 pages.\nOn the fifth day he reads 12 / 2 = 6 pages.\n"
        "In total he reads 48 + 6 = 54 pages.",
        "In the first 4 days he reads 12 * 4 = 48 pages.\nOn the fifth day he reads 12 * 2 = 24 pages.\n"
        "In total he reads 48 + 24 = 72 pages.",
        "54",
    ),
    (
        "A ticket costs $15 and a drink costs $4 less than a ticket. How much do 3 tickets and 2 drinks cost?",
        "A drink costs 15 - 4 = $11.\nThree tickets cost 3 * 15 = $45.\nTwo drinks cost 2 * 11 = $22.\n"
        "Together they cost 45 + 22 = $67.",
        "A drink costs 15 - 4 = $11.\nThree tickets cost 3 * 15 = $45.\nTwo drinks cost 2 * 11 = $22.\n"
        "Together they cost 45 - 22 = $23.",
        "67",
    ),
]
EXEMPLAR_BOUNDARY = "\n\nQuestion:"
STOP_STRINGS = ("\nQuestion:", "\nWrong solution:", "\nCorrect solution:")


def _answer_line(answer: str) -> str:
    return f"{ANSWER_MARKER} {answer}."


def ahp_prompt(question: str, gold: str) -> str:
    """Answer-hint prompt (EDIT §3.1): few-shot CoTs, each under a "Hint" line with its correct answer."""
    shots = [
        f"Question: {q}\nHint: the correct answer is {a}.\nAnswer: {right}\n{_answer_line(a)}"
        for q, right, _, a in _EXEMPLARS
    ]
    shots.append(f"Question: {question}\nHint: the correct answer is {gold}.\nAnswer:")
    return "\n\n".join(shots)


def ccp_prompt(question: str, right_rationale: str, gold: str) -> str:
    """Contrastive prompt (EDIT §3.1): copy a right solution but make exactly one step wrong."""
    head = (
        "Each correct solution below is followed by a wrong solution that copies it but makes exactly one "
        "reasoning step wrong (a wrong operation or a wrong quantity) and carries that mistake to the end."
    )
    shots = [
        f"Question: {q}\nCorrect solution: {right}\n{_answer_line(a)}\nWrong solution: {wrong}\n"
        f"{_answer_line(_last_number(wrong))}"
        for q, right, wrong, a in _EXEMPLARS
    ]
    shots.append(
        f"Question: {question}\nCorrect solution: {right_rationale}\n{_answer_line(gold)}\nWrong solution:"
    )
    return head + "\n\n" + "\n\n".join(shots)


def cut_completion(text: str) -> str:
    """The teacher's answer to the last exemplar: everything before the next exemplar starts."""
    for boundary in (EXEMPLAR_BOUNDARY, "\nQuestion:", "\nWrong solution:", "\nCorrect solution:"):
        i = text.find(boundary)
        if i >= 0:
            text = text[:i]
    return text.strip()


def split_rationale(text: str) -> str:
    """The rationale body without the final-answer line (what `Sample.rationale` holds)."""
    i = text.rfind(ANSWER_MARKER)
    return (text[:i] if i >= 0 else text).strip()


def _last_number(text: str) -> str:
    nums = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return nums[-1] if nums else ""


# --------------------------------------------------------------------------- offline wrong twins
_ANNOT = re.compile(r"<<([^<>=]+)=([^<>]+)>>(\$?-?[\d,]*\.?\d+)?")
_NUM = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_VISIBLE = re.compile(
    r"((?:\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)%?|[()])(?:\s*(?:[-+*/x×÷]|[()])?\s*\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+|[()])%?)*)\s*=\s*\$?$"
)
_SWAP = {"+": "-", "-": "+", "*": "/", "/": "*"}
_VISIBLE_OP = {"+": "+", "-": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}


@dataclass(frozen=True)
class Perturbation:
    """A wrong twin of a gold solution: `solution` (annotated like the input) and its final `answer`."""

    solution: str
    answer: str
    step: int  # index of the perturbed calculator step
    swap: str  # e.g. "*->/"
    changed_steps: int  # steps whose value changed (the perturbed one + propagated ones)


def _safe_eval(expr: str) -> float | None:
    if not re.fullmatch(r"[\d.+\-*/() ]+", expr) or "**" in expr:
        return None
    try:
        with warnings.catch_warnings():  # "2(3)" compiles with a SyntaxWarning, then fails with TypeError
            warnings.simplefilter("ignore", SyntaxWarning)
            value = eval(expr, {"__builtins__": {}}, {})  # noqa: S307 - digits/operators only (checked above)
    except (ZeroDivisionError, SyntaxError, TypeError, ValueError, OverflowError):
        return None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _fmt(x: float) -> str | None:
    """GSM8K-style number; None when the value would not look like a plausible step result."""
    if x < 0 or abs(x) > 1e9 or abs(x - round(x, 2)) > 1e-9:
        return None
    r = round(x, 2)
    return str(int(r)) if r == int(r) else f"{r:.2f}".rstrip("0")


def _num(s: str) -> float:
    return float(s.replace(",", "").replace("$", "").rstrip("%"))


def _ops(expr: str) -> list[tuple[int, str]]:
    """Binary operators of an annotation expression (a '-' right after '(' or at the start is unary)."""
    out = []
    for i, ch in enumerate(expr):
        if ch in _SWAP and not (ch == "-" and (i == 0 or expr[i - 1] in "(*/+-")):
            out.append((i, ch))
    return out


def _visible_ops(vis: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in re.finditer(r"[-+*/x×÷]", vis)]


def _sub_numbers(expr: str, mapping: dict[float, float]) -> str:
    def repl(m: re.Match[str]) -> str:
        v = _num(m.group())
        for old, new in mapping.items():
            if abs(v - old) < 1e-9:
                return _fmt(new) or m.group()
        return m.group()

    return _NUM.sub(repl, expr)


def perturb_gsm8k_solution(solution: str, seed: str = "") -> Perturbation | None:
    """Swap the operation of one calculator step of a GSM8K gold solution and carry the error through.

    Deterministic for a given (solution, seed). Steps with a visible equation ("48/2 = <<48/2=24>>24")
    are tried first, so the mistake shows in the rationale text; the twin is rejected unless its final
    answer (after "####") differs from the gold one. Returns None when no step yields a clean twin.
    """
    body, sep, final = solution.rpartition("####")
    if not sep or not _ANNOT.search(body):
        return None
    steps = list(_ANNOT.finditer(body))
    visible = [_VISIBLE.search(body[: m.start()].split("\n")[-1]) is not None for m in steps]
    start = int(hashlib.sha256((seed or solution).encode()).hexdigest(), 16) % len(steps)
    order = sorted(range(len(steps)), key=lambda i: (not visible[i], (i - start) % len(steps)))
    for idx in order:
        for pos, op in _ops(steps[idx].group(1)):
            twin = _try_swap(body, final.strip(), steps, idx, pos, op)
            if twin is not None:
                return twin
    return None


def _try_swap(
    body: str, final: str, steps: list[re.Match[str]], idx: int, pos: int, op: str
) -> Perturbation | None:
    exprs = [m.group(1) for m in steps]
    olds = [_safe_eval(e) for e in exprs]
    if olds[idx] is None:
        return None
    new_exprs = list(exprs)
    new_exprs[idx] = exprs[idx][:pos] + _SWAP[op] + exprs[idx][pos + 1 :]
    mapping: dict[float, float] = {}
    values: dict[int, float] = {}
    for k in range(idx, len(steps)):
        if k > idx:
            new_exprs[k] = _sub_numbers(exprs[k], mapping)
        if new_exprs[k] == exprs[k]:
            continue
        new, old = _safe_eval(new_exprs[k]), olds[k]
        if new is None or old is None or _fmt(new) is None:
            return None
        if abs(new - old) > 1e-9:
            mapping[old] = new
            values[k] = new
    if idx not in values:
        return None
    final_v = _num(final) if _NUM.fullmatch(final.replace("$", "").replace("-", "")) else None
    new_final = next((v for o, v in mapping.items() if final_v is not None and abs(o - final_v) < 1e-9), None)
    if new_final is None:
        return None
    # rewrite the text back to front so earlier offsets stay valid
    out = body
    for k in sorted(values, reverse=True):
        m = steps[k]
        shown = _fmt(values[k]) or ""
        tail = m.group(3) or ""
        tail = ("$" if tail.startswith("$") else "") + shown if tail else ""
        annot = f"<<{new_exprs[k]}={shown}>>{tail}"
        line_start = out.rfind("\n", 0, m.start()) + 1
        before = out[line_start : m.start()]
        vm = _VISIBLE.search(before)
        if vm is not None:
            vis = vm.group(1)
            if k == idx:
                vops = _visible_ops(vis)
                which = [p for p, _ in _ops(exprs[k])].index(pos)
                if len(vops) != len(_ops(exprs[k])) or _VISIBLE_OP[vops[which][1]] != op:
                    return None
                vpos, vch = vops[which]
                new_sym = _SWAP[op] if vch in "+-*/" else {"*": "/", "/": "x"}[op]
                vis = vis[:vpos] + new_sym + vis[vpos + 1 :]
            else:
                vis = _sub_numbers(vis, mapping)
            before = before[: vm.start(1)] + vis + before[vm.end(1) :]
        out = out[:line_start] + before + annot + out[m.end() :]
    answer = _fmt(new_final)
    if answer is None:
        return None
    return Perturbation(
        solution=f"{out}#### {answer}",
        answer=answer,
        step=idx,
        swap=f"{op}->{_SWAP[op]}",
        changed_steps=len(values),
    )


_PLAIN_EQ = re.compile(
    r"(?P<vis>(?:\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)|\()[\d$.,()\s]*(?:[-+*/x×÷][\d$.,()\s]+)+?)"
    r"\s*=\s*(?P<cur>\$?)(?P<res>\d[\d,]*(?:\.\d+)?)(?![\d<])"
)
_STRIP = re.compile(r"<<[^<>]*>>")


def _annotate_plain(text: str) -> str:
    """Give visible equations ("48/2 = 24") GSM8K calculator annotations so they can be perturbed."""

    def repl(m: re.Match[str]) -> str:
        vis = m.group("vis").rstrip()
        expr = re.sub(r"[$,\s]", "", vis).replace("x", "*").replace("×", "*").replace("÷", "/")
        res = m.group("res").replace(",", "")
        value = _safe_eval(expr)
        if value is None or abs(value - float(res)) > 1e-6 * max(1.0, abs(value)):
            return m.group()  # not an arithmetic identity we can recompute
        return f"{vis} = {m.group('cur')}<<{expr}={res}>>{res}"

    return _PLAIN_EQ.sub(repl, text)


def perturb_rationale(rationale: str, gold: str, seed: str = "") -> tuple[str, str, Perturbation] | None:
    """Wrong twin of a rationale (with or without calculator annotations) whose final answer is `gold`.

    Returns (wrong rationale in the input's own style, wrong answer, the perturbation) or None.
    """
    annotated = "<<" in rationale
    source = rationale if annotated else _annotate_plain(rationale)
    p = perturb_gsm8k_solution(f"{source}\n#### {gold}", seed)
    if p is None:
        return None
    body = p.solution.rpartition("####")[0].rstrip("\n")
    if not annotated:
        body = _STRIP.sub("", body)
    return body, p.answer, p
