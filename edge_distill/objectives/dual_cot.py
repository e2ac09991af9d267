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

Rationales are model text (hostile): every parser here runs in time linear in the text (no nested
backtracking, no recursion: `_safe_eval` is a one-pass evaluator, not `eval`) and never raises; a step
too long or a solution with too many steps to be a GSM8K-style one is simply not perturbed.
"""

from __future__ import annotations

import hashlib
import math
import re
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
# A visible equation at the end of a line ("$10 x 1.2 = $"). Each number and run of blanks is matched
# atomically (a lookahead captures it, a backreference consumes it: atomic groups need Python 3.11), so
# no digit run can be split into numbers in exponentially many ways; parentheses are elements of their
# own. Searched only in the last _VISIBLE_WINDOW characters of the line.
_A_NUM = r"(?=(?P<{0}>\d[\d,]*(?:\.\d+)?|\.\d+))(?P={0})"
_A_BLANKS = r"(?=(?P<{0}>\s*))(?P={0})"
_VISIBLE = re.compile(
    rf"((?:\$?{_A_NUM.format('a')}%?|[()])"
    rf"(?:{_A_BLANKS.format('s')}(?:[-+*/x×÷]{_A_BLANKS.format('t')})?\$?(?:{_A_NUM.format('b')}|[()])%?)*)"
    r"\s*=\s*\$?$"
)
_VISIBLE_WINDOW = 200
_MAX_STEPS = 32  # calculator annotations: GSM8K solutions have at most ~10
_MAX_EXPR_CHARS = 200  # of one step's expression
_MAX_VALUE = 1e15  # below 2**53: float arithmetic on integers is exact, as Python's int arithmetic
_ARITH = re.compile(r"[0-9.+\-*/() ]+")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "u-": 3, "u+": 3}
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


def _apply(op: str, values: list[float]) -> bool:
    """Apply `op` to the value stack; False for a malformed expression, a division by zero or a value
    past _MAX_VALUE."""
    if op in ("u-", "u+"):
        if not values:
            return False
        values[-1] = -values[-1] if op == "u-" else values[-1]
        return True
    if len(values) < 2:
        return False
    b, a = values.pop(), values.pop()
    if op in ("/", "//") and b == 0:
        return False
    r = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b if op == "/" else a // b
    if not math.isfinite(r) or abs(r) > _MAX_VALUE:
        return False
    values.append(r)
    return True


def _safe_eval(expr: str) -> float | None:
    """The value of an arithmetic expression (digits, `+ - * / //`, unary signs, parentheses) as Python
    computes it, or None where Python would fail (syntax, `2(3)`, leading zeros, division by zero) or a
    value passes 1e15. One pass with explicit stacks (shunting-yard): linear, no recursion, never raises."""
    if len(expr) > _MAX_EXPR_CHARS or "**" in expr or not _ARITH.fullmatch(expr):
        return None
    values: list[float] = []
    ops: list[str] = []  # "(" or an operator of _PRECEDENCE
    operand, i = True, 0  # whether an operand (number, "(", unary sign) comes next
    while i < len(expr):
        c = expr[i]
        if c == " ":
            i += 1
        elif c.isdigit() or c == ".":
            m = _NUMBER.match(expr, i)
            if not operand or m is None:
                return None
            tok = m.group()
            if "." not in tok and tok[0] == "0" and tok.strip("0"):  # "05": a SyntaxError in Python
                return None
            if len(tok.replace(".", "").lstrip("0")) > 15:
                return None
            values.append(float(tok))
            operand, i = False, m.end()
        elif c == "(":
            if not operand:  # "2(3)", "(2)(3)": a call in Python
                return None
            ops.append("(")
            i += 1
        elif c == ")":
            if operand:  # "()", "(1+)"
                return None
            while ops and ops[-1] != "(":
                if not _apply(ops.pop(), values):
                    return None
            if not ops:
                return None
            ops.pop()
            i += 1
        elif operand:  # a sign
            if c not in "+-":
                return None
            ops.append("u" + c)
            i += 1
        else:
            op = "//" if expr.startswith("//", i) else c
            while ops and ops[-1] != "(" and _PRECEDENCE[ops[-1]] >= _PRECEDENCE[op]:
                if not _apply(ops.pop(), values):
                    return None
            ops.append(op)
            operand, i = True, i + len(op)
    if operand:
        return None
    while ops:
        op = ops.pop()
        if op == "(" or not _apply(op, values):
            return None
    return values[0] if len(values) == 1 else None


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


def _visible(line_before: str) -> re.Match[str] | None:
    """The visible equation that ends `line_before` (the text of a line up to an annotation)."""
    return _VISIBLE.search(line_before, max(0, len(line_before) - _VISIBLE_WINDOW))


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
    if len(steps) > _MAX_STEPS:
        return None
    exprs = [m.group(1) for m in steps]
    olds = [_safe_eval(e) for e in exprs]  # None: too long or not arithmetic, never swapped
    visible = [_visible(body[body.rfind("\n", 0, m.start()) + 1 : m.start()]) is not None for m in steps]
    start = int(hashlib.sha256((seed or solution).encode()).hexdigest(), 16) % len(steps)
    order = sorted(range(len(steps)), key=lambda i: (not visible[i], (i - start) % len(steps)))
    for idx in order:
        if olds[idx] is None:
            continue
        for pos, op in _ops(exprs[idx]):
            twin = _try_swap(body, final.strip(), steps, idx, pos, op, olds)
            if twin is not None:
                return twin
    return None


def _try_swap(
    body: str, final: str, steps: list[re.Match[str]], idx: int, pos: int, op: str, olds: list[float | None]
) -> Perturbation | None:
    exprs = [m.group(1) for m in steps]
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
        vm = _visible(before)
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


# A visible equation "48/2 = 24" in plain text. Its expression (`vis`) is a run of number characters and
# operators starting at a number or "(", with operators each followed by a number character and the run
# ended by "=" and the result. `_annotate_plain` finds the same equations as the regex
#   (?P<vis>(?:\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)|\()[\d$.,()\s]*(?:[-+*/x×÷][\d$.,()\s]+)+?)\s*=\s*<result>
# would (tests/test_edit.py checks the two agree), in one pass instead of a forward scan from every
# position (quadratic: 16 KB of text took 2 s).
_EQ_RUN = re.compile(
    r"[\d$.,()\s\-+*/x×÷]+"
)  # characters an expression (and the blanks before "=") is made of
_EQ_START = re.compile(r"\$?(?:\d|\.\d)|\(")
_EQ_RESULT = re.compile(r"\s*=\s*(?P<cur>\$?)(?P<res>\d[\d,]*(?:\.\d+)?)(?![\d<])")
_EQ_OPS = frozenset("-+*/x×÷")
_STRIP = re.compile(r"<<[^<>]*>>")


def _equation_start(text: str, lo: int, end: int) -> int:
    """The first position p >= lo where text[p:end] (a run of _EQ_RUN characters) is an expression: it
    starts at a number or "(", holds an operator, and every operator is followed by a non-operator."""
    last_op, last_bad = -1, lo - 1
    for i in range(lo, end):
        if text[i] in _EQ_OPS:
            last_op = i
            if i + 1 == end or text[i + 1] in _EQ_OPS:
                last_bad = i
    for p in range(last_bad + 1, last_op):
        if _EQ_START.match(text, p):
            return p
    return -1


def _annotate_plain(text: str) -> str:
    """Give visible equations ("48/2 = 24") GSM8K calculator annotations so they can be perturbed."""
    out: list[str] = []
    done = 0  # text[:done] is handled
    for run in _EQ_RUN.finditer(text):
        end = run.end()
        if end >= len(text) or text[end] != "=" or end <= done:
            continue
        p = _equation_start(text, max(run.start(), done), end)
        m = _EQ_RESULT.match(text, end) if p >= 0 else None
        if m is None:
            continue
        vis = text[p:end].rstrip()
        expr = re.sub(r"[$,\s]", "", vis).replace("x", "*").replace("×", "*").replace("÷", "/")
        res = m.group("res").replace(",", "")
        value = _safe_eval(expr)
        out.append(text[done:p])
        if value is None or abs(value - float(res)) > 1e-6 * max(1.0, abs(value)):
            out.append(text[p : m.end()])  # not an arithmetic identity we can recompute
        else:
            out.append(f"{vis} = {m.group('cur')}<<{expr}={res}>>{res}")
        done = m.end()
    out.append(text[done:])
    return "".join(out)


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
