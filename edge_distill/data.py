"""Load math word problems from GSM8K files, generic JSONL / JSON, or the GSM8K sample shipped here.

Every row becomes a `Problem` with a stable id (so caches, splits and reports line up across runs) and
a normalized gold answer. A malformed row stops the load with the file, the line and the fix; with
`skip_malformed=True` it is skipped, logged and counted in the returned stats — never lost silently.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from edge_distill.answers import gsm8k_gold, normalize_number
from edge_distill.errors import DataError
from edge_distill.io import loads_json, read_utf8
from edge_distill.types import Problem

__all__ = ["BUILTIN_SAMPLE", "load_problems", "load_problems_with_stats", "split_dev"]

log = logging.getLogger(__name__)

BUILTIN_SAMPLE = "builtin:gsm8k-sample"
_ASSETS = Path(__file__).parent / "assets" / "gsm8k"
_BUILTIN_SPLITS = ("train", "test")
_FORMATS = ("gsm8k", "jsonl")
_FIX = "fix it or set data.skip_malformed=true"


class _Malformed(Exception):
    """A row-level problem; turned into a DataError (or a counted skip) with file:line attached."""


def _resolve(spec: str | Path, split: str) -> tuple[Path, bool]:
    """(file, is_builtin)."""
    text = str(spec)
    if text.startswith("builtin:"):
        if text != BUILTIN_SAMPLE:
            raise DataError(f"unknown builtin dataset {text!r}; available: {BUILTIN_SAMPLE}")
        if split not in _BUILTIN_SPLITS:
            raise DataError(f"{BUILTIN_SAMPLE} has splits {', '.join(_BUILTIN_SPLITS)}, not {split!r}")
        return _ASSETS / f"{split}.jsonl", True
    path = Path(text).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path} (or use {BUILTIN_SAMPLE})")
    return path, False


def _rows(path: Path) -> list[tuple[int, Any]]:
    """(line or item number, parsed row or the JSON error) for a JSONL file or a JSON array file."""
    text = read_utf8(path)  # non-UTF-8 bytes: a DataError naming the line, not a traceback
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = loads_json(text)
        except ValueError as e:
            raise DataError(f"{path}: {e}; fix the file") from None
        if not isinstance(data, list):
            raise DataError(
                f"{path}: a .json data file must hold an array of objects, got {type(data).__name__}"
            )
        return list(enumerate(data, 1))
    rows: list[tuple[int, Any]] = []
    # split on "\n" only: str.splitlines() also splits on U+2028 and friends, which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:  # deep nesting and over-long integers are malformed rows too, not tracebacks
            rows.append((lineno, loads_json(line)))
        except ValueError as e:
            rows.append((lineno, _Malformed(str(e))))
    return rows


def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise _Malformed(f"missing field {name!r} (fields present: {', '.join(sorted(row)) or 'none'})")
    return row[name]


def _gold(value: Any, field: str) -> tuple[str, str | None]:
    """(normalized answer, solution text or None) from a bare number or a GSM8K '... #### N' solution."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Malformed(
            f"field {field!r} must be a number or a '#### N' solution, got {type(value).__name__}"
        )
    text = str(value)
    if "####" in text:
        try:
            return gsm8k_gold(text), text
        except ValueError as e:
            raise _Malformed(f"field {field!r}: {e}") from e
    answer = normalize_number(text)
    if answer is None:
        raise _Malformed(f"field {field!r} is not a number: {text[:60]!r}")
    return answer, None


