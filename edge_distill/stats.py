"""Small statistics for reporting accuracies honestly (torch-free, used on device too).

- `wilson_ci`: the interval of one accuracy (k of n).
- `mcnemar_exact`, `paired_bootstrap_ci`, `paired_comparison`: two models judged on the SAME problems.
  Pairing by problem removes the problem-difficulty variance two independent intervals carry, so a real
  difference of a few points on 50 problems can show up where overlapping Wilson intervals say nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["mcnemar_exact", "paired_bootstrap_ci", "paired_comparison", "wilson_ci"]


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


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    b = problems only the first model got right, c = only the second. Under "no difference" each
    discordant problem is a fair coin, so p = min(1, 2 · P(Binomial(b + c, ½) ≤ min(b, c))). No
    discordant problem at all gives p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact needs counts >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap_ci(
    first: Sequence[bool],
    second: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy(second) − accuracy(first), resampling problems (pairs).

    Deterministic for a given seed. Only the per-problem difference matters (−1, 0 or +1), so each
    resample is a draw of those differences with replacement.
    """
    if len(first) != len(second):
        raise ValueError(f"paired_bootstrap_ci: {len(first)} vs {len(second)} judgements")
    n = len(first)
    if n == 0:
        return -1.0, 1.0
    diffs = [int(bool(s)) - int(bool(f)) for f, s in zip(first, second, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    alpha = (1 - level) / 2
    lo = means[max(0, math.floor(alpha * resamples))]
    hi = means[min(resamples - 1, math.ceil((1 - alpha) * resamples) - 1)]
    return lo, hi


def paired_comparison(first: Mapping[str, bool], second: Mapping[str, bool], **kw: Any) -> dict[str, Any]:
    """Compare two models on the problems both were judged on (`{problem id: correct}` each).

    Returns n (shared problems), both accuracies on them, delta = second − first, the discordant counts
    (`first_only`, `second_only`), the exact McNemar p and the paired bootstrap 95 % CI of the delta.
    """
    ids = [i for i in first if i in second]
    a = [bool(first[i]) for i in ids]
    b = [bool(second[i]) for i in ids]
    n = len(ids)
    first_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    second_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    acc_a = sum(a) / n if n else 0.0
    acc_b = sum(b) / n if n else 0.0
    return {
        "n": n,
        "first_accuracy": acc_a,
        "second_accuracy": acc_b,
        "delta": acc_b - acc_a,
        "first_only": first_only,
        "second_only": second_only,
        "mcnemar_p": mcnemar_exact(first_only, second_only),
        "delta_ci95": list(paired_bootstrap_ci(a, b, **kw)),
    }


def mcnemar_power(n: int, discordant: float, delta: float, alpha: float = 0.05) -> float:
    """Power of the two-sided exact McNemar test (`mcnemar_exact`) at level `alpha` to detect a paired
    accuracy difference `delta` on `n` problems when a fraction `discordant` of problems is solved by
    exactly one of the two models. Exact: sums over the binomial number of discordant problems D and the
    split b | D ~ Binomial(D, (discordant + delta) / (2 · discordant)). `discordant` < |delta| is impossible
    (every gained problem is discordant), so it is raised to |delta|."""
    if n < 0 or not 0 <= abs(delta) <= 1 or not 0 <= discordant <= 1:
        raise ValueError(f"mcnemar_power: n={n}, discordant={discordant}, delta={delta}")
    pd = max(discordant, abs(delta))
    if n == 0 or pd == 0:
        return 0.0
    q = (pd + abs(delta)) / (2 * pd)  # P(a discordant problem favours the better model)
    power = 0.0
    for d in range(n + 1):
        p_d = _binom_pmf(n, d, pd)
        if p_d < 1e-15:
            continue
        # the exact test rejects at b <= k or b >= d - k for the largest k with p < alpha (symmetric)
        k, tail = -1, 0.0
        while k + 1 <= d // 2:
            nxt = tail + _binom_pmf(d, k + 1, 0.5)
            if min(1.0, 2 * nxt) >= alpha:
                break
            k, tail = k + 1, nxt
        if k < 0:
            continue
        reject = sum(_binom_pmf(d, b, q) for b in range(k + 1))
        reject += sum(_binom_pmf(d, b, q) for b in range(max(d - k, k + 1), d + 1))
        power += p_d * reject
    return min(1.0, power)


def _binom_pmf(n: int, k: int, p: float) -> float:
    """P(Binomial(n, p) = k), in log space so that n in the thousands does not overflow."""
    if p <= 0.0 or p >= 1.0:
        return float(k == (0 if p <= 0.0 else n))
    log = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log + k * math.log(p) + (n - k) * math.log1p(-p))
