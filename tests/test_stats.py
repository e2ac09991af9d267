"""edge_distill.stats against values worked out by hand."""

from __future__ import annotations

import pytest

from edge_distill.stats import mcnemar_exact, paired_bootstrap_ci, paired_comparison, wilson_ci


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 5, 14 / 64),  # n=6: P(X<=1) = (1 + 6) / 64, two-sided doubles it
        (0, 6, 2 / 64),  # P(X=0) = 1/64
        (3, 0, 2 / 8),  # symmetric in b, c
        (2, 2, 1.0),  # 2 * (1 + 4 + 6) / 16 > 1 is capped
        (0, 0, 1.0),  # nothing discordant: no evidence
        (10, 0, 2 / 1024),
    ],
)
def test_mcnemar_exact_hand_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_bootstrap_degenerate_cases_are_exact():
    assert paired_bootstrap_ci([False] * 7, [True] * 7) == (1.0, 1.0)
    assert paired_bootstrap_ci([True, False, True], [True, False, True]) == (0.0, 0.0)
    # two problems, differences (+1, 0): resampled means are 0, ½, 1 with P ¼, ½, ¼ -> the 2.5 / 97.5 %
    # percentiles of 2000 draws are 0 and 1
    assert paired_bootstrap_ci([False, True], [True, True]) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_brackets_the_delta():
    first = [True, False, False, True, False, False, True, False, False, False] * 3
    second = [True, True, False, True, True, False, True, True, False, False] * 3
    lo, hi = paired_bootstrap_ci(first, second, seed=1)
    assert (lo, hi) == paired_bootstrap_ci(first, second, seed=1)
    assert lo < 0.3 < hi and lo > 0  # 9 of 30 flipped right, none flipped wrong
    with pytest.raises(ValueError):
        paired_bootstrap_ci([True], [True, False])


def test_paired_comparison_pairs_by_problem_id():
    base = {"a": False, "b": False, "c": True, "d": True, "only-base": True}
    new = {"d": True, "c": False, "b": True, "a": True, "only-new": False}
    r = paired_comparison(base, new)
    assert r["n"] == 4
    assert (r["first_accuracy"], r["second_accuracy"], r["delta"]) == (0.5, 0.75, 0.25)
    assert (r["first_only"], r["second_only"]) == (1, 2)
    assert r["mcnemar_p"] == pytest.approx(1.0)  # 2 * P(X<=1 | n=3) = 2 * 4/8
    lo, hi = r["delta_ci95"]
    assert lo <= 0.25 <= hi


def test_wilson_hand_value():
    # k=0, n=50: upper bound z^2 / (n + z^2) = 3.8416 / 53.8416
    lo, hi = wilson_ci(0, 50)
    assert lo == 0.0 and hi == pytest.approx(3.8416 / 53.8416)