def _socratic_map(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, row in _rows(path):
        if (
            isinstance(row, dict)
            and isinstance(row.get("question"), str)
            and isinstance(row.get("answer"), str)
        ):
            out[row["question"].strip()] = row["answer"]
        else:
            log.warning("%s:%d: not a {question, answer} row; ignored for socratic matching", path, lineno)
    return out


def load_problems_with_stats(
    spec_or_path: str | Path,
    *,
    fmt: str = "gsm8k",
    question_field: str = "question",
    answer_field: str = "answer",
    skip_malformed: bool = False,
    split: str = "train",
    socratic: str | Path | None = "auto",
) -> tuple[list[Problem], dict[str, Any]]:
    """`load_problems` plus stats: {"file", "rows", "loaded", "skipped", "skipped_lines", "socratic_attached"}."""
    if fmt not in _FORMATS:
        raise DataError(f"data.format: {fmt!r} is not one of {', '.join(_FORMATS)}")
    path, builtin = _resolve(spec_or_path, split)
    source = "gsm8k-sample" if builtin else path.stem
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    skipped: list[str] = []
    rows = _rows(path)
    for index, (lineno, row) in enumerate(rows):
        try:
            if isinstance(row, _Malformed):
                raise row
            if not isinstance(row, dict):
                raise _Malformed(f"expected a JSON object, got {type(row).__name__}")
            question = _field(row, question_field)
            if not isinstance(question, str) or not question.strip():
                raise _Malformed(f"field {question_field!r} must be a non-empty string")
            answer, solution = _gold(_field(row, answer_field), answer_field)
        except _Malformed as e:
            msg = f"{path}:{lineno}: {e}"
            if not skip_malformed:
                raise DataError(f"{msg}; {_FIX}") from None
            log.warning("skipping malformed row %s", msg)
            skipped.append(msg)
            continue
        if builtin:
            pid = f"gsm8k-{split}-{index:05d}"
        elif row.get("id") not in (None, ""):
            pid = str(row["id"])
        else:  # content-derived, so the same question keeps its id when the file is reordered
            pid = "q-" + hashlib.sha1(question.strip().encode()).hexdigest()[:16]
        if pid in seen:  # repeated questions stay separate problems, but under distinct ids
            seen[pid] += 1
            pid = f"{pid}-{seen[pid]}"
        else:
            seen[pid] = 1
        solution = solution if solution is not None else row.get("solution")
        problems.append(
            Problem(pid, question.strip(), answer, solution, row.get("socratic"), row.get("source") or source)
        )
    attached = _attach_socratic(problems, path, socratic) if fmt == "gsm8k" else 0
    if not problems:
        raise DataError(f"{path}: no problems loaded ({len(skipped)} malformed rows skipped)")
    if skipped:
        log.warning("%s: skipped %d malformed rows of %d", path, len(skipped), len(rows))
    stats = {
        "file": str(path),
        "rows": len(rows),
        "loaded": len(problems),
        "skipped": len(skipped),
        "skipped_lines": skipped,
        "socratic_attached": attached,
    }
    return problems, stats


def _attach_socratic(problems: list[Problem], path: Path, socratic: str | Path | None) -> int:
    if socratic is None or path.stem.endswith("_socratic"):
        return 0
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


def load_problems(
    spec_or_path: str | Path,
    *,
    fmt: str = "gsm8k",
    question_field: str = "question",
    answer_field: str = "answer",
    skip_malformed: bool = False,
    split: str = "train",
    socratic: str | Path | None = "auto",
) -> list[Problem]:
    """Problems from `builtin:gsm8k-sample` (`split` = train|test) or a file.

    fmt="gsm8k": GSM8K rows {question, answer: "... #### N"}, the socratic version attached from the
    sibling `<name>_socratic.jsonl` (or `socratic`=path; None to skip), matched by question text.
    fmt="jsonl": rows with `question_field` and `answer_field` (a bare number or a '#### N' solution);
    optional `id`, `solution`, `socratic`, `source` fields are kept. A `.json` file holding an array works
    for both. Ids: "gsm8k-train-00012" for builtins, the row's `id`, else "q-" + sha1(question)[:16].
    """
    problems, _ = load_problems_with_stats(
        spec_or_path,
        fmt=fmt,
        question_field=question_field,
        answer_field=answer_field,
        skip_malformed=skip_malformed,
        split=split,
        socratic=socratic,
    )
    return problems


def split_dev(problems: list[Problem], dev_size: int, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
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
