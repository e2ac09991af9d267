"""Load math word problems from the GSM8K sample shipped here, or from a user's file or dataset as published.

Sources (`data.train` / `data.test`, each with its own format: `data.format`, `data.train_format`,
`data.test_format`; "auto" goes by the file suffix):

  builtin:gsm8k-sample   the GSM8K sample shipped in the package (always GSM8K rows, whatever the format)
  *.jsonl / *.json       one JSON object per line, or one JSON array of objects (format jsonl; "gsm8k"
                         and "json" are the same reader)
  *.csv                  a header row, then one problem per row
  *.parquet / *.arrow    columnar files (needs pyarrow: `pip install edge-distill[data]`)
  *.xml                  ASDiv-style XML: each <Problem> element is a row, its attributes and child
                         elements are the fields (<Problem ID="..."><Body>..</Body><Answer>..</Answer>)
  a directory            a `datasets` saved dataset (`Dataset.save_to_disk`; needs `datasets`); for a
                         DatasetDict the split named like the config key (train / test)
  hf:<hub id>            a Hugging Face hub dataset, `datasets.load_dataset(id, split=...)` (online only)

Fields: `question_field` / `answer_field` / `id_field` name a field; `question_field` may instead be a
template of fields, e.g. "{Body} {Question}" (SVAMP, ASDiv keep the numbers in Body).

The gold-answer rule, the one place it lives (`_gold`):
  1. a list (MultiArith/AddSub/SingleEq `lSolutions`) gives its first element;
  2. a text with "####" is a GSM8K solution: the number after the last "####";
  3. otherwise the value must be one number, optionally followed by a unit word ("18 eggs"); if it is
     not, bracketed text that contains a letter is removed once and it is read again, so ASDiv's
     "9 (apples)" is 9 and "0.5 (km)" is 0.5, while "2 (cakes); 3 (pies)" stays malformed.

Every row becomes a `Problem` with a stable id (the id field when the row has one, else a hash of the
question, so caches, splits and reports line up across runs). A malformed row stops the load with the
file, the row and the fix; with `skip_malformed=True` it is skipped and counted, and one summary warning
per file gives the counts per reason and the first few examples.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

from edge_distill.answers import gsm8k_gold, normalize_number
from edge_distill.errors import DataError
from edge_distill.io import loads_json, read_utf8
from edge_distill.types import Problem

__all__ = ["BUILTIN_SAMPLE", "FORMATS", "load_problems", "load_problems_with_stats", "split_dev"]

log = logging.getLogger(__name__)

BUILTIN_SAMPLE = "builtin:gsm8k-sample"
HUB_PREFIX = "hf:"
_ASSETS = Path(__file__).parent / "assets" / "gsm8k"
_BUILTIN_SPLITS = ("train", "test")
# "gsm8k" and "json" are the JSON reader under the names older configs and users reach for
FORMATS = ("auto", "jsonl", "json", "gsm8k", "csv", "parquet", "arrow", "xml", "hf")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".xml": "xml",
}
_FIX = "fix it or set data.skip_malformed=true"
_EXAMPLES = 3  # malformed rows quoted in the summary warning
_KEEP_LINES = 20  # malformed rows kept in the stats
_TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
# bracketed text with a letter in it: ASDiv's "(apples)", "[cm]"; "(-5)" is a number and stays
_UNIT_BRACKETS_RE = re.compile(r"\s*(?:\([^()\[\]]*[A-Za-z][^()\[\]]*\)|\[[^()\[\]]*[A-Za-z][^()\[\]]*\])")
_DIGIT_RE = re.compile(r"\d")

Row = tuple[str, Any]  # (location inside the file: "3", "item 3", "Problem 3", "row 3"; parsed row)


class _Malformed(Exception):
    """A row-level problem; turned into a DataError (or a counted skip) with file:row attached.

    `reason` is the short category the skip summary counts ("missing field 'Answer'")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


