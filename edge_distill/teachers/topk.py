"""Teacher top-k log-probabilities, recorded at `teach` time for offline distillation (`train.kd`).

One `TopK` per teacher completion: for each generated token, its id and the teacher's k most likely ids
with their log-probabilities (natural log, the model's own distribution at temperature 1, before any
sampling transform), all in the ids of the tokenizer teacher and student share (teachers/vocab.py).
Compact by construction: int32 ids and float16 log-probs, 4 + 6·k bytes per token (124 B at k = 20);
no full-vocabulary tensor is ever stored.

Where they come from:
- HTTP (OpenAI-compatible: llama_cpp.server, vLLM serve): `logprobs`/`top_logprobs` in the response.
  Those name tokens by their text, so `PieceMap` maps text back to ids; a text that several ids share
  (byte fragments of one UTF-8 character) is not mappable and its mass joins the tail bucket (kd.py).
  vLLM's `return_tokens_as_token_ids` ("token_id:123") is read exactly.
- llama.cpp in-process and transformers: the logits themselves, so ids are exact.

Where they are stored: in the teacher cache next to the completion (SQLite blobs, teachers/cache.py), and
per run in `teach/topk.npz` beside `teach/samples.jsonl` (`write_store`/`read_store`), keyed by
`Sample.meta["topk"]`.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_TOPK = 100  # more than any server returns; bounds what a hostile body can make us store
_TOKEN_ID_RE = re.compile(r"token_id:(\d{1,9})")


@dataclass(frozen=True)
class TopK:
    """Per generated token t: `tokens[t]` its id, `ids[t, :]` the teacher's top-k ids, `logprobs[t, :]` theirs.

    Shapes: tokens int32 [n]; ids int32 [n, k]; logprobs float16 [n, k]. Missing entries: id −1 with
    log-prob −inf (a server returned fewer than k, or a text that maps to no single id); token −1: the
    generated token is not a known id (that position is never aligned to a student token).
    """

    tokens: np.ndarray
    ids: np.ndarray
    logprobs: np.ndarray

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens, dtype=np.int32).reshape(-1)
        ids = np.asarray(self.ids, dtype=np.int32)
        lp = np.asarray(self.logprobs, dtype=np.float32)
        if ids.ndim != 2 or lp.shape != ids.shape or ids.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"TopK: tokens [n], ids [n,k], logprobs [n,k]; got {tokens.shape}, {ids.shape}, {lp.shape}"
            )
        if ids.shape[1] > MAX_TOPK:
            raise ValueError(f"TopK: k={ids.shape[1]} exceeds {MAX_TOPK}")
        # hostile or sloppy input: a log-prob is <= 0; NaN or +inf is no entry, and neither is id < 0
        bad = ~(lp <= 0) | (ids < 0)
        lp = np.where(bad, -np.inf, lp)
        ids = np.where(bad | np.isneginf(lp), -1, ids).astype(np.int32)
        object.__setattr__(self, "tokens", np.where(tokens < 0, -1, tokens).astype(np.int32))
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "logprobs", lp.astype(np.float16))

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    @property
    def nbytes(self) -> int:
        return int(self.tokens.nbytes + self.ids.nbytes + self.logprobs.nbytes)

    def head(self, k: int) -> TopK:
        """The first k entries per token (records are sorted by log-prob, most likely first)."""
        return self if k >= self.k else TopK(self.tokens, self.ids[:, :k], self.logprobs[:, :k])

    def to_blobs(self) -> tuple[bytes, bytes, bytes]:
        return (
            self.tokens.astype("<i4").tobytes(),
            self.ids.astype("<i4").tobytes(),
            self.logprobs.astype("<f2").tobytes(),
        )

    @classmethod
    def from_blobs(cls, n: int, k: int, tokens: bytes, ids: bytes, logprobs: bytes) -> TopK:
        """The inverse of `to_blobs`; ValueError when the sizes do not match n and k (a damaged row)."""
        if (
            n < 0
            or not 0 < k <= MAX_TOPK
            or len(tokens) != 4 * n
            or len(ids) != 4 * n * k
            or len(logprobs) != 2 * n * k
        ):
            raise ValueError(f"TopK blobs do not hold n={n}, k={k}")
        return cls(
            np.frombuffer(tokens, dtype="<i4"),
            np.frombuffer(ids, dtype="<i4").reshape(n, k),
            np.frombuffer(logprobs, dtype="<f2").reshape(n, k),
        )


def from_logits_rows(tokens: Sequence[int], logits: np.ndarray, k: int) -> TopK:
    """The record of locally generated tokens: `logits[t]` ([n, V] float) are the raw logits that predicted
    `tokens[t]`. log_softmax in float64, top k by value."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(tokens):
        raise ValueError(f"from_logits_rows: {len(tokens)} tokens but logits of shape {x.shape}")
    k = min(k, x.shape[1])
    lse = np.logaddexp.reduce(x, axis=1, keepdims=True) if x.shape[0] else np.zeros((0, 1))
    logp = x - lse
    part = np.argpartition(-logp, k - 1, axis=1)[:, :k] if x.shape[0] else np.zeros((0, k), dtype=np.int64)
    vals = np.take_along_axis(logp, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return TopK(np.asarray(tokens), np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1))


