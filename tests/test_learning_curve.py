"""benchmarks/learning_curve.py: arm parsing (incl. the `:torch` dropout-draws arm) and the paired comparison
of the two draws on the same dev problems. The curve itself is a benchmark (minutes per point), not a test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_distill.stats import mcnemar_exact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning_curve import draws_paired, parse_arm  # noqa: E402


def test_parse_arm():
    assert parse_arm("cot:lora") == ("cot", "lora", "fast")
    assert parse_arm("all:full") == ("all", "full", "fast")
    assert parse_arm("pot:lora:torch") == ("pot", "lora", "torch")
    for bad in ("cot", "cot:qlora", "cot:full:torch", "cot:lora:mkl", "cot:lora:torch:x", "sql:lora"):
        with pytest.raises(SystemExit, match="STRATEGIES:FINETUNE"):
            parse_arm(bad)


def test_draws_paired_pairs_each_torch_arm_with_its_fast_arm_per_budget():
    ids = [f"p{i}" for i in range(10)]
    torch_draws = {64: dict.fromkeys(ids, False) | {"p0": True}, 128: dict.fromkeys(ids, True)}
    fast = {64: dict.fromkeys(ids, False) | {"p1": True, "p2": True}, 128: dict.fromkeys(ids, True)}
    got = draws_paired({"cot:lora": fast, "cot:lora:torch": torch_draws, "pot:full": {64: fast[64]}})
    assert list(got) == ["cot:lora"]
    at64, at128 = got["cot:lora"]
    assert at64["budget"] == 64 and at64["n"] == 10
    assert at64["first_only"] == 1 and at64["second_only"] == 2  # first = torch draws, second = fast
    assert at64["delta"] == pytest.approx(0.1) and at64["mcnemar_p"] == mcnemar_exact(1, 2)
    assert at128["delta"] == 0 and at128["mcnemar_p"] == 1.0
    assert draws_paired({"cot:lora:torch": torch_draws}) == {}  # no fast arm to pair with