# --------------------------------------------------------------------------- sources
def _resolve(spec: str | Path, split: str) -> tuple[Path | str, str | None]:
    """(file, directory or hub id; "builtin" | "hub" | None)."""
    text = str(spec)
    if text.startswith("builtin:"):
        if text != BUILTIN_SAMPLE:
            raise DataError(f"unknown builtin dataset {text!r}; available: {BUILTIN_SAMPLE}")
        if split not in _BUILTIN_SPLITS:
            raise DataError(f"{BUILTIN_SAMPLE} has splits {', '.join(_BUILTIN_SPLITS)}, not {split!r}")
        return _ASSETS / f"{split}.jsonl", "builtin"
    if text.startswith(HUB_PREFIX):
        if not text[len(HUB_PREFIX) :].strip():
            raise DataError(f"{text!r}: name the hub dataset after '{HUB_PREFIX}', e.g. hf:openai/gsm8k")
        return text[len(HUB_PREFIX) :], "hub"
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"data file not found: {path} (or use {BUILTIN_SAMPLE})")
    return path, None


def _format_of(path: Path | str, fmt: str, kind: str | None) -> str:
    if fmt not in FORMATS:
        raise DataError(f"data.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if kind == "builtin":
        return "jsonl"
    if kind == "hub" or (isinstance(path, Path) and path.is_dir()):
        if fmt not in ("auto", "hf"):
            raise DataError(f"{path}: a directory or hub id is read as format hf, not {fmt!r}")
        return "hf"
    if fmt == "auto":
        return _SUFFIXES.get(Path(path).suffix.lower(), "jsonl")
    if fmt == "hf":
        raise DataError(f"{path}: format hf reads a `datasets` directory or hf:<hub id>, not a file")
    return "jsonl" if fmt in ("json", "gsm8k") else fmt


def _optional(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(
            f"reading {what} needs the {module!r} package, which is not installed: "
            "pip install 'edge-distill[data]'"
        ) from None


def _json_rows(path: Path) -> list[Row]:
    """A JSONL file, or a JSON array file."""
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
        return [(f"item {i}", row) for i, row in enumerate(data, 1)]
    rows: list[Row] = []
    # split on "\n" only: str.splitlines() also splits on U+2028 and friends, which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:  # deep nesting and over-long integers are malformed rows too, not tracebacks
            rows.append((str(lineno), loads_json(line)))
        except ValueError as e:
            rows.append((str(lineno), _Malformed(str(e), "invalid JSON")))
    return rows


def _csv_rows(path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(read_utf8(path), newline=""))
    if not reader.fieldnames:
        raise DataError(f"{path}: a CSV data file needs a header row naming its columns")
    rows: list[Row] = []
    start = 2
    try:
        for record in reader:
            if None in record:  # more cells than header columns
                rows.append((str(start), _Malformed("more cells than header columns", "extra cells")))
            else:
                rows.append((str(start), dict(record)))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e}); fix the file") from None
    return rows


def _xml_rows(path: Path) -> list[Row]:
    text = read_utf8(path)
    if re.search(r"<!ENTITY", text, re.IGNORECASE):  # entity expansion ("billion laughs") is never data
        raise DataError(f"{path}: XML entity declarations (<!ENTITY) are not accepted; remove them")
    try:
        root = ET.fromstring(text.encode())
    except ET.ParseError as e:
        raise DataError(f"{path}: not valid XML ({e}); fix the file") from None
    elements = [e for e in root.iter() if e.tag.lower() == "problem"] or list(root)
    rows: list[Row] = []
    for i, el in enumerate(elements, 1):
        row: dict[str, Any] = dict(el.attrib)
        for child in el:
            row[child.tag] = " ".join("".join(child.itertext()).split())
        where = f"Problem {i}" + (f" (ID={el.attrib['ID']})" if "ID" in el.attrib else "")
        rows.append((where, row))
    return rows


def _table_rows(table: Any) -> list[Row]:
    return [(f"row {i}", row) for i, row in enumerate(table.to_pylist(), 1)]


