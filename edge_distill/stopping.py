"""When a student's answer is complete: the one stop rule of every student decoder. Torch-free.

A student that misses EOS after its answer decodes to the token budget (repeated lines, a second tag, the
next "Question:"), and nothing after the answer changes its verdict. So torch (`generation.generate`),
llama.cpp (`device_profiles.runtimes`, `methods.sampling.LlamaCppSampler`) and ONNX Runtime GenAI stop a
response as soon as `AnswerStop` says it is complete, and return it cut where it says. The rule reads the
response as `strategies.parse_response` does (tag at the start of the response, else the tag forced by the
prompt; untagged text is prose):

- CoT / L2M / prose: a line holding a well-formed final answer (`The answer is N`, the marker
  `parse_response` takes) is finished, by a newline, or by a '.' after the number followed by anything
  but a digit ("1.5", "$1,200.", "-3." never cut inside the number). Cut after the '.' or before the
  newline: `The answer is 72.` ends the text.
- PoT: a program is finished when the line after it cannot continue it: at each newline the program so far
  is parsed (`ast`; `codeop` tells an unfinished block or bracket from an error); once a line makes it
  invalid ("The answer is 5.", "[cot]: ...", an indented line after a finished statement), the text is cut
  at the latest line where it parsed and set its answer (`sandbox_worker.ANSWER_NAMES` at module level, or
  a `def solution`). A program followed by more valid Python runs on (re-assigning `answer` must count), as
  does a program that never parsed (prose before a code fence must not end it). A closed code fence
  finishes the program too (the judge reads the first fence only).
- Any strategy: a new "\\nQuestion:" block (the judge ignores everything from there).
- CasCoD's answer stage (a prompt ending with `... The answer is`): the same line rule, on the prompt's last
  line continued by the response.

Cheap per token: `AnswerStop` keeps its place and looks only at the new characters, a line at a time; the
PoT parse runs once per newline. `answer_end(text, prompt)` is the same rule over a whole text: the cut a
decoder made token by token is the one it gives on the decoded text, whatever the runtime.
"""

from __future__ import annotations

import ast
import codeop
import warnings

from edge_distill.sandbox_worker import ANSWER_NAMES, SOLUTION_FUNCTION

# the parser's own patterns: the rule reads a response exactly as the judge will
from edge_distill.strategies import _BOUNDARY_RE, _FENCE_RE, _MARKER_RE, _TAG_RE, forced_tag, parse_response
from edge_distill.strategies import _final_answer as final_answer
from edge_distill.types import Strategy

__all__ = ["AnswerStop", "answer_end", "cut_answer", "program_status"]

_TAGS = tuple(forced_tag(s).strip() for s in Strategy)  # "[cot]:", "[l2m]:", "[pot]:"
_QUESTION = "Question:"


