"""benchmarks/learning_curve.py: arm parsing (incl. the LoRA variants `:torch` dropout draws and `:topN`
layers) and the paired comparison of a variant with its base arm on the same dev problems. The curve itself is a benchmark (minutes per point), not a test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_distill.stats import mcnemar_exact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning_curve import Arm, parse_arm, variants_paired  # noqa: E402


def test_parse_arm():
    assert parse_arm("cot:lora") == Arm("cot", "lora", "fast", None)
    assert parse_arm("all:full") == Arm("all", "full", "fast", None)
    assert parse_arm("pot:lora:torch") == Arm("pot", "lora", "torch", None)
    assert parse_arm("cot:lora:top10") == Arm("cot", "lora", "fast", 10)
    both = parse_arm("cot:lora:top8:torch")
    assert (
        both == Arm("cot", "lora", "torch", 8)
        and both.name == "cot:lora:torch:top8"
        and both.base == "cot:lora"
    )
    assert parse_arm(both.name) == both and both.dir_suffix == "-torch-draws-top8"
    bad = ("cot", "cot:qlora", "cot:full:torch", "cot:full:top4", "cot:lora:mkl", "cot:lora:torch:x", "sql:lora",
           "cot:lora:top0", "cot:lora:top", "cot:lora:top4:top5", "cot:lora:torch:torch")  # fmt: skip
    for text in bad:
        with pytest.raises(SystemExit, match="STRATEGIES:FINETUNE"):
            parse_arm(text)


def test_variants_paired_pairs_each_lora_variant_with_its_base_arm_per_budget():
    ids = [f"p{i}" for i in range(10)]
    torch_draws = {64: dict.fromkeys(ids, False) | {"p0": True}, 128: dict.fromkeys(ids, True)}
    fast = {64: dict.fromkeys(ids, False) | {"p1": True, "p2": True}, 128: dict.fromkeys(ids, True)}
    got = variants_paired({"cot:lora": fast, "cot:lora:torch": torch_draws, "cot:lora:top4": torch_draws,
                           "pot:full": {64: fast[64]}})  # fmt: skip
    assert list(got) == ["cot:lora:torch", "cot:lora:top4"] and got["cot:lora:top4"] == got["cot:lora:torch"]
    at64, at128 = got["cot:lora:torch"]
    assert at64["budget"] == 64 and at64["n"] == 10
    assert at64["first_only"] == 1 and at64["second_only"] == 2  # first = the variant, second = the base
    assert at64["delta"] == pytest.approx(0.1) and at64["mcnemar_p"] == mcnemar_exact(1, 2)
    assert at128["delta"] == 0 and at128["mcnemar_p"] == 1.0
    assert variants_paired({"cot:lora:torch": torch_draws}) == {}  # no base arm to pair with