def _parquet_rows(path: Path) -> list[Row]:
    pq = _optional("pyarrow.parquet", "parquet files")
    try:
        return _table_rows(pq.read_table(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None


def _arrow_rows(path: Path) -> list[Row]:
    ipc = _optional("pyarrow.ipc", "arrow files")
    errors = []
    for opener in (ipc.open_stream, ipc.open_file):  # `datasets` writes streams; others write files
        try:
            with opener(path) as reader:
                return _table_rows(reader.read_all())
        except (OSError, ValueError) as e:
            errors.append(str(e))
    raise DataError(f"{path}: not a readable arrow file ({errors[-1]})")


def _hf_rows(source: Path | str, split: str, hub: bool) -> list[Row]:
    datasets = _optional("datasets", "a Hugging Face dataset")
    try:
        if hub:
            ds = datasets.load_dataset(str(source), split=split)
        else:
            ds = datasets.load_from_disk(str(source))
    except (OSError, ValueError, FileNotFoundError) as e:
        what = "hub dataset (needs network access)" if hub else "`datasets` saved directory"
        raise DataError(f"{source}: cannot load as a {what}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{source}: has splits {', '.join(ds)}, not {split!r}")
        ds = ds[split]
    return [(f"row {i}", row) for i, row in enumerate(ds, 1)]


def _rows(path: Path | str, fmt: str, split: str, kind: str | None) -> list[Row]:
    if fmt == "hf":
        return _hf_rows(path, split, hub=kind == "hub")
    readers = {"jsonl": _json_rows, "csv": _csv_rows, "xml": _xml_rows}
    readers.update(parquet=_parquet_rows, arrow=_arrow_rows)
    return readers[fmt](Path(path))


# --------------------------------------------------------------------------- fields
def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise _Malformed(f"missing field {name!r} (fields present: {present})", f"missing field {name!r}")
    return row[name]


def _text(row: dict[str, Any], spec: str) -> Any:
    """A field's value, or a template of fields rendered as text ("{Body} {Question}")."""
    if "{" not in spec:
        return _field(row, spec)

    def fill(m: re.Match[str]) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        value = _field(row, m.group(1))
        return "" if value is None else str(value).strip()

    return " ".join(_TEMPLATE_RE.sub(fill, spec).split())


def _gold(value: Any, field: str) -> tuple[str, str | None]:
    """(normalized answer, solution text or None): the gold-answer rule of the module docstring."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise _Malformed(f"field {field!r} is an empty list", "answer is an empty list")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Malformed(
            f"field {field!r} must be a number or a '#### N' solution, got {type(value).__name__}",
            "answer has the wrong type",
        )
    text = str(value)
    if "####" in text:
        try:
            return gsm8k_gold(text), text
        except ValueError as e:
            raise _Malformed(f"field {field!r}: {e}", "no number after '####'") from e
    answer = normalize_number(text)
    if answer is None and len(text) <= 1000:
        answer = normalize_number(_UNIT_BRACKETS_RE.sub("", text))
    if answer is None:
        raise _Malformed(f"field {field!r} is not a number: {text[:60]!r}", "answer is not a number")
    return answer, None


def _socratic_map(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    ignored = 0
    for _, row in _json_rows(path):
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
def load_problems_with_stats(
    spec_or_path: str | Path,
    *,
    fmt: str = "auto",
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str | None = "id",
    skip_malformed: bool = False,
    split: str = "train",
    socratic: str | Path | None = "auto",
) -> tuple[list[Problem], dict[str, Any]]:
    """`load_problems` plus stats: {"file", "format", "rows", "loaded", "skipped", "skipped_reasons",
    "skipped_lines" (the first 20), "socratic_attached", "questions_without_digits"}."""
    path, kind = _resolve(spec_or_path, split)
    fmt = _format_of(path, fmt, kind)
    builtin = kind == "builtin"
    if builtin:
        question_field, answer_field, id_field = "question", "answer", None
    source = "gsm8k-sample" if builtin else Path(str(path)).stem or str(path)
    rows = _rows(path, fmt, split, kind)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    skipped: list[str] = []
    reasons: Counter[str] = Counter()
    for index, (where, row) in enumerate(rows):
        try:
            if isinstance(row, _Malformed):
                raise row
            if not isinstance(row, dict):
                raise _Malformed(f"expected a JSON object, got {type(row).__name__}", "not an object")
            question = _text(row, question_field)
            if not isinstance(question, str) or not question.strip():
                raise _Malformed(f"field {question_field!r} must be a non-empty string", "empty question")
            answer, solution = _gold(_field(row, answer_field), answer_field)
        except _Malformed as e:
            msg = f"{path}:{where}: {e}"
            if not skip_malformed:
                raise DataError(f"{msg}; {_FIX}") from None
            skipped.append(msg)
            reasons[e.reason] += 1
            continue
        raw_id = row.get(id_field) if id_field else None
        if builtin:
            pid = f"gsm8k-{split}-{index:05d}"
        elif raw_id not in (None, "") and not isinstance(raw_id, (dict, list)):
            pid = str(raw_id)
        else:  # content-derived, so the same question keeps its id when the file is reordered
            pid = "q-" + hashlib.sha1(question.strip().encode()).hexdigest()[:16]
        if pid in seen:  # repeated questions stay separate problems, but under distinct ids
            seen[pid] += 1
            pid = f"{pid}-{seen[pid]}"
        else:
            seen[pid] = 1
        solution = solution if solution is not None else _opt_text(row.get("solution"))
        problems.append(
            Problem(
                pid,
                question.strip(),
                answer,
                solution,
                _opt_text(row.get("socratic")),
                _opt_text(row.get("source")) or source,
            )
        )
    if skipped:
        _warn_skipped(path, skipped, reasons, len(rows))
    if not problems:
        raise DataError(f"{path}: no problems loaded ({len(skipped)} malformed rows skipped)")
    attached = _attach_socratic(problems, path, socratic) if isinstance(path, Path) else 0
    no_digits = _warn_no_digits(path, problems, question_field)
    stats = {
        "file": str(path),
        "format": fmt,
        "rows": len(rows),
        "loaded": len(problems),
        "skipped": len(skipped),
        "skipped_reasons": dict(reasons.most_common()),
        "skipped_lines": skipped[:_KEEP_LINES],
        "socratic_attached": attached,
        "questions_without_digits": no_digits,
    }
    return problems, stats


def _opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _warn_skipped(path: Path | str, skipped: list[str], reasons: Counter[str], rows: int) -> None:
    """One warning per file, however many rows were skipped (ASDiv used to print 2,157 lines)."""
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    examples = "\n  ".join(skipped[:_EXAMPLES])
    more = f"\n  ... and {len(skipped) - _EXAMPLES} more" if len(skipped) > _EXAMPLES else ""
    log.warning(
        "%s: skipped %d malformed rows of %d (%s); first:\n  %s%s",
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
            "%s: %d of %d questions contain no digits: does data.question_field=%r leave out part of the "
            'problem? (SVAMP/ASDiv keep the numbers in Body: question_field: "{Body} {Question}")',
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


def load_problems(
    spec_or_path: str | Path,
    *,
    fmt: str = "auto",
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str | None = "id",
    skip_malformed: bool = False,
    split: str = "train",
    socratic: str | Path | None = "auto",
) -> list[Problem]:
    """Problems from `builtin:gsm8k-sample` (`split` = train|test), a file, a `datasets` dir or hf:<id>.

    See the module docstring for the formats and the gold-answer rule. `question_field` is a field name
    or a template ("{Body} {Question}"); `answer_field` a field (a number, a list of numbers, a "#### N"
    solution, a number with a unit or bracketed unit); `id_field` the row's id (None or a missing
    value: "q-" + sha1(question)[:16]). Optional `solution`, `socratic`, `source` fields are kept. The
    socratic version is attached from a sibling `<name>_socratic.jsonl` (or `socratic`=path; None to
    skip), matched by question text. Builtin ids: "gsm8k-train-00012".
    """
    problems, _ = load_problems_with_stats(
        spec_or_path,
        fmt=fmt,
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        skip_malformed=skip_malformed,
        split=split,
        socratic=socratic,
    )
    return problems


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
