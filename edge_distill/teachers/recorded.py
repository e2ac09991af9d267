"""A teacher that replays recorded rationales: the offline default and the way to reuse paid teacher runs.

`builtin:gsm8k` turns GSM8K's human reference solutions into all three strategies:
- CoT: the gold solution without calculator annotations, ending "The answer is N.";
- L2M: the socratic solution ("How many ...? ** ...") in the L2M format of `strategies.format_l2m`;
- PoT: a program built mechanically from the calculator annotations: each `<<48/2=24>>` becomes one
  assignment, literals equal to an earlier result become references to it (so the program has real
  data flow), and `answer` is the last result, or the last one that equals the gold answer. Sentences
  without annotations contribute their plain-text arithmetic ("30+40 = 70 hours", kept only when it
  reproduces the stated result) and one-variable linear equations (solved with the prelude's solve_it).
  benchmarks/pot_from_annotations.py measures the share that reproduces gold (99.06 % of GSM8K train).
A JSONL file of {id or question, strategy, rationale} rows replays any teacher's output instead.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from edge_distill.answers import ANSWER_MARKER, answers_match
from edge_distill.errors import CLIP_CHARS, DataError
from edge_distill.io import iter_utf8_lines, loads_json
from edge_distill.strategies import gsm8k_cot, gsm8k_l2m, strip_annotations
from edge_distill.teachers.base import Completion
from edge_distill.types import Problem, Strategy

__all__ = ["BUILTIN_GSM8K", "RecordedTeacher", "pot_from_annotations"]

log = logging.getLogger(__name__)

BUILTIN_GSM8K = "builtin:gsm8k"
_ANNOTATION_RE = re.compile(r"<<([^<>]*)>>")
# Plain-text arithmetic in solution sentences: "6 monkeys / 10 animals * 100% = 60%" (unit words dropped).
_TOKEN_RE = re.compile(
    r"(?P<alg>\d+(?:\.\d+)?[a-zA-Z](?![a-zA-Z]))|(?P<op>[-−+*/×÷]|\b[xX]\b)"
    r"|(?P<word>\d+-[A-Za-z][A-Za-z'’-]*|[A-Za-z][A-Za-z'’-]*)|(?P<num>\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|\$?\.\d+%?)"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<other>\S)"
)
_PROSE_OPS = [
    (
        re.compile(r"(?<![\d.,])(\d{1,3})((?: \d{3})+)(?![\d,]|\.\d)"),
        lambda m: m.group(1) + m.group(2).replace(" ", ""),
    ),
    (re.compile(r"\b(?:multiplied by|times)\b"), "*"),
    (re.compile(r"\bdivided by\b"), "/"),
    (re.compile(r"\bplus\b"), "+"),
    (re.compile(r"\bminus\b"), "-"),
    (re.compile(r"\b(?:equals|is equal to)\b"), "="),
    (re.compile(r"(?<![\d/.])(\d+) (\d+)/(\d+)(?![\d/])"), r"(\1 + \2/\3)"),  # mixed number "1 1/2"
    (re.compile(r"(?<=[A-Za-z\d])/(?=[A-Za-z])"), " per "),  # "cup/burger", "$5/week" are units
    (re.compile(r"(?<=[/*] )(\d+(?:\.\d+)?)/(\d+)(?![\d.])"), r"(\1/\2)"),  # "$2000 / 2/3": 2/3 is one number
    (re.compile(r"[–—]"), "-"),
]
_MAX_UNIT_WORDS = 3  # "10 animals", "$15 per hour" after a number
_MAX_LEAD_WORDS = 1  # "every 2 hours" before a number
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def _arith(node: ast.AST, env: dict[str, Fraction] | None = None) -> Fraction:
    """Exact value of an arithmetic expression (names only from `env`, no calls); ValueError otherwise."""
    if isinstance(node, ast.Expression):
        return _arith(node.body, env)
    if isinstance(node, ast.Name) and env is not None and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _arith(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS)):
        raise ValueError(f"not plain arithmetic: {ast.dump(node)[:60]}")
    a, b, op = _arith(node.left, env), _arith(node.right, env), node.op
    if isinstance(op, ast.Pow):  # exact for small integer exponents, float otherwise
        return a ** int(b) if b.denominator == 1 and abs(b) <= 64 else Fraction(float(a) ** float(b))
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Div):
        return a / b
    return Fraction(a // b) if isinstance(op, ast.FloorDiv) else a % b


class _Rewire(ast.NodeTransformer):
    """Replace literals equal to an earlier step's value by that step's variable (latest step wins)."""

    def __init__(self, steps: list[tuple[str, Fraction]]) -> None:
        self.steps = steps

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = Fraction(str(node.value)) if type(node.value) in (int, float) else None
        name = next((name for name, prev in reversed(self.steps) if prev == value), None)
        return node if name is None else ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)


def _clean_expr(expr: str, percent: str) -> str:
    expr = (
        expr.replace("$", "")
        .replace(",", "")
        .replace("×", "*")
        .replace("÷", "/")
        .replace("^", "**")
        .replace("−", "-")
    )
    expr = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(.])", "*", expr)  # "2 x 16" is multiplication in prose
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
        if target is not None and _close(value, target):
            return tree, value
    return parsed[0] if parsed else None


def _inline_calcs(line: str) -> list[tuple[str, str]]:
    """(expression, written result) for each "a op b ... = c" in plain text, read right to left from
    each "=": operands are numbers (with up to three unit words around them) joined by operators."""
    for pattern, repl in _PROSE_OPS:
        line = pattern.sub(repl, line)
    toks = [(m.lastgroup or "", m.group()) for m in _TOKEN_RE.finditer(line)]
    out = []
    for e, (kind, _) in enumerate(toks):
        if kind != "eq" or e + 1 >= len(toks) or toks[e + 1][0] != "num":
            continue
        rhs = toks[e + 1][1]
        if e + 3 < len(toks) and toks[e + 2][1] == "/" and toks[e + 3][0] == "num":
            rhs += "/" + toks[e + 3][1]  # "= 2/3"
        expr: list[str] = []
        want_operand, words = True, 0
        for kind, text in reversed(toks[:e]):
            if (
                kind == "word"
                and text != "x"
                and words < (_MAX_UNIT_WORDS if want_operand else _MAX_LEAD_WORDS)
            ):
                words += 1
            elif want_operand and kind == "rp":
                expr.append(text)
            elif want_operand and kind == "num":
                expr.append(text)
                want_operand, words = False, 0
            elif not want_operand and kind == "op":
                expr.append(text)
                want_operand, words = True, 0
            elif not want_operand and kind == "lp":
                expr.append(text)
            elif not want_operand and kind in ("num", "rp") and expr and expr[-1] == "(":
                expr += ["*", text]  # "40(.50)" and "(1/4)(160)" are products
                want_operand = kind == "rp"
            else:
                break
        while expr and (expr[-1] in "-−+*/×÷xX" or (expr[-1] == "(" and expr.count("(") > expr.count(")"))):
            expr.pop()  # a dangling operator or unmatched bracket at the start
        text = " ".join(reversed(expr))
        if any(op in expr for op in ("-", "−", "+", "*", "/", "×", "÷", "x", "X")) and text.count(
            "("
        ) == text.count(")"):
            out.append((text, rhs))
    return out


_EQ_TOKEN_RE = re.compile(
    r"(?P<num>\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|\$?\.\d+%?)|(?P<word>[A-Za-z]{2,}[A-Za-z'’-]*)"
    r"|(?P<var>[A-Za-z])|(?P<op>[-+*/])|(?P<lp>\()|(?P<rp>\))|(?P<eq>=)|(?P<space>\s+)|(?P<other>\S)"
)


def _equations(line: str) -> list[tuple[str, str, str, Fraction]]:
    """(variable, lhs, rhs, solution) for each linear one-variable equation written in a sentence
    ("4 * x + 600 = 10000", "(5/2)x+5=930"), as Python expressions; `x = 10` alone is no equation."""
    for pattern, repl in _PROSE_OPS:
        line = pattern.sub(repl, line)
    runs: list[list[tuple[str, str]]] = [[]]
    for m in _EQ_TOKEN_RE.finditer(line):
        kind = m.lastgroup or ""
        if kind in ("word", "other"):
            runs.append([])
        elif kind != "space":
            runs[-1].append((kind, m.group()))
    out = []
    for run in runs:
        names = {t for k, t in run if k == "var"}
        if [k for k, _ in run].count("eq") != 1 or len(names) != 1:
            continue
        var = names.pop()
        kinds = [k for k, _ in run]
        if var in "xX" and any(kinds[i + 1] == "num" for i, (_, t) in enumerate(run[:-1]) if t == var):
            continue  # "3 x 12" is a product written with x, not an equation in x
        sides: list[list[str]] = [[]]
        for i, (kind, text) in enumerate(run):
            if kind == "eq":
                sides.append([])
                continue
            prev = run[i - 1][0] if i else ""
            if kind in ("num", "var", "lp") and prev in ("num", "var", "rp"):
                sides[-1].append("*")  # "8c", "(5/2)x", "2(x+1)" are products
            if kind == "num":
                text = text.replace("$", "").replace(",", "")
                text = f"({text[:-1]}/100)" if text.endswith("%") else text
            sides[-1].append(text)
        lhs, rhs = (" ".join(side) for side in sides)
        if not lhs or not rhs or lhs == var or rhs == var:
            continue
        try:
            trees = [ast.parse(side, mode="eval") for side in (lhs, rhs)]
            f = [
                _arith(trees[0], {var: Fraction(v)}) - _arith(trees[1], {var: Fraction(v)}) for v in (0, 1, 2)
            ]
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
            continue
        if f[1] != f[0] and f[2] - f[1] == f[1] - f[0]:  # linear with exactly one solution
            out.append((var, ast.unparse(trees[0].body), ast.unparse(trees[1].body), -f[0] / (f[1] - f[0])))
    return out


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
            # Prose is ambiguous, so an inline calculation counts only if our reading reproduces the
            # result the sentence states; calculator annotations are trusted as written.
            for expr, written in _inline_calcs(line):
                calc, target = _parse_calc(expr, written), _number(written)
                if calc is not None and target is not None and _close(calc[1], target):
                    calcs.append((i, expr, written))
            if not calcs or calcs[-1][0] != i:
                calcs += [(i, f"{v}|{lhs}|{rhs}", _frac_text(sol)) for v, lhs, rhs, sol in _equations(line)]
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
    symbols: set[str] = set()
    for line_idx, raw_expr, written in _calculations(solution):
        name = f"step_{len(steps) + 1}"
        if "|" in raw_expr:  # an equation: solved with the sandbox prelude's solve_it (sympy)
            var, lhs, rhs = raw_expr.split("|")
            value, tree = Fraction(written or "0"), None
        else:
            calc = _parse_calc(raw_expr, written)
            if calc is None:
                continue  # a calculation we cannot replay; later steps may still reproduce the answer
            tree, value = calc
        if line_idx not in commented:
            comment = strip_annotations(lines[line_idx]).strip()
            if comment:
                body.append(f"# {comment}")
            commented.add(line_idx)
        if tree is None:
            if var not in symbols:
                body.append(f'{var} = sympy.Symbol("{var}")')
                symbols.add(var)
            body.append(f"{name} = solve_it(sympy.Eq({lhs}, {rhs}), {var})[{var}]")
        else:
            # Later sentences quote rounded results ("0.67"): those literals refer to the step too.
            body.append(f"{name} = {ast.unparse(_Rewire(steps + written_values).visit(tree).body)}")
        steps.append((name, value))
        w = _number(written)
        if w is not None and w != value and abs(w - value) <= abs(value) / 100:
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
    for name, value in reversed(steps):
        if name in percents and answers_match(_frac_text(value * 100), gold):
            return f"{name} * 100"
    # "so he needs to buy 8 cans", "which is 33%": the gold is the last result rounded.
    last_expr, value = (f"{last} * 100", steps[-1][1] * 100) if last in percents else (last, steps[-1][1])
    for fn, rounding in (("round", round), ("math.ceil", math.ceil), ("math.floor", math.floor)):
        if answers_match(str(rounding(value)), gold):
            return f"{fn}({last_expr})"
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


def _close(a: Fraction, b: Fraction) -> bool:
    return answers_match(_frac_text(a), _frac_text(b))


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
        # streamed; non-UTF-8 bytes are a DataError naming the line
        for lineno, line in iter_utf8_lines(path):
            if not line.strip():
                continue
            try:
                row = loads_json(line)  # deep nesting / huge integers: ValueError, not a traceback
                key = row.get("id") or row.get("question", "").strip()
                strategy = Strategy(str(row["strategy"]).lower())
                rationale = row["rationale"]
                if not key or not isinstance(rationale, str):
                    raise ValueError("needs 'id' or 'question', and a string 'rationale'")
            except (ValueError, KeyError, AttributeError, TypeError) as e:
                raise DataError(
                    f"{path}:{lineno}: not a {{id|question, strategy (cot|l2m|pot), rationale}} row ({str(e)[:CLIP_CHARS]})"
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
        text = p.socratic if strategy is Strategy.L2M else p.solution
        if not text:
            return f"problem {p.id} has no {'socratic (*_socratic.jsonl)' if strategy is Strategy.L2M else 'gold'} solution"
        if strategy is Strategy.POT:
            program = pot_from_annotations(text, p.answer or None)
            return (
                [program] if program else f"problem {p.id}: no calculation in its solution to make a program"
            )
        body = gsm8k_l2m(text) if strategy is Strategy.L2M else gsm8k_cot(text)
        return [f"{body}\n{ANSWER_MARKER} {p.answer}."]
