"""Load math word problems from the GSM8K sample shipped here, or from a file or dataset as it is published.

One function, `load_problems`, reads every source; it returns a `LoadedProblems` (a sequence of `Problem`
that also says how the file was read and what was skipped). The CLI's `--problems`, the config's
`data.train` / `data.test`, the bench and the Python API all come through it.

Sources (`fmt`, config `data.format` / `data.train_format` / `data.test_format`; "auto" goes by suffix):

  builtin:gsm8k-sample   the GSM8K sample shipped in the package (always GSM8K rows, whatever the format)
  *.jsonl / *.json       one JSON object per line, or one JSON array of objects (format jsonl; "gsm8k"
                         and "json" are the same reader)
  *.csv                  a header row, then one problem per row
  *.parquet / *.arrow    columnar files (needs pyarrow: `pip install edge-distill[data]`)
  *.xml                  ASDiv-style XML: each <Problem> element is a row, its attributes and child
                         elements are the fields (<Problem ID="..."><Body>..</Body><Answer>..</Answer>)
  a directory            a `datasets` saved dataset (`Dataset.save_to_disk`; needs `datasets`); for a
                         DatasetDict the split named like the config key (train / test)
  hf:<id>[:<config>][@<split>]
                         a Hugging Face hub dataset, `datasets.load_dataset(id, config, split=...)`; with
                         HF_HUB_OFFLINE=1 it is read from the `datasets` cache (HF_HOME) without a network
  NAME:<any of these>    the same, read as the published dataset NAME (`svamp:SVAMP.json`): its layouts
                         only, and NAME as the problems' source

Layouts (`LAYOUTS`, in `data_layouts`): without field names a file is recognised by its fields, as its authors publish it:
GSM8K (main, socratic: question/answer "... #### N"), SVAMP (Body + Question, Answer, ID), ASDiv (XML or
JSON: Body + Question, Answer with units, Formula; ToRA's jsonl: body/question/answer), MultiArith / AddSub
/ SingleEq / MAWPS (sQuestion, lSolutions, iIndex), the LLM-Adapters json of all of them (instruction,
input, output, answer), ToRA's jsonl (input/target), GSM-Hard (input, code, target), MATH (problem,
solution with \\boxed{}; MATH-500 also answer), MultiArith on the hub (question, final_ans) and Calc-X
(question, result). `question_field` / `answer_field` / `id_field` name the fields instead (each one given
replaces that field of the recognised layout); `question_field` may be a template, "{Body} {Question}".

The gold-answer rule, the one place it lives (`data_layouts.gold_answer`):
  1. a list (MultiArith/AddSub/SingleEq `lSolutions`) gives its first element;
  2. a text with "####" is a GSM8K solution: the number after the last "####";
  3. MATH's `solution` (layout gold "boxed"): the content of its last \\boxed{...};
  4. otherwise the value must be one number, optionally followed by a unit word ("18 eggs"); if it is
     not, bracketed text that contains a letter is removed once and it is read again, so ASDiv's
     "9 (apples)" is 9 and "0.5 (km)" is 0.5, while "2 (cakes); 3 (pies)" is not a number.

A row whose gold is not a number (ASDiv's "Mrs. Hilt", a MATH answer like "\\sqrt{2}") is skipped and
counted, never a stop: the benchmarks hold such rows and edge-distill judges numbers. Any other malformed
row (missing field, invalid JSON, empty question) stops the load with the file, the row and the fix; with
`skip_malformed=True` it is skipped and counted too. One summary warning per file gives the counts per
reason and the first few examples; `LoadedProblems.skipped_reasons` has the counts.

Every row becomes a `Problem` with a stable id (the id field when the row has one, else a hash of the
question, so caches, splits and reports line up across runs).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from edge_distill.data_layouts import (
    LAYOUTS,
    NOT_A_NUMBER,
    Layout,
    Malformed,
    Row,
    field_value,
    gold_answer,
    text_of,
)
from edge_distill.data_sources import (
    BUILTIN_SAMPLE,
    FORMATS,
    HUB_PREFIX,
    Source,
    format_of,
    json_rows,
    read_rows,
    resolve,
)
from edge_distill.errors import DataError
from edge_distill.types import Problem

__all__ = [
    "BUILTIN_SAMPLE", "FORMATS", "HUB_PREFIX", "LAYOUTS", "NOT_A_NUMBER", "Layout", "LoadedProblems",
    "load_problems", "split_dev",
]  # fmt: skip

log = logging.getLogger(__name__)

_FIX = "fix it or set data.skip_malformed=true (eval: --skip-malformed)"
_EXAMPLES = 3  # malformed rows quoted in the summary warning
_KEEP_LINES = 20  # malformed rows kept in the stats
_DIGIT_RE = re.compile(r"\d")


_GIVEN = "fields"  # the layout name when the caller names the fields and none is recognised


def choose_layout(
    rows: list[Row], src: Source, question: str | None, answer: str | None, id_field: str | None
) -> Layout:
    """The layout of the rows: named fields over the recognised layout (NAME:PATH: only NAME's layouts)."""
    if src.kind == "builtin":
        return next(lay for lay in LAYOUTS if lay.name == "gsm8k")
    keys = next((set(map(str, r)) for _, r in rows if isinstance(r, dict)), set())
    candidates = [lay for lay in LAYOUTS if src.dataset is None or src.dataset in lay.datasets]
    found = next((lay for lay in candidates if lay.fields <= keys), None)
    if not keys:  # not one object row: each row is reported as what it is (invalid JSON, not an object)
        found = found or candidates[-1]
    given = question is not None or answer is not None or id_field is not None
    if found is None and not given:
        present = ", ".join(sorted(keys)) or "none"
        expected = "; ".join(f"{lay.name}: {', '.join(sorted(lay.fields))}" for lay in candidates)
        what = (
            f"laid out as {src.dataset} is published"
            if src.dataset
            else "in a layout edge-distill recognises"
        )
        raise DataError(
            f"{src.where}: not {what} (fields present: {present}; expected one of: {expected}). Name the "
            "fields: --question-field/--answer-field/--id-field (eval), data.question_field/answer_field/id_field"
        )
    base = found or Layout(_GIVEN, frozenset(), "question", "answer", ("id",))
    if not given:
        return base
    return Layout(
        base.name if found else _GIVEN,
        base.fields,
        question or base.question,
        answer or base.answer,
        (id_field,) if id_field else base.ids,
        base.gold if answer is None else "number",
        base.solution,
        base.datasets,
    )


def _socratic_map(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    ignored = 0
    for _, row in json_rows(path):
        if (
            isinstance(row, dict)
            and isinstance(row.get("question"), str)
            and isinstance(row.get("answer"), str)
        ):
            out[row["question"].strip()] = row["answer"]
        else:
            ignored += 1
    if ignored:
        log.warning(
            "%s: %d rows are not {question, answer} rows; ignored for socratic matching", path, ignored
        )
    return out


# --------------------------------------------------------------------------- loading
@dataclass(eq=False)
class LoadedProblems(Sequence[Problem]):
    """The problems of one source, and how they were read. A sequence of `Problem` (index, slice, iterate).

    `layout`: the recognised layout's name (`LAYOUTS`), or "fields" when the caller named them;
    `skipped_reasons`: {reason: rows skipped}, e.g. {"answer is not a number": 3}."""

    problems: list[Problem]
    source: str
    format: str
    layout: str
    rows: int
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    skipped_lines: list[str] = field(default_factory=list, repr=False)  # the first 20
    socratic_attached: int = 0
    questions_without_digits: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.skipped_reasons.values())

    def __len__(self) -> int:
        return len(self.problems)

    @overload
    def __getitem__(self, i: int) -> Problem: ...
    @overload
    def __getitem__(self, i: slice) -> list[Problem]: ...
    def __getitem__(self, i: int | slice) -> Problem | list[Problem]:
        return self.problems[i]

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def skipped_text(self) -> str:
        """ "3 skipped (2 answer is not a number, 1 invalid JSON)", or "" when nothing was skipped."""
        if not self.skipped:
            return ""
        return f"{self.skipped} skipped ({', '.join(f'{n} {r}' for r, n in self.skipped_reasons.items())})"

    def stats(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "format": self.format,
            "layout": self.layout,
            "rows": self.rows,
            "loaded": len(self.problems),
            "skipped": self.skipped,
            "skipped_reasons": dict(self.skipped_reasons),
            "skipped_lines": list(self.skipped_lines),
            "socratic_attached": self.socratic_attached,
            "questions_without_digits": self.questions_without_digits,
        }


def load_problems(
    spec: str | Path,
    *,
    fmt: str = "auto",
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    skip_malformed: bool = False,
    split: str = "train",
    socratic: str | Path | None = "auto",
) -> LoadedProblems:
    """Problems from `builtin:gsm8k-sample` (`split` = train|test), a file, a `datasets` dir, hf:<id>, or any
    of them as `NAME:...` (`svamp:SVAMP.json`); see the module docstring for formats, layouts and the
    gold-answer rule.

    Fields: None = the recognised layout's (`LAYOUTS`); a name (or for the question a template, "{Body}
    {Question}") replaces it. Rows without an id get "q-" + sha1(question)[:16]; builtin ids are
    "gsm8k-train-00012". Optional `solution`, `socratic`, `source` fields are kept. The socratic version
    is attached from a sibling `<name>_socratic.jsonl` (or `socratic`=path; None to skip), matched by
    question text. Raises DataError naming the file and row (a non-numeric gold is skipped, not raised).
    """
    src = resolve(spec, split)
    fmt = format_of(src, fmt)
    builtin = src.kind == "builtin"
    if builtin:
        question_field = answer_field = id_field = None
    rows = read_rows(src, fmt)
    layout = choose_layout(rows, src, question_field, answer_field, id_field)
    label = "gsm8k-sample" if builtin else src.dataset or Path(str(src.where)).stem or str(src.where)
    problems: list[Problem] = []
    ids = _Ids(f"gsm8k-{split}" if builtin else None, layout.ids)
    skipped: list[str] = []
    reasons: Counter[str] = Counter()
    for index, (where, row) in enumerate(rows):
        try:
            question, answer, solution = _read_row(row, layout)
        except Malformed as e:
            msg = f"{src.where}:{where}: {e}"
            if e.reason != NOT_A_NUMBER and not skip_malformed:
                raise DataError(f"{msg}; {_FIX}") from None
            skipped.append(msg)
            reasons[e.reason] += 1
            continue
        assert isinstance(row, dict)
        if solution is None:
            solution = _opt_text(row.get(layout.solution)) if layout.solution else None
            solution = solution or _opt_text(row.get("solution"))
        socratic_text, source = _opt_text(row.get("socratic")), _opt_text(row.get("source")) or label
        problems.append(
            Problem(ids.of(index, row, question), question, answer, solution, socratic_text, source)
        )
    if skipped:
        _warn_skipped(src.where, skipped, reasons, len(rows))
    if not problems:
        counts = ", ".join(f"{n} {r}" for r, n in reasons.most_common()) or "the source is empty"
        raise DataError(
            f"{src.where}: no problems loaded ({counts}; layout {layout.name}: question {layout.question!r}, "
            f"answer {layout.answer!r}); check the file, or name the fields (--question-field/--answer-field)"
        )
    attached = _attach_socratic(problems, src.where, socratic) if isinstance(src.where, Path) else 0
    return LoadedProblems(
        problems,
        str(src.where),
        fmt,
        layout.name,
        len(rows),
        dict(reasons.most_common()),
        skipped[:_KEEP_LINES],
        attached,
        _warn_no_digits(src.where, problems, layout.question),
    )


def _read_row(row: Any, layout: Layout) -> tuple[str, str, str | None]:
    """(question, gold answer, solution text or None) of one row; raises Malformed."""
    if isinstance(row, Malformed):
        raise row
    if not isinstance(row, dict):
        raise Malformed(f"expected a JSON object, got {type(row).__name__}", "not an object")
    question = text_of(row, layout.question)
    if not isinstance(question, str) or not question.strip():
        raise Malformed(f"field {layout.question!r} must be a non-empty string", "empty question")
    answer, solution = gold_answer(field_value(row, layout.answer), layout.answer, layout.gold)
    return question.strip(), answer, solution


class _Ids:
    """Problem ids: `builtin` + the row index ("gsm8k-train-00012"), else the row's id field, else a hash of
    the question; a repeated id gets "-2", "-3", ... (repeated questions stay separate problems)."""

    def __init__(self, builtin: str | None, fields: tuple[str, ...]) -> None:
        self.builtin, self.fields = builtin, fields
        self.seen: dict[str, int] = {}

    def of(self, index: int, row: dict[str, Any], question: str) -> str:
        raw_id = next((row[k] for k in self.fields if row.get(k) not in (None, "")), None)
        if self.builtin:
            pid = f"{self.builtin}-{index:05d}"
        elif raw_id is not None and not isinstance(raw_id, (dict, list)):
            pid = str(raw_id)
        else:  # content-derived, so the same question keeps its id when the file is reordered
            pid = "q-" + hashlib.sha1(question.encode()).hexdigest()[:16]
        if pid in self.seen:
            self.seen[pid] += 1
            return f"{pid}-{self.seen[pid]}"
        self.seen[pid] = 1
        return pid


def _opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _warn_skipped(path: Path | str, skipped: list[str], reasons: Counter[str], rows: int) -> None:
    """One warning per file, however many rows were skipped (ASDiv used to print 2,157 lines)."""
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    examples = "\n  ".join(skipped[:_EXAMPLES])
    more = f"\n  ... and {len(skipped) - _EXAMPLES} more" if len(skipped) > _EXAMPLES else ""
    log.warning(
        "%s: skipped %d of %d rows (%s); first:\n  %s%s",
        path,
        len(skipped),
        rows,
        counts,
        examples,
        more,
    )


def _warn_no_digits(path: Path | str, problems: list[Problem], question_field: str) -> int:
    """Count questions without a single digit; warn when most have none (SVAMP's `Question` alone holds
    no numbers: they are in `Body`)."""
    n = sum(1 for p in problems if not _DIGIT_RE.search(p.question))
    if n * 2 > len(problems):
        log.warning(
            "%s: %d of %d questions contain no digits: does the question field %r leave out part of the "
            'problem? (SVAMP/ASDiv keep the numbers in Body: --question-field / data.question_field "{Body} {Question}")',
            path,
            n,
            len(problems),
            question_field,
        )
    return n


def _attach_socratic(problems: list[Problem], path: Path, socratic: str | Path | None) -> int:
    if socratic is None or path.stem.endswith("_socratic") or path.is_dir():
        return 0
    if socratic == "auto" and path.suffix.lower() not in (".jsonl", ".json"):
        return 0  # the sibling convention is GSM8K's JSONL
    soc_path = path.with_name(f"{path.stem}_socratic{path.suffix}") if socratic == "auto" else Path(socratic)
    if not soc_path.is_file():
        if socratic != "auto":
            raise DataError(f"socratic file not found: {soc_path}")
        return 0
    by_question = _socratic_map(soc_path)
    attached = 0
    for i, p in enumerate(problems):
        text = by_question.get(p.question)
        if text is not None and p.socratic is None:
            problems[i] = Problem(p.id, p.question, p.answer, p.solution, text, p.source)
            attached += 1
    if attached < len(problems):
        log.info("%s: socratic solutions found for %d of %d problems", soc_path, attached, len(problems))
    return attached


_CALC_RE = re.compile(r"<<[^<>]*>>")
DIFFICULTY_BUCKETS = ("1-2", "3-4", "5+")


def calc_steps(problem: Problem) -> int | None:
    """Calculator steps in the problem's GSM8K gold solution (its `<<a*b=c>>` annotations); None without one."""
    return None if not problem.solution else len(_CALC_RE.findall(problem.solution))


def difficulty(problem: Problem) -> str | None:
    """GSM8K difficulty bucket by calculator steps: "1-2" (0 counts here too), "3-4" or "5+"."""
    n = calc_steps(problem)
    if n is None:
        return None
    return DIFFICULTY_BUCKETS[0] if n <= 2 else DIFFICULTY_BUCKETS[1] if n <= 4 else DIFFICULTY_BUCKETS[2]


def restrict_dev(dev: list[Problem], max_calc_steps: int) -> list[Problem]:
    """The dev problems with at most `max_calc_steps` calculator steps (`data.dev_max_calc_steps`)."""
    missing = [p.id for p in dev if calc_steps(p) is None]
    if missing:
        raise DataError(
            f"data.dev_max_calc_steps needs GSM8K-style gold solutions (with <<a*b=c>> calculator annotations); "
            f"{len(missing)} dev problems have none (first: {missing[0]}); remove data.dev_max_calc_steps"
        )
    kept = [p for p in dev if (calc_steps(p) or 0) <= max_calc_steps]
    if not kept:
        raise DataError(
            f"data.dev_max_calc_steps={max_calc_steps} leaves no dev problem of {len(dev)}; raise it or data.dev_size"
        )
    return kept


def split_dev(
    problems: Sequence[Problem], dev_size: int, seed: int = 0
) -> tuple[list[Problem], list[Problem]]:
    """Carve a dev set out of `problems`, deterministically and disjointly.

    Membership depends only on (seed, problem id), not on file order, so adding problems later keeps
    most of the old dev set. Both parts keep the input order.
    """
    if dev_size < 0:
        raise ValueError(f"dev_size must be >= 0, got {dev_size}")
    if dev_size >= len(problems):
        raise DataError(
            f"data.dev_size={dev_size} leaves no training problems (only {len(problems)} loaded); lower data.dev_size"
        )
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise DataError("split_dev: problem ids are not unique, so the split could leak problems into dev")
    rank = sorted(ids, key=lambda pid: hashlib.sha1(f"{seed}:{pid}".encode()).hexdigest())
    dev_ids = set(rank[:dev_size])
    train = [p for p in problems if p.id not in dev_ids]
    dev = [p for p in problems if p.id in dev_ids]
    return train, dev
