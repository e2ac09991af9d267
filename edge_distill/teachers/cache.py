"""Persistent teacher cache (SQLite): a paid completion is never paid for twice.

Key = sha256 of (key version, backend variant, model, prompt, sampling params, sample index). The backend
variant names the teacher's identity: the HTTP teacher's normalised base URL (another server with the same
model name is another teacher), the llama.cpp teacher's GGUF fingerprint. KEY_VERSION changes whenever the
key's meaning changes, so entries of an older format are never served (they stay in the file, unused).
One file can be shared by many runs and by concurrent processes (WAL journal + busy timeout). Only
successful completions are stored (finish "stop" or "length": both were paid for); failed calls are
recorded in `faults` for the report but never cached, so a re-run retries them. A completion's teacher
top-k log-probs (offline distillation, teachers/topk.py) sit in `topk` under the same key as blobs; a
lookup that needs them treats a completion without them (or with fewer than k) as a miss.

A cache is an optimisation: a file SQLite cannot use (garbage, truncated, unwritable, disk full) is
reported once, naming the file and what to do, and the run goes on uncached; the file is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
_R = TypeVar("_R")

DEFAULT_CACHE = Path("~/.cache/edge-distill/teacher.sqlite")
# 2: the backend variant carries the server URL / model file identity (v1 keys ignored base_url)
KEY_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    completion_tokens INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS topk (
    key TEXT PRIMARY KEY,
    k INTEGER NOT NULL,
    n INTEGER NOT NULL,
    tokens BLOB NOT NULL,
    ids BLOB NOT NULL,
    logprobs BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS faults (
    key TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL
);
"""


def _topk_from_row(blobs: list[Any], k: int) -> Any:
    """A stored TopK cut to k, or None for a damaged row (then the completion is fetched again)."""
    from edge_distill.teachers.topk import TopK

    try:
        return TopK.from_blobs(*blobs).head(k)
    except (ValueError, TypeError):
        return None


def resolve_cache_path(spec: str | Path | None) -> Path | None:
    """`None` disables caching, "auto" is the shared user cache, anything else is a file path."""
    if spec is None:
        return None
    if str(spec) == "auto":
        return DEFAULT_CACHE.expanduser()
    return Path(spec).expanduser()


def cache_key(backend: str, model: str, prompt: str, sampling: Mapping[str, Any], index: int) -> str:
    blob = json.dumps(
        {
            "v": KEY_VERSION,
            "backend": backend,
            "model": model,
            "prompt": prompt,
            "sampling": dict(sampling),
            "index": index,
        },  # fmt: skip
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CachedCompletion:
    text: str
    finish_reason: str
    completion_tokens: int | None = None
    topk: Any = None  # teachers.topk.TopK when recorded


class TeacherCache:
    """Thread-safe wrapper around one SQLite file (one connection guarded by a lock).

    Any SQLite or OS error disables the cache for the rest of the process after one warning: lookups then
    miss and stores are dropped, which costs money but never the run."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.broken: str | None = None  # why the cache was switched off
        self.hits = 0
        self.misses = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.commit()
        except (sqlite3.Error, OSError) as e:
            self._disable(e)

    def _disable(self, e: BaseException) -> None:
        if self.broken is None:
            self.broken = f"{type(e).__name__}: {e}"
            log.warning(
                "teacher cache %s is unusable (%s): running without a cache from here on. The file is left "
                "untouched; move it away (or set teacher.cache to another file, or null) to start a fresh one.",
                self.path, self.broken,
            )  # fmt: skip
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _guard(self, op: Callable[[sqlite3.Connection], _R], default: _R) -> _R:
        with self._lock:
            if self._db is None:
                return default
            try:
                return op(self._db)
            except (sqlite3.Error, OSError) as e:
                self._disable(e)
                return default

    def get_many(self, keys: list[str], topk: int = 0) -> dict[str, CachedCompletion]:
        """The cached completions of `keys`; with `topk` > 0 only those stored with >= topk log-probs per token
        (cut to `topk`), the others count as misses."""

        def op(db: sqlite3.Connection) -> dict[str, CachedCompletion]:
            found: dict[str, CachedCompletion] = {}
            cols = ", t.n, t.k, t.tokens, t.ids, t.logprobs" if topk else ""
            join = " JOIN topk t ON t.key = c.key AND t.k >= ?" if topk else ""
            for start in range(0, len(keys), 500):  # stay under SQLite's variable limit
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT c.key, c.text, c.finish_reason, c.completion_tokens{cols} FROM completions c{join} "
                    f"WHERE c.key IN ({marks})",
                    ([topk] if topk else []) + chunk,
                ).fetchall()
                for key, text, finish, tokens, *blobs in rows:
                    record = _topk_from_row(blobs, topk) if topk else None
                    if topk and record is None:
                        continue
                    found[key] = CachedCompletion(text, finish, tokens, record)
            return found

        found = self._guard(op, {})
        with self._lock:
            self.hits += len(found)
            self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, backend: str, model: str, items: Iterable[tuple[str, int, CachedCompletion]]) -> None:
        """Store (key, sample_index, completion) rows and commit at once: a crash keeps what was paid."""
        now = time.time()
        items = list(items)
        rows = [
            (key, backend, model, idx, c.text, c.finish_reason, c.completion_tokens, now)
            for key, idx, c in items
        ]
        topk_rows = [
            (key, c.topk.k, c.topk.n, *c.topk.to_blobs()) for key, _, c in items if c.topk is not None
        ]
        if not rows:
            return

        def op(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR REPLACE INTO topk VALUES (?, ?, ?, ?, ?, ?)", topk_rows)
            db.commit()

        self._guard(op, None)

    def record_fault(self, key: str, backend: str, model: str, reason: str, error: str | None) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO faults VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    backend,
                    model,
                    reason,
                    (error or "")[:2000] if error is not None else None,
                    time.time(),
                ),
            )
            db.commit()

        self._guard(op, None)

    def fault_counts(self, backend: str | None = None, model: str | None = None) -> dict[str, int]:
        sql = "SELECT reason, COUNT(*) FROM faults WHERE (? IS NULL OR backend = ?) AND (? IS NULL OR model = ?)"
        rows = self._guard(
            lambda db: db.execute(sql + " GROUP BY reason", (backend, backend, model, model)).fetchall(), []
        )
        return {reason: n for reason, n in rows}

    def __len__(self) -> int:
        return int(self._guard(lambda db: db.execute("SELECT COUNT(*) FROM completions").fetchone()[0], 0))

    def stats(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": str(self.path),
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self),
        }
        if self.broken is not None:
            d["disabled"] = self.broken
        return d

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