def program_status(program: str) -> tuple[str, bool]:
    """("complete" | "incomplete" | "invalid", whether it sets its answer) of a PoT program's text.

    "incomplete": more lines can still make it parse (an open bracket, a block header, a string); "invalid":
    no continuation can. The answer is set when a module-level name of ANSWER_NAMES is bound or a function
    SOLUTION_FUNCTION is defined (the sandbox's rule)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning: invalid escape sequences in model output
        try:
            tree = ast.parse(program)
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
            try:
                incomplete = codeop.compile_command(program, symbol="exec") is None
            except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
                incomplete = False
            return ("incomplete" if incomplete else "invalid"), False
    return "complete", _sets_answer(tree)


def _sets_answer(tree: ast.Module) -> bool:
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == SOLUTION_FUNCTION:
                return True
            continue  # a function's own names are not the module's
        if isinstance(node, (ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id in ANSWER_NAMES:
            return True
        todo.extend(ast.iter_child_nodes(node))
    return False


def _maybe_tag(text: str) -> bool:
    """`text` may still become a strategy tag (" [po" does; " So" does not)."""
    head = text.lstrip()
    return any(tag.startswith(head) for tag in _TAGS)


class AnswerStop:
    """The stop rule for one response, applied as it grows (see the module docstring).

    `prompt`: the student prompt the response continues (a forced tag at its end sets the strategy; a
    CasCoD answer prompt sets the answer-line rule); `strategy` overrides the forced tag. Call with the
    whole text generated so far, each call a continuation of the last; it returns how much of the text to
    keep once the answer is complete (and the same from then on), else None.
    """

    def __init__(self, prompt: str = "", strategy: Strategy | str | None = None) -> None:
        if strategy is None:
            strategy = next((s for s in Strategy if prompt.endswith(forced_tag(s))), None)
        self._forced = None if strategy is None else Strategy(strategy)
        last_line = prompt.rsplit("\n", 1)[-1]
        # CasCoD's answer stage: the prompt ends inside the answer line ("...\nThe answer is")
        self._carry = last_line if self._forced is None and _MARKER_RE.search(last_line) else ""
        self._pot: bool | None = False if self._carry else None  # None: the tag is not known yet
        self._seen = 0  # characters of the text already looked at
        self._line = 0  # start of the current line
        self._good: int | None = None  # PoT: where the latest program that parsed and set its answer ends
        self._cut: int | None = None

    def __call__(self, text: str) -> int | None:
        if self._cut is not None:
            return self._cut
        if self._pot is None:
            m = _TAG_RE.match(text)
            if m is None and _maybe_tag(text):
                return None
            strategy = Strategy(m.group(1)) if m else self._forced
            self._pot = strategy is Strategy.POT
        start, self._seen = self._seen, len(text)
        answer = self._pot_events(text, start) if self._pot else self._line_events(text, start)
        boundary = self._boundary(text, start)
        # the earlier event wins: (position of the character that completed it, cut)
        events = [e for e in (answer, boundary) if e is not None]
        if events:
            self._cut = min(events)[1]
        return self._cut

    # ------------------------------------------------------------------ CoT, L2M, prose, CasCoD's answer
    def _line_events(self, text: str, start: int) -> tuple[int, int] | None:
        """The first answer line finished by a character at index >= start: (its index, cut)."""
        # a '.' seen last time is decided by the character after it: text[start] (prev: text[start - 1])
        for k in range(start, len(text)):
            c = text[k]
            if c == "\n":
                if self._is_answer(text, k):
                    return k, k
                self._line = k + 1
            elif not c.isdecimal() and self._prev(text, k) == "." and self._is_answer(text, k):
                return k, k
        return None

    def _prev(self, text: str, k: int) -> str:
        if k > 0:
            return text[k - 1]
        return self._carry[-1:] if self._carry else ""

    def _is_answer(self, text: str, end: int) -> bool:
        """The current line, up to `end`, holds a well-formed final answer."""
        line = (self._carry if self._line == 0 else "") + text[self._line : end]
        return _MARKER_RE.search(line) is not None and final_answer(line) is not None

    # ------------------------------------------------------------------ PoT
    def _pot_events(self, text: str, start: int) -> tuple[int, int] | None:
        """The first new newline after which the program cannot go on, or a closing code fence."""
        fence = None
        if "```" in text[max(0, start - 2) :]:
            m = _FENCE_RE.search(text)
            if m is not None and m.end() > m.end(1):  # the closing fence is there
                fence = (m.end() - 1, m.end())
        nl = text.find("\n", start)
        while nl >= 0 and (fence is None or nl < fence[0]):
            status, sets = program_status(parse_response(text[:nl], self._forced).rationale)
            if status == "complete" and sets:
                self._good = nl
            elif status == "invalid" and self._good is not None:
                return nl, self._good
            nl = text.find("\n", nl + 1)
        return fence

    # ------------------------------------------------------------------ any strategy
    def _boundary(self, text: str, start: int) -> tuple[int, int] | None:
        """A "\\nQuestion:" completed by a new character: (index of its last character, its start)."""
        back = max(0, start - len(_QUESTION))  # a new match's "Question:" starts here or later
        while back > 0 and text[back - 1].isspace():
            back -= 1  # and the whitespace run before it (newline included) may be long
        m = _BOUNDARY_RE.search(text, back)
        return None if m is None else (m.end() - 1, m.start())


def answer_end(text: str, prompt: str = "", strategy: Strategy | str | None = None) -> int | None:
    """How much of a whole response to keep by the stop rule (None: no complete answer in it)."""
    return AnswerStop(prompt, strategy)(text)


def cut_answer(text: str, prompt: str = "", strategy: Strategy | str | None = None) -> str:
    """`text` cut where its answer is complete (unchanged without one): what every decoder returns."""
    end = answer_end(text, prompt, strategy)
    return text if end is None else text[:end]
