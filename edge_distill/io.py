"""Atomic file writes, JSONL helpers and hostile-input readers.

Writes: a crash or a full disk never leaves a half-written artifact; the temporary is removed and the
error names the path. Reads of user files: bytes that are not UTF-8, JSON nested too deeply or numbers
past Python's digit limit become one error naming the file and line, never a traceback.

Links: beneath a directory registered with `confine` (a run directory), every directory on the way to a
write is opened with O_NOFOLLOW from the root down (directory fds), so a symlink planted there (a copied
or shared run) is refused, never followed. Everywhere, the file written is never a link's target: atomic
writes rename over the name (a planted link is replaced, its target untouched), appends open with
O_NOFOLLOW. An existing directory is replaced only by an artifact of the same kind (`atomic_path`'s
`kind`), never by a file, and only with consent where the kind asks for it (packages: --overwrite).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


# Directories beneath which nothing is followed: both the path as given and as resolved (callers name
# a run directory either way); the root itself may be a link the user made.
_CONFINED: set[Path] = set()
_CONFINED_LOCK = threading.Lock()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def confine(root: str | os.PathLike[str]) -> None:
    """From now on, no write of this process beneath `root` follows a symlink below it."""
    root = Path(root)
    with _CONFINED_LOCK:
        _CONFINED.update({Path(os.path.abspath(root)), Path(os.path.realpath(root))})


def _root_of(path: Path) -> Path | None:
    with _CONFINED_LOCK:
        roots = [r for r in _CONFINED if path == r or r in path.parents]
    return max(roots, key=lambda r: len(r.parts)) if roots else None


def _link_error(path: Path, root: Path, part: Path) -> StorageError:
    return StorageError(
        f"cannot write {path}: {part} is a symbolic link or not a directory inside {root}; edge-distill never "
        "follows links inside a run directory (one may have been planted there). Nothing was written: "
        "remove it, or use another directory"
    )


def open_dir(path: str | os.PathLike[str], *, create: bool = False) -> int:
    """An O_DIRECTORY fd of `path` (created, parents included, when `create`). Beneath a `confine`d root
    every component is opened with O_NOFOLLOW from the root down: a link there is a StorageError."""
    path = Path(os.path.abspath(path))
    root = _root_of(path)
    if root is None:
        if create:
            make_dirs_plain(path)
        return os.open(path, _DIR_FLAGS)
    if create:
        make_dirs_plain(root)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for i, part in enumerate(path.relative_to(root).parts):
            try:
                nfd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:  # made meanwhile (or a dangling link: refused just below)
                    pass
                nfd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _link_error(
                        path, root, root.joinpath(*path.relative_to(root).parts[: i + 1])
                    ) from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs_plain(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file (or a dangling link) where the directory should be
        raise storage_error(path, OSError(errno.ENOTDIR, "a file is in the way"), "create directory") from e


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """`mkdir -p` (never through a link beneath a `confine`d root) whose failure is one StorageError
    naming the directory."""
    path = Path(path)
    try:
        os.close(open_dir(path, create=True))
    except StorageError:
        raise
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


@dataclass(frozen=True)
class ArtifactKind:
    """A kind of directory artifact `atomic_path` may replace: `recognizes(path)` says whether an existing
    directory is one; with `needs_consent`, only when the caller passes overwrite (the CLI's --overwrite)."""

    name: str
    recognizes: Callable[[Path], bool]
    needs_consent: bool = False


def _what_is_there(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "a file" if stat.S_ISREG(st.st_mode) else "a special file"
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return "a directory that cannot be listed"
    shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")
    return f"a directory holding {shown}" if names else "an empty directory"


def check_replaceable(
    path: str | os.PathLike[str], kind: ArtifactKind | None = None, *, overwrite: bool = False
) -> None:
    """Raise StorageError, naming what is at `path`, unless an artifact may be written there: nothing,
    a file or a link (replaced, never followed) for a file artifact; for a directory artifact of `kind`,
    nothing, a link, an empty directory or an artifact of that kind (with `overwrite` if it needs consent).
    Touches nothing."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise storage_error(path, e) from e
    is_dir = stat.S_ISDIR(st.st_mode)
    if is_dir and _holds_something_precious(path):  # `export --out .` would delete the project
        raise StorageError(
            f"refusing to replace {path}: it holds the working or home directory; nothing was written "
            "or deleted, choose a new output path"
        )
    here = _what_is_there(path, st)
    if kind is None:
        if is_dir or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise StorageError(f"refusing to write the file {path}: {here} is there; nothing was changed")
        return
    if stat.S_ISLNK(st.st_mode) or (is_dir and here == "an empty directory"):
        return
    if not is_dir or not kind.recognizes(path):
        raise StorageError(
            f"refusing to replace {path}: it is {here}, not an edge-distill {kind.name}; nothing was written "
            "or deleted. Choose another output path"
        )
    if kind.needs_consent and not overwrite:
        raise StorageError(
            f"{path} is an existing edge-distill {kind.name}; pass --overwrite to replace it (nothing was "
            "changed)"
        )


@contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, kind: ArtifactKind | None = None, overwrite: bool = False
) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`. `kind` None: a file
    artifact; else a directory artifact, which replaces only what `check_replaceable` allows (checked
    before anything is created, and again before the rename). The rename and the cleanup go through
    the parent's directory fd (`open_dir`): nothing is followed."""
    path = Path(path)
    check_replaceable(path, kind, overwrite=overwrite)
    try:
        parent = open_dir(path.parent, create=True)
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(path, e) from e
    try:
        tmp_name = _make_temp_dir(parent, path.name)
    except OSError as e:
        os.close(parent)
        raise storage_error(path, e) from e
    target = path.parent / tmp_name / path.name
    try:
        yield target
        check_replaceable(path, kind, overwrite=overwrite)
        try:
            st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):  # moved aside, removed with the temporary dir
            os.rename(path.name, f"{tmp_name}/.replaced", src_dir_fd=parent, dst_dir_fd=parent)
        os.rename(f"{tmp_name}/{path.name}", path.name, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError as e:
        # Only errors that are about the output location are rephrased; anything else (an unreadable
        # input opened inside the block) keeps its own message.
        if e.errno in _FULL_ERRNOS:
            raise storage_error(path, e) from e
        raise
    finally:
        if sys.version_info >= (3, 11):  # rmtree by directory fd: 3.11+
            shutil.rmtree(tmp_name, dir_fd=parent, ignore_errors=True)
        else:  # our own 0700 directory: nobody else can have planted anything in it
            shutil.rmtree(path.parent / tmp_name, ignore_errors=True)
        os.close(parent)


def _make_temp_dir(parent: int, name: str) -> str:
    """A new private directory `.<name>.<random>.tmp` in the directory `parent` (mkdtemp by dir fd)."""
    for _ in range(100):
        tmp = f".{name[:100]}.{secrets.token_hex(4)}.tmp"
        try:
            os.mkdir(tmp, 0o700, dir_fd=parent)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", name)


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


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """os.open of a regular file without following a link: not at the name itself (O_NOFOLLOW), nor on
    the way beneath a `confine`d root (`open_dir`). A link, FIFO or device there is a StorageError."""
    path = Path(path)
    try:
        parent = open_dir(path.parent, create=bool(flags & os.O_CREAT))
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(path, e) from e
    fd = -1
    try:
        try:  # O_NONBLOCK: a FIFO must not block the open; what the open found is checked again below
            st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is None or stat.S_ISREG(st.st_mode):
            fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=parent)
            st = os.fstat(fd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise storage_error(path, e) from e
        st = os.lstat(path)
    finally:
        os.close(parent)
    if not stat.S_ISREG(st.st_mode):
        if fd >= 0:
            os.close(fd)
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise StorageError(
            f"cannot write {path}: it is {what}; edge-distill never writes through a link or into a special "
            "file there (one may have been planted). Nothing was written: remove it"
        )
    os.set_blocking(fd, True)
    return fd


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one row (metrics logs) as one O_APPEND write() of the whole line, so concurrent writers
    never interleave inside a line and a crash leaves at most one cut last line. Never through a link."""
    data = (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode()
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError as e:
        raise storage_error(path, e) from e
    finally:
        os.close(fd)


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
