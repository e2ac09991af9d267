"""Small statistics for reporting accuracies honestly (torch-free, used on device too)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["accuracy_summary", "wilson_ci"]


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at k=0 or k=n, which is where
    small dev sets and untrained students live. n=0 gives the uninformative (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp float noise; at k=0 (k=n) the exact bound is 0 (1).
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return lo, hi


def accuracy_summary(correct: list[bool], groups: list[str] | None = None, z: float = 1.96) -> dict[str, Any]:
    """{"accuracy", "n", "correct", "ci95": [lo, hi]} overall, plus "by_group" when `groups` is given
    (e.g. the strategy the student chose for each problem)."""
    if groups is not None and len(groups) != len(correct):
        raise ValueError(f"accuracy_summary: {len(correct)} results but {len(groups)} groups")

    def one(flags: list[bool]) -> dict[str, Any]:
        k, n = sum(bool(f) for f in flags), len(flags)
        lo, hi = wilson_ci(k, n, z)
        return {"accuracy": k / n if n else 0.0, "n": n, "correct": k, "ci95": [lo, hi]}

    out = one(list(correct))
    if groups is not None:
        by: dict[str, list[bool]] = {}
        for flag, g in zip(correct, groups, strict=True):
            by.setdefault(g, []).append(flag)
        out["by_group"] = {g: one(flags) for g, flags in sorted(by.items())}
    return out
