"""Where problems come from and how their rows are read: the sources and readers of `data.load_problems`.

`resolve` turns a spec (`builtin:gsm8k-sample`, a path, `hf:<id>[:<config>][@<split>]`, `NAME:...`)
into a `Source`; `format_of` picks its reader; `read_rows` returns its rows as (location, parsed row),
a row that cannot be parsed as a `Malformed` in its place (see `edge_distill.data`'s docstring).
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.data_layouts import DATASET_NAMES, Malformed, Row
from edge_distill.errors import DataError
from edge_distill.io import loads_json, read_utf8

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


@dataclass(frozen=True)
class Source:
    where: Path | str  # a file or directory, or a hub id
    kind: str | None  # "builtin" | "hub" | None (a path)
    dataset: str | None  # NAME of a NAME:PATH spec
    split: str
    hub_config: str | None = None


_NAMED_RE = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*):(.+)", re.DOTALL)
_HUB_RE = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?)(?::([^@:]+))?(?:@([^@:]+))?"
)


def resolve(spec: str | Path, split: str) -> Source:
    text, dataset = str(spec), None
    m = _NAMED_RE.fullmatch(text)
    if m and m.group(1).lower() not in ("hf", "builtin") and not Path(text).expanduser().exists():
        name = m.group(1).lower()
        if name not in DATASET_NAMES:
            raise DataError(
                f"{text!r}: {m.group(1)!r} is not a dataset name edge-distill knows ({', '.join(DATASET_NAMES)}); "
                "give the file path alone (its layout is recognised by its fields) or name its fields"
            )
        dataset, text = name, m.group(2)
    if text.startswith("builtin:"):
        if text != BUILTIN_SAMPLE:
            raise DataError(f"unknown builtin dataset {text!r}; available: {BUILTIN_SAMPLE}")
        if split not in _BUILTIN_SPLITS:
            raise DataError(f"{BUILTIN_SAMPLE} has splits {', '.join(_BUILTIN_SPLITS)}, not {split!r}")
        return Source(_ASSETS / f"{split}.jsonl", "builtin", dataset, split)
    if text.startswith(HUB_PREFIX):
        hub = _HUB_RE.fullmatch(text[len(HUB_PREFIX) :].strip())
        if hub is None:
            raise DataError(
                f"{text!r}: name the hub dataset after '{HUB_PREFIX}' as <id>[:<config>][@<split>], "
                "e.g. hf:openai/gsm8k:main@test"
            )
        return Source(hub.group(1), "hub", dataset, hub.group(3) or split, hub.group(2))
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"data file not found: {path} (or use {BUILTIN_SAMPLE})")
    return Source(path, None, dataset, split)


def format_of(src: Source, fmt: str) -> str:
    path, kind = src.where, src.kind
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


def json_rows(path: Path) -> list[Row]:
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
            rows.append((str(lineno), Malformed(str(e), "invalid JSON")))
    return rows


def csv_rows(path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(read_utf8(path), newline=""))
    if not reader.fieldnames:
        raise DataError(f"{path}: a CSV data file needs a header row naming its columns")
    rows: list[Row] = []
    start = 2
    try:
        for record in reader:
            if None in record:  # more cells than header columns
                rows.append((str(start), Malformed("more cells than header columns", "extra cells")))
            else:
                rows.append((str(start), dict(record)))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e}); fix the file") from None
    return rows


def xml_rows(path: Path) -> list[Row]:
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


def table_rows(table: Any) -> list[Row]:
    return [(f"row {i}", row) for i, row in enumerate(table.to_pylist(), 1)]


def parquet_rows(path: Path) -> list[Row]:
    pq = _optional("pyarrow.parquet", "parquet files")
    try:
        return table_rows(pq.read_table(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None


def arrow_rows(path: Path) -> list[Row]:
    ipc = _optional("pyarrow.ipc", "arrow files")
    errors = []
    for opener in (ipc.open_stream, ipc.open_file):  # `datasets` writes streams; others write files
        try:
            with opener(path) as reader:
                return table_rows(reader.read_all())
        except (OSError, ValueError) as e:
            errors.append(str(e))
    raise DataError(f"{path}: not a readable arrow file ({errors[-1]})")


def hf_rows(src: Source) -> list[Row]:
    datasets = _optional("datasets", "a Hugging Face dataset")
    hub = src.kind == "hub"
    try:
        if hub:  # offline (HF_HUB_OFFLINE=1): `datasets` reads its cache under HF_HOME, no network
            ds = datasets.load_dataset(str(src.where), src.hub_config, split=src.split)
        else:
            ds = datasets.load_from_disk(str(src.where))
    except (OSError, ValueError) as e:  # ConnectionError, DatasetNotFoundError, "Couldn't find cache ..."
        what = (
            "hub dataset (online, or offline from the `datasets` cache)"
            if hub
            else "`datasets` saved directory"
        )
        raise DataError(f"{src.where}: cannot load as a {what}: {str(e)[:1000]}") from None
    if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
            raise DataError(f"{src.where}: has splits {', '.join(ds)}, not {src.split!r}")
        ds = ds[src.split]
    return [(f"row {i}", row) for i, row in enumerate(ds, 1)]


def read_rows(src: Source, fmt: str) -> list[Row]:
    if fmt == "hf":
        return hf_rows(src)
    readers = {"jsonl": json_rows, "csv": csv_rows, "xml": xml_rows}
    readers.update(parquet=parquet_rows, arrow=arrow_rows)
    return readers[fmt](Path(src.where))