def tokens_within(text_len: int, starts: Sequence[int]) -> int:
    """How many tokens start inside the first `text_len` characters (tokens past a stop string are cut)."""
    n = 0
    while n < len(starts) and starts[n] < text_len:
        n += 1
    return n


# ------------------------------------------------------------------------------------------ HTTP responses
class PieceMap:
    """Token text -> id of the shared tokenizer, for servers that name tokens by their text.

    Built from {piece: id} for every id whose text no other id shares (`teachers.vocab.piece_map`). vLLM's
    "token_id:123" (with `return_tokens_as_token_ids`) is read as the id itself, checked against `size`.
    """

    def __init__(self, pieces: Mapping[str, int], size: int):
        self.pieces = dict(pieces)
        self.size = size

    def id(self, text: str) -> int:
        m = _TOKEN_ID_RE.fullmatch(text)
        if m is not None:
            i = int(m.group(1))
            return i if i < self.size else -1
        return self.pieces.get(text, -1)


def from_openai(
    logprobs: Any, text: str, pieces: PieceMap, k: int, *, chat: bool = False
) -> tuple[TopK, int]:
    """A record from an OpenAI-style `logprobs` object (already shape-checked by http_schema) and the number
    of generated tokens whose text did not map to an id.

    completions: {"tokens": [str], "top_logprobs": [{str: float} | None]}; chat: {"content": [{"token",
    "logprob", "top_logprobs": [{"token", "logprob"}]}]}. Tokens that start after the returned `text`
    (a stop string the server cut) are dropped.
    """
    if chat:
        entries = [
            (e.token, [(t.token, t.logprob) for t in (e.top_logprobs or [])]) for e in logprobs.content
        ]
    else:
        tops = list(logprobs.top_logprobs or [])
        tops += [None] * (len(logprobs.tokens) - len(tops))
        entries = [(tok, list((top or {}).items())) for tok, top in zip(logprobs.tokens, tops, strict=False)]
    starts, pos = [], 0
    for tok, _ in entries:
        starts.append(pos)
        pos += len(tok)
    entries = entries[: tokens_within(len(text), starts)]
    k = min(k, MAX_TOPK)
    tokens = np.full(len(entries), -1, dtype=np.int32)
    ids = np.full((len(entries), k), -1, dtype=np.int32)
    lps = np.full((len(entries), k), -np.inf, dtype=np.float32)
    unmapped = 0
    for t, (tok, top) in enumerate(entries):
        tokens[t] = pieces.id(tok)
        unmapped += tokens[t] < 0
        best: dict[int, float] = {}
        for piece, lp in top:
            i = pieces.id(piece)
            if i >= 0 and isinstance(lp, (int, float)) and math.isfinite(lp) and lp > best.get(i, -math.inf):
                best[i] = float(lp)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        for j, (i, lp) in enumerate(ranked):
            ids[t, j], lps[t, j] = i, lp
    return TopK(tokens, ids, lps), int(unmapped)


