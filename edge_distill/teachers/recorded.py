"""A teacher that replays recorded rationales: the offline default and the way to reuse paid teacher runs.

`builtin:gsm8k` turns GSM8K's human reference solutions into all three strategies:
- CoT: the gold solution without calculator annotations, ending "The answer is N.";
- L2M: the socratic solution ("How many ...? ** ...") in the L2M format of `strategies.format_l2m`;
- PoT: a program built mechanically from the calculator annotations: each `<<48/2=24>>` becomes one
  assignment, literals equal to an earlier result become references to it (so the program has real
  data flow), and `answer` is the last result, or the last one that equals the gold answer.
A JSONL file of {id or question, strategy, rationale} rows replays any teacher's output instead.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from edge_distill.answers import ANSWER_MARKER, answers_match
from edge_distill.errors import DataError
from edge_distill.strategies import gsm8k_cot, gsm8k_l2m, strip_annotations
from edge_distill.teachers.base import Completion
from edge_distill.types import Problem, Strategy

__all__ = ["BUILTIN_GSM8K", "RecordedTeacher", "pot_from_annotations"]

log = logging.getLogger(__name__)

BUILTIN_GSM8K = "builtin:gsm8k"
_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
# Plain-text arithmetic "3 / 4 * 2 = 1.5" in solutions that carry no annotations (about 1 % of GSM8K).
_INLINE_RE = re.compile(
    r"(?<![\w.])(\(?\$?\d[\d,]*(?:\.\d+)?%?\)?(?:\s*[-−+*/x×÷]\s*\(?\$?\d[\d,]*(?:\.\d+)?%?\)?)+)"
    r"\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?)"
)
_BINOPS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}


def _arith(node: ast.AST) -> Fraction:
    """Exact value of a pure-arithmetic expression (no names, no calls); ValueError otherwise."""
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _arith(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow):
            if b.denominator != 1 or abs(b) > 64:
                return Fraction(float(a) ** float(b))
            return a**b.numerator if b >= 0 else 1 / a ** (-b.numerator)
        ops = {ast.Add: a.__add__, ast.Sub: a.__sub__, ast.Mult: a.__mul__, ast.Div: a.__truediv__}
        if isinstance(node.op, ast.FloorDiv):
            return Fraction(math.floor(a / b))
        if isinstance(node.op, ast.Mod):
            return a % b
        return ops[type(node.op)](b)
    raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]}")


class _Rewire(ast.NodeTransformer):
    """Replace literals equal to an earlier step's value by that step's variable (latest step wins)."""

    def __init__(self, steps: list[tuple[str, Fraction]]) -> None:
        self.steps = steps

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            value = Fraction(str(node.value))
            for name, prev in reversed(self.steps):
                if prev == value:
                    return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)
        return node


def _clean_expr(expr: str, percent: str) -> str:
    expr = expr.replace("$", "").replace(",", "").replace("×", "*").replace("÷", "/").replace("^", "**")
    expr = expr.replace("−", "-")
    expr = re.sub(r"(?<=[\d)])\s*x\s*(?=[\d(.])", "*", expr)  # "2 x 16" is multiplication in prose
    return re.sub(r"(\d+(?:\.\d+)?)%", rf"(\1{percent})", expr).strip()


def _parse_calc(expr: str, written: str | None) -> tuple[ast.Expression, Fraction] | None:
    """Parse one calculation. "3/25 * 100% = 12%" reads % as "per hundred" or as a bare unit: take the
    reading that reproduces the written result (the first one when neither or both do)."""
    parsed = []
    for percent in ("/100", "") if "%" in expr else ("/100",):
        try:
            tree = ast.parse(_clean_expr(expr, percent), mode="eval")
            parsed.append((tree, _arith(tree)))
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
            continue
    target = _number(written)
    for tree, value in parsed:
        if target is not None and answers_match(_frac_text(value), _frac_text(target)):
            return tree, value
    return parsed[0] if parsed else None


def _calculations(solution: str) -> list[tuple[int, str, str | None]]:
    """(line index, expression, written result) of every calculation in a GSM8K solution.

    A line's calculator annotations when it has any; otherwise plain "a op b = c" arithmetic in its text,
    which many solutions use for their last step.
    """
    calcs: list[tuple[int, str, str | None]] = []
    for i, line in enumerate(solution.split("\n")):
        annotated = [m.group(1).rsplit("=", 1) for m in _ANNOTATION_RE.finditer(line)]
        if annotated:
            calcs += [(i, a[0], a[1] if len(a) > 1 else None) for a in annotated]
        else:
            calcs += [(i, m.group(1), m.group(2)) for m in _INLINE_RE.finditer(line)]
    return calcs


def pot_from_annotations(solution: str, gold: str | None = None) -> str | None:
    """A PoT program from a GSM8K solution, or None when it has no usable calculation.

    Each calculation becomes `step_k = <expression>` under the solution sentence it came from (as a
    comment). `answer` is the last step, unless another step equals `gold` and the last does not.
    """
    body: list[str] = []
    steps: list[tuple[str, Fraction]] = []
    written_values: list[tuple[str, Fraction]] = []
    percents: set[str] = set()  # steps whose result the solution states as a percentage
    commented: set[int] = set()
    lines = solution.split("\n")
    for line_idx, raw_expr, written in _calculations(solution):
        calc = _parse_calc(raw_expr, written)
        if calc is None:
            continue  # a calculation we cannot replay; later steps may still reproduce the answer
        tree, value = calc
        if line_idx not in commented:
            comment = strip_annotations(lines[line_idx]).strip()
            if comment:
                body.append(f"# {comment}")
            commented.add(line_idx)
        name = f"step_{len(steps) + 1}"
        # Later sentences quote rounded results ("0.67"): those literals refer to the step too.
        body.append(f"{name} = {ast.unparse(_Rewire(steps + written_values).visit(tree).body)}")
        steps.append((name, value))
        w = _number(written)
        if w is not None and w != value:
            written_values.append((name, w))
        if written is not None and written.strip().endswith("%"):
            percents.add(name)
    if not steps:
        return None
    body.append(f"answer = {_final(steps, percents, gold)}")
    return "\n".join(body)


def _final(steps: list[tuple[str, Fraction]], percents: set[str], gold: str | None) -> str:
    """The expression `answer` is set to: the last step, or the last step that reproduces the gold
    answer (as is, or as a percentage when the solution states that step's result with "%")."""
    last = steps[-1][0]
    if gold is None or answers_match(_frac_text(steps[-1][1]), gold):
        return last
    for name, value in reversed(steps):
        if answers_match(_frac_text(value), gold):
            return name
        if name in percents and answers_match(_frac_text(value * 100), gold):
            return f"{name} * 100"
    return last


def _number(text: str | None) -> Fraction | None:
    """Value of a written result: "1,200" -> 1200, "2/3" -> 2/3, "12%" -> 0.12."""
    if text is None:
        return None
    text = text.replace(",", "").replace("$", "").replace(" ", "")
    scale = Fraction(1, 100) if text.endswith("%") else Fraction(1)
    try:
        return Fraction(text.rstrip("%")) * scale
    except (ValueError, ZeroDivisionError):
        return None


def _frac_text(v: Fraction) -> str:
    return f"{v.numerator}/{v.denominator}"


class RecordedTeacher:
    """Replays rationales. `source`: "builtin:gsm8k" (from each Problem's gold/socratic solution) or a JSONL
    file of {"id" or "question", "strategy", "rationale"} rows (several rows per problem and strategy allowed).

    A recorded source has what it has: `generate` returns up to `k` completions per problem, and a problem
    with nothing recorded gets one Completion(finish_reason="error") saying so, so it is counted, not lost.
    """

    def __init__(self, source: str | Path = BUILTIN_GSM8K) -> None:
        self.source = str(source)
        self.name = f"recorded:{self.source}"
        self._by_key: dict[tuple[str, Strategy], list[str]] = defaultdict(list)
        if self.source != BUILTIN_GSM8K:
            self._load(Path(self.source))

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise DataError(f"recorded teacher file not found: {path} (or use teacher.model={BUILTIN_GSM8K})")
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = row.get("id") or row.get("question", "").strip()
                    strategy = Strategy(str(row["strategy"]).lower())
                    rationale = row["rationale"]
                    if not key or not isinstance(rationale, str):
                        raise ValueError("needs 'id' or 'question', and a string 'rationale'")
                except (ValueError, KeyError, AttributeError, TypeError) as e:
                    raise DataError(
                        f"{path}:{lineno}: not a {{id|question, strategy (cot|l2m|pot), rationale}} row ({e})"
                    ) from None
                self._by_key[(str(key), strategy)].append(rationale)
        log.info("recorded teacher %s: %d (problem, strategy) entries", path, len(self._by_key))

    def generate(self, problems: list[Problem], strategy: Strategy, k: int) -> list[list[Completion]]:
        strategy = Strategy(strategy)
        out: list[list[Completion]] = []
        for p in problems:
            texts = self._builtin(p, strategy) if self.source == BUILTIN_GSM8K else self._lookup(p, strategy)
            if isinstance(texts, str):  # the reason nothing is recorded
                out.append([Completion("", finish_reason="error", error=texts)])
            else:
                out.append([Completion(t) for t in texts[: max(1, k)]])
        return out

    def _lookup(self, p: Problem, strategy: Strategy) -> list[str] | str:
        texts = self._by_key.get((p.id, strategy)) or self._by_key.get((p.question.strip(), strategy))
        return texts if texts else f"no recorded {strategy.value} rationale for problem {p.id}"

    @staticmethod
    def _builtin(p: Problem, strategy: Strategy) -> list[str] | str:
        if strategy is Strategy.COT:
            if not p.solution:
                return f"problem {p.id} has no reference solution"
            return [f"{gsm8k_cot(p.solution)}\n{ANSWER_MARKER} {p.answer}."]
        if strategy is Strategy.L2M:
            if not p.socratic:
                return f"problem {p.id} has no socratic solution (load it with its *_socratic.jsonl sibling)"
            return [f"{gsm8k_l2m(p.socratic)}\n{ANSWER_MARKER} {p.answer}."]
        if not p.solution:
            return f"problem {p.id} has no reference solution"
        program = pot_from_annotations(p.solution, p.answer or None)
        if program is None:
            return f"problem {p.id}: its solution has no calculation to turn into a program"
        return [program]
