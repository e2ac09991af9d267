"""Budget gates: one line per budget field, pass/fail/n/a, each carrying whether its value is measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from device_profiles.accuracy import AccuracyResult
from device_profiles.estimate import MEASURED, Figures
from device_profiles.loader import Budget

PASS, FAIL, NA = "pass", "fail", "n/a"


@dataclass(frozen=True)
class GateLine:
    name: str  # the budget field, e.g. "min_decode_tok_s"
    value: float | None
    limit: float | None
    unit: str
    basis: str  # measured | estimated
    status: str  # pass | fail | n/a

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _line(name: str, value: float | None, limit: float | None, unit: str, basis: str) -> GateLine:
    if limit is None or value is None:
        return GateLine(name, value, limit, unit, basis, NA)
    ok = value >= limit if name.startswith("min_") else value <= limit
    return GateLine(name, value, limit, unit, basis, PASS if ok else FAIL)


def evaluate(budget: Budget, fig: Figures, acc: AccuracyResult | None) -> list[GateLine]:
    """Every budget line, in the profile's order. Accuracy is always measured (through the real runtime)."""
    return [
        _line("max_package_mb", fig.package_mb, budget.max_package_mb, "MiB", MEASURED),
        _line("max_peak_rss_mb", fig.peak_rss_mb, budget.max_peak_rss_mb, "MiB", fig.basis),
        _line("min_decode_tok_s", fig.decode_tok_s, budget.min_decode_tok_s, "tok/s", fig.basis),
        _line("max_ttft_s", fig.ttft_s, budget.max_ttft_s, "s", fig.basis),
        _line("min_accuracy", acc.accuracy if acc else None, budget.min_accuracy, "", MEASURED),
        _line("max_accuracy_drop", acc.drop if acc else None, budget.max_accuracy_drop, "", MEASURED),
    ]


def passed(lines: list[GateLine]) -> bool:
    """A budget passes when no line fails (lines without a limit or a value are not gated)."""
    return all(line.status != FAIL for line in lines)