# ------------------------------------------------------------------------------------------ per-run store
STORE_VERSION = 1


def write_store(
    path: str | Path, records: Mapping[str, TopK], info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write `records` (sample key -> TopK) as one .npz, atomically; return its size figures.

    Layout: keys [N] str, offsets int64 [N+1], tokens int32 [Σn], ids int32 [Σn, k], logprobs float16
    [Σn, k]; records with fewer than k entries are padded with id −1 / −inf. `info` (the tokenizer's
    content fingerprint, k) is stored as JSON.
    """
    import json

    from edge_distill.io import atomic_path

    keys = list(records)
    k = max((r.k for r in records.values()), default=1)
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    for i, key in enumerate(keys):
        offsets[i + 1] = offsets[i] + records[key].n
    total = int(offsets[-1])
    tokens = np.full(total, -1, dtype=np.int32)
    ids = np.full((total, k), -1, dtype=np.int32)
    lps = np.full((total, k), -np.inf, dtype=np.float16)
    for i, key in enumerate(keys):
        r, s, e = records[key], offsets[i], offsets[i + 1]
        tokens[s:e], ids[s:e, : r.k], lps[s:e, : r.k] = r.tokens, r.ids, r.logprobs
    meta = {"version": STORE_VERSION, "k": k, **dict(info or {})}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, keys=np.array(keys, dtype=str), offsets=offsets, tokens=tokens, ids=ids, logprobs=lps,
                info=np.array(json.dumps(meta)),
            )  # fmt: skip
    raw = tokens.nbytes + ids.nbytes + lps.nbytes
    return {
        "records": len(keys),
        "tokens": total,
        "k": k,
        "raw_bytes": int(raw),
        "file_bytes": Path(path).stat().st_size,
    }


class TopKStore:
    """A run's `teach/topk.npz`, read once: `get(key)` -> TopK or None."""

    def __init__(self, path: str | Path):
        import json

        from edge_distill.errors import DataError

        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                keys, self.offsets = z["keys"], z["offsets"]
                self.tokens, self.ids, self.logprobs = z["tokens"], z["ids"], z["logprobs"]
                self.info = json.loads(str(z["info"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.path}: not a top-k store ({e}); redo the teach stage") from None
        n = len(keys)
        if (
            self.offsets.shape != (n + 1,)
            or int(self.offsets[-1]) != len(self.tokens)
            or self.ids.shape[0] != len(self.tokens)
        ):
            raise DataError(f"{self.path}: damaged top-k store (sizes disagree); redo the teach stage")
        self.index = {str(key): i for i, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self.index)

    def get(self, key: str | None) -> TopK | None:
        i = self.index.get(key) if key is not None else None
        if i is None:
            return None
        s, e = int(self.offsets[i]), int(self.offsets[i + 1])
        return TopK(self.tokens[s:e], self.ids[s:e], self.logprobs[s:e])


def storage_per_samples(records: Iterable[TopK], k: int, per: int = 1000) -> dict[str, float]:
    """Bytes of top-k storage per `per` samples at `k` (from the records' token counts)."""
    counts = [r.n for r in records]
    if not counts:
        return {"samples": 0, "mean_tokens": 0.0, f"bytes_per_{per}_samples": 0.0}
    mean = float(np.mean(counts))
    return {"samples": len(counts), "mean_tokens": mean, "bytes_per_token": 4 + 6 * k,
            f"bytes_per_{per}_samples": mean * (4 + 6 * k) * per}  # fmt: skip
