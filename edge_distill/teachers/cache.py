"""Persistent teacher cache (SQLite): a paid completion is never paid for twice.

Key = sha256 of (backend, model, prompt, sampling params, sample index). One file can be shared by many
runs and by concurrent processes (WAL journal + busy timeout). Only successful completions are stored
(finish "stop" or "length": both were paid for); failed calls are recorded in `faults` for the report but
never cached, so a re-run retries them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/edge-distill/teacher.sqlite")

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
CREATE TABLE IF NOT EXISTS faults (
    key TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL
);
"""


def resolve_cache_path(spec: str | Path | None) -> Path | None:
    """`None` disables caching, "auto" is the shared user cache, anything else is a file path."""
    if spec is None:
        return None
    if str(spec) == "auto":
        return DEFAULT_CACHE.expanduser()
    return Path(spec).expanduser()


def cache_key(backend: str, model: str, prompt: str, sampling: Mapping[str, Any], index: int) -> str:
    blob = json.dumps(
        {"backend": backend, "model": model, "prompt": prompt, "sampling": dict(sampling), "index": index},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CachedCompletion:
    text: str
    finish_reason: str
    completion_tokens: int | None = None


class TeacherCache:
    """Thread-safe wrapper around one SQLite file (one connection guarded by a lock)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: list[str]) -> dict[str, CachedCompletion]:
        found: dict[str, CachedCompletion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # stay under SQLite's variable limit
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, text, finish_reason, completion_tokens FROM completions WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, text, finish, tokens in rows:
                    found[key] = CachedCompletion(text, finish, tokens)
            self.hits += len(found)
            self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, backend: str, model: str, items: Iterable[tuple[str, int, CachedCompletion]]) -> None:
        """Store (key, sample_index, completion) rows and commit at once: a crash keeps what was paid."""
        now = time.time()
        rows = [
            (key, backend, model, idx, c.text, c.finish_reason, c.completion_tokens, now)
            for key, idx, c in items
        ]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.commit()

    def record_fault(self, key: str, backend: str, model: str, reason: str, error: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO faults VALUES (?, ?, ?, ?, ?, ?)",
                (key, backend, model, reason, error, time.time()),
            )
            self._db.commit()

    def fault_counts(self, backend: str | None = None, model: str | None = None) -> dict[str, int]:
        sql = "SELECT reason, COUNT(*) FROM faults WHERE (? IS NULL OR backend = ?) AND (? IS NULL OR model = ?)"
        with self._lock:
            rows = self._db.execute(sql + " GROUP BY reason", (backend, backend, model, model)).fetchall()
        return {reason: n for reason, n in rows}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "hits": self.hits, "misses": self.misses, "entries": len(self)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
