"""Atomic file writes, JSONL helpers and hostile-input readers.

Writes: a crash or a full disk never leaves a half-written artifact; the temporary is removed and the
error names the path. Reads of user files: bytes that are not UTF-8, JSON nested too deeply or numbers
past Python's digit limit become one error naming the file and line, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_distill.errors import DataError, EdgeDistillError, StorageError

# Errors that mean "this output location cannot take the write", whatever the caller was writing.
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_HINTS = {
    errno.ENOSPC: "the filesystem is full: free space there",
    errno.EDQUOT: "the disk quota is exhausted: free space there",
    errno.EFBIG: "the file size limit was reached (ulimit -f): raise it",
    errno.EROFS: "the filesystem is read-only: set runs_dir to a writable directory",
    errno.EACCES: "no permission: set runs_dir to a writable directory",
    errno.EPERM: "no permission: set runs_dir to a writable directory",
    errno.ENOTDIR: "this path or a parent of it is a file, not a directory",
}


def storage_error(path: str | os.PathLike[str], e: OSError, action: str = "write") -> StorageError:
    """One message naming the path, the OS reason and what to do."""
    hint = _HINTS.get(e.errno or 0, "fix the location")
    tail = "; nothing partial was left behind, rerun with --resume once fixed" if action == "write" else ""
    return StorageError(f"cannot {action} {path}: {e.strerror or e} ({hint}){tail}")


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """`mkdir -p` whose failure is one StorageError naming the directory."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file (or a dangling link) where the directory should be
        raise storage_error(path, OSError(errno.ENOTDIR, "a file is in the way"), "create directory") from e
    except OSError as e:
        raise storage_error(path, e, "create directory") from e
    return path


def _holds_something_precious(path: Path) -> bool:
    """A directory that contains the working directory or the home directory, or a filesystem root."""
    where = path.resolve()
    for precious in (Path.cwd().resolve(), Path.home().resolve()):
        if where == precious or where in precious.parents:
            return True
    return where == Path(where.anchor)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path` (file or directory)."""
    path = Path(path)
    if path.is_dir() and _holds_something_precious(path):  # `export --out .` would delete the project
        raise StorageError(
            f"refusing to replace {path}: it holds the working or home directory; nothing was written "
            "or deleted, choose a new output path"
        )
    make_dirs(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise storage_error(path, e) from e
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    except OSError as e:
        # Only errors that are about the output location are rephrased; anything else (an unreadable
        # input opened inside the block) keeps its own message.
        if e.errno in _FULL_ERRNOS:
            raise storage_error(path, e) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file we wrote ourselves (user files go through `data.load_problems`).

    A damaged file (edited by hand, cut short by a crash of another tool) is one DataError naming the line.
    """
    rows = []
    for lineno, line in iter_utf8_lines(path):
        if line.strip():
            try:
                rows.append(loads_json(line))
            except ValueError as e:
                raise DataError(
                    f"{path}:{lineno}: damaged ({e}); redo the stage that wrote it (--overwrite or a new name)"
                ) from None
    return rows


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one row (metrics logs) as one O_APPEND write() of the whole line, so concurrent writers
    never interleave inside a line and a crash leaves at most one cut last line."""
    make_dirs(Path(path).parent)
    data = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
    except OSError as e:
        raise storage_error(path, e) from e


# ------------------------------------------------------------------------------------------ hostile reads
def loads_json(text: str) -> Any:
    """`json.loads` for untrusted text: every failure is a ValueError with a short message.

    json raises RecursionError for deep nesting ("[[[[..." 100 000 deep) and a bare ValueError for an
    integer past Python's digit limit; both would otherwise escape as tracebacks.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
        raise ValueError(f"invalid JSON: {e.msg} ({where})") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"invalid JSON: {str(e).split(':')[0]}") from None


def _decode_error(
    path: str | os.PathLike[str], data: bytes, e: UnicodeDecodeError, first_line: int = 1
) -> str:
    line = first_line + data.count(b"\n", 0, e.start)
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    return (
        f"{path} line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
        "save the file as UTF-8"
    )


def read_utf8(
    path: str | os.PathLike[str],
    *,
    max_bytes: int | None = None,
    error: type[EdgeDistillError] = DataError,
) -> str:
    """The whole file as text; a read failure, a size over `max_bytes` or non-UTF-8 bytes raise `error`."""
    try:
        with open(path, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes // 1024} KiB; this is not a file of that kind")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(_decode_error(path, data, e)) from None


def iter_utf8_lines(
    path: str | os.PathLike[str], *, error: type[EdgeDistillError] = DataError
) -> Iterator[tuple[int, str]]:
    """(line number, text) of a possibly large file, streamed; bad bytes raise `error` naming the line."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the `with` below; open's own error is rephrased here
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(_decode_error(path, raw, e, lineno)) from None
