"""Evaluation arithmetic on fixed outputs (a fixed generate_fn), files written, and a real tiny-model pass."""

from __future__ import annotations

import json
import math

import pytest

from edge_distill.eval import evaluate, score, write_eval
from edge_distill.types import Problem

PROBLEMS = [
    Problem("a", "What is 2+3?", "5"),
    Problem("b", "What is 6 times 7?", "42"),
    Problem("c", "What is 10-4?", "6"),
    Problem("d", "What is 1+1?", "2"),
    Problem("e", "What is 3*3?", "9"),
    Problem("f", "What is 100/4?", "25"),
]
# what a student might write after the prompt, one per problem above
RESPONSES = [
    "[cot]: 2 + 3 = 5.\nThe answer is 5.",  # right
    "[pot]: answer = 6 * 7",  # right (computed by the sandbox)
    "[l2m]: Sub-question 1: What is 10-4? Answer 1: 10 - 4 = 7.\nThe answer is 7.",  # wrong
    "1 + 1 = 2. The answer is 2.",  # right, but no strategy tag
    "[cot]: 3 * 3 = 6.\nThe answer is 6.",  # wrong
    "[pot]: answer = 100 / 0",  # program crashes: no prediction, wrong
]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Independent Wilson score interval (the formula, not the library) to check the library against."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def fixed(responses):
    calls = []

    def generate_fn(model, tokenizer, prompts, **kwargs):
        calls.append((prompts, kwargs))
        return list(responses)

    return generate_fn, calls


def test_accuracy_per_strategy_and_ci_on_known_outputs():
    gen, calls = fixed(RESPONSES)
    r = evaluate(object(), PROBLEMS, tokenizer=object(), generate_fn=gen, max_new_tokens=77, batch_size=3)
    assert (r.n, r.correct) == (6, 3) and r.accuracy == pytest.approx(0.5)
    assert r.ci95 == pytest.approx(wilson(3, 6), abs=1e-4)
    assert r.per_strategy.keys() == {"cot", "l2m", "pot", "none"}
    assert {k: (v["n"], v["correct"]) for k, v in r.per_strategy.items()} == {
        "cot": (2, 1),
        "l2m": (1, 0),
        "pot": (2, 1),
        "none": (1, 1),
    }
    assert r.per_strategy["pot"]["ci95"] == pytest.approx(wilson(1, 2), abs=1e-4)
    preds = {p["id"]: p for p in r.predictions}
    assert preds["b"]["pred"] == "42" and preds["b"]["correct"]
    assert preds["c"]["pred"] == "7" and not preds["c"]["correct"]
    assert preds["f"]["pred"] is None and not preds["f"]["correct"]
    assert preds["a"]["raw"] == RESPONSES[0] and preds["a"]["gold"] == "5"
    prompts, kwargs = calls[0]
    assert prompts[0].startswith("Question: What is 2+3?") and prompts[0].endswith("Solution:")
    assert kwargs["max_new_tokens"] == 77 and kwargs["batch_size"] == 3


def test_forced_strategy_puts_tag_in_prompt_and_judges_untagged_output():
    gen, calls = fixed(["2 + 3 = 5.\nThe answer is 5.", "answer = 6 * 7"])
    r = evaluate(object(), PROBLEMS[:2], strategy="cot", tokenizer=object(), generate_fn=gen)
    assert calls[0][0][0].endswith("Solution: [cot]:")
    assert (
        r.correct == 1
        and r.per_strategy == {"cot": r.per_strategy["cot"]}
        and r.per_strategy["cot"]["n"] == 2
    )


def test_all_wrong_and_empty_inputs():
    r = score(PROBLEMS[:2], ["[cot]: no idea", ""])
    assert r.correct == 0 and r.accuracy == 0.0 and r.ci95[0] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        score(PROBLEMS[:2], ["one response"])
    with pytest.raises(ValueError, match="eval.strategy"):
        evaluate(object(), PROBLEMS, strategy="tot", tokenizer=object())


def test_write_eval_files(tmp_path):
    gen, _ = fixed(RESPONSES)
    r = evaluate(object(), PROBLEMS, tokenizer=object(), generate_fn=gen)
    paths = write_eval(r, tmp_path / "eval", "dev")
    summary = json.loads((tmp_path / "eval" / "dev.json").read_text())
    assert summary["split"] == "dev" and summary["correct"] == 3 and summary["n"] == 6
    assert "predictions" not in summary and summary["per_strategy"]["pot"]["n"] == 2
    rows = [json.loads(line) for line in paths["predictions"].read_text().splitlines()]
    assert [row["id"] for row in rows] == [p.id for p in PROBLEMS]
    md = paths["markdown"].read_text()
    assert "Accuracy 50.0%" in md and "| pot | 2 | 1 | 50.0% |" in md
    assert "\n| a | cot | 5 | 5 | ✓ |" in md


def test_evaluate_tiny_model_dir_end_to_end(tiny_model_dir, tmp_path):
    """Real generation path: loads the directory, generates, judges; a random model scores ~0."""
    r = evaluate(tiny_model_dir, PROBLEMS[:3], batch_size=2, max_new_tokens=8)
    assert r.n == 3 and len(r.predictions) == 3 and r.meta["decoding"] == "single-pass"
    assert all(isinstance(p["raw"], str) for p in r.predictions)
