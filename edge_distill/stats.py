"""Small statistics for reporting accuracies honestly (torch-free, used on device too)."""

from __future__ import annotations

import math

__all__ = ["wilson_ci"]


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
