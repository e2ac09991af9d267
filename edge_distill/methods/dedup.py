"""Near-duplicate and contamination checks for synthetic problems (FDD step 4). Pure functions.

Two similarity measures, both in [0, 1] on lower-cased, punctuation-stripped text:
- "token_set": rapidfuzz's token-set ratio. It is 1.0 whenever one text's word set contains the other's,
  so it is the conservative choice for *contamination* (a synthetic problem that embeds an eval question
  is contaminated) but wrong for *near-duplicates* of a harder variant, which extends its source.
- "token_sort": rapidfuzz's ratio on sorted words: symmetric edit similarity, penalizes added text.
- "jaccard": Jaccard similarity of word n-gram sets (n=3 by default).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from rapidfuzz import fuzz, process
from rapidfuzz.utils import default_process

Method = Literal["token_set", "token_sort", "jaccard"]
DEDUP_METHOD: Method = "token_sort"
CONTAMINATION_METHOD: Method = "token_set"
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def ngrams(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset({tuple(words)}) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[Any], b: frozenset[Any]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def similarity_matrix(
    queries: Sequence[str], choices: Sequence[str], method: Method, n: int = 3
) -> np.ndarray:
    """[len(queries), len(choices)] similarities in [0, 1]."""
    if not queries or not choices:
        return np.zeros((len(queries), len(choices)), dtype=np.float32)
    if method == "jaccard":
        qa = [ngrams(q, n) for q in queries]
        ca = [ngrams(c, n) for c in choices]
        return np.array([[jaccard(q, c) for c in ca] for q in qa], dtype=np.float32)
    scorer = {"token_set": fuzz.token_set_ratio, "token_sort": fuzz.token_sort_ratio}.get(method)
    if scorer is None:
        raise ValueError(f"similarity method {method!r}: expected token_set, token_sort or jaccard")
    m = process.cdist(queries, choices, scorer=scorer, processor=default_process, dtype=np.float32, workers=1)
    return m / 100.0


@dataclass(frozen=True)
class Verdict:
    """Why a candidate is kept or dropped: its highest similarity to an eval question (`eval_score`) and
    to a training question or earlier candidate (`dup_score`), and the text that decided (`match`)."""

    keep: bool
    reason: str | None = None  # None | "contaminated" | "near_duplicate"
    eval_score: float = 0.0
    dup_score: float = 0.0
    match: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_candidates(
    candidates: Sequence[str],
    *,
    existing: Sequence[str] = (),
    eval_questions: Sequence[str] = (),
    dedup_threshold: float = 0.9,
    contamination_threshold: float = 0.8,
    dedup_method: Method = DEDUP_METHOD,
    contamination_method: Method = CONTAMINATION_METHOD,
) -> list[Verdict]:
    """One verdict per candidate, in order.

    A candidate is *contaminated* when its similarity to any eval-set question is ≥ `contamination_threshold`
    (checked first: it is the more serious reason), a *near duplicate* when its similarity to an existing
    training question or to an earlier kept candidate is ≥ `dedup_threshold`. Greedy: of two near-duplicate
    candidates the first is kept.
    """
    n = len(candidates)
    contam = similarity_matrix(candidates, list(eval_questions), contamination_method)
    vs_existing = similarity_matrix(candidates, list(existing), dedup_method)
    vs_self = similarity_matrix(candidates, candidates, dedup_method)
    verdicts: list[Verdict] = []
    kept: list[int] = []
    for i in range(n):
        eval_score = 0.0
        if contam.shape[1]:
            j = int(contam[i].argmax())
            eval_score = float(contam[i, j])
            if eval_score >= contamination_threshold:
                verdicts.append(Verdict(False, "contaminated", eval_score, 0.0, eval_questions[j]))
                continue
        best, match = 0.0, None
        if vs_existing.shape[1]:
            j = int(vs_existing[i].argmax())
            best, match = float(vs_existing[i, j]), existing[j]
        for j in kept:
            if vs_self[i, j] > best:
                best, match = float(vs_self[i, j]), candidates[j]
        if best >= dedup_threshold:
            verdicts.append(Verdict(False, "near_duplicate", eval_score, best, match))
            continue
        kept.append(i)
        verdicts.append(Verdict(True, None, eval_score, best, match))
    return verdicts


def settings(dedup_threshold: float, contamination_threshold: float, n_eval_questions: int) -> dict[str, Any]:
    """What a round's record reports about its checks (methods and thresholds)."""
    return {
        "dedup": DEDUP_METHOD,
        "dedup_threshold": dedup_threshold,
        "contamination": CONTAMINATION_METHOD,
        "contamination_threshold": contamination_threshold,
        "eval_questions": n_eval_questions,
    }
