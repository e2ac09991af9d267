"""Quantized accuracy: the packaged model, through its runtime, with its packaged prompt template, judged
by the same parser/judge as training and eval (PoT through the sandbox), with n and a Wilson 95 % CI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edge_distill
from edge_distill.answers import gsm8k_gold, normalize_number
from edge_distill.errors import DataError
from edge_distill.types import Problem, Strategy

log = logging.getLogger(__name__)

BUILTIN_TEST = Path(edge_distill.__file__).parent / "assets" / "gsm8k" / "test.jsonl"


@dataclass(frozen=True)
class AccuracyResult:
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    source_accuracy: float | None  # the unquantized student's, from the manifest
    source_n: int | None
    by_strategy: dict[str, dict[str, int]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drop(self) -> float | None:
        """Accuracy lost by quantization/export (positive = worse than the source model)."""
        return None if self.source_accuracy is None else self.source_accuracy - self.accuracy

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n, "correct": self.correct, "accuracy": self.accuracy, "ci95": [self.ci_low, self.ci_high],
            "source_accuracy": self.source_accuracy, "source_n": self.source_n, "drop": self.drop,
            "by_strategy": self.by_strategy,
        }  # fmt: skip


def load_eval_problems(path: str | Path | None = None, limit: int | None = None) -> list[Problem]:
    """GSM8K-style JSONL (`question`, `answer` with '#### N' or a plain number); default: the builtin test slice.

    The first `limit` lines are taken (a fixed, reproducible slice).
    """
    path = Path(path) if path is not None else BUILTIN_TEST
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                raw = str(row["answer"])
                gold = gsm8k_gold(raw) if "####" in raw else normalize_number(raw)
                problems.append(Problem(str(row.get("id", f"{path.stem}-{i}")), row["question"], gold or raw))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{i}: expected a JSON object with question and answer ({e})") from e
    return problems


def score(
    completions: list[str],
    problems: list[Problem],
    *,
    strategy: Strategy | None = None,
    source_accuracy: tuple[float | None, int | None] = (None, None),
) -> AccuracyResult:
    """Judge completions (text after the prompt) against gold answers. Pure apart from the PoT sandbox."""
    from edge_distill.stats import wilson_ci

    from edge_distill.strategies import judge_many, parse_response

    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completions for {len(problems)} problems")
    chosen = [parse_response(t, strategy=strategy).strategy or Strategy.COT for t in completions]
    verdicts = judge_many(list(zip(chosen, completions, strict=True)), [p.answer for p in problems])
    by_strategy: dict[str, dict[str, int]] = {}
    predictions = []
    for p, s, text, (pred, ok) in zip(problems, chosen, completions, verdicts, strict=True):
        cell = by_strategy.setdefault(s.value, {"n": 0, "correct": 0})
        cell["n"] += 1
        cell["correct"] += int(ok)
        predictions.append(
            {"id": p.id, "gold": p.answer, "strategy": s.value, "pred": pred, "correct": ok, "raw": text}
        )
    n, k = len(problems), sum(ok for _, ok in verdicts)
    lo, hi = wilson_ci(k, n) if n else (0.0, 1.0)
    return AccuracyResult(n, k, k / n if n else 0.0, lo, hi, *source_accuracy, by_strategy, predictions)


def run_accuracy(
    package: Any,
    threads: int,
    problems: list[Problem],
    *,
    strategy: Strategy | None = None,
    max_new_tokens: int = 320,
) -> AccuracyResult:
    """Generate greedily with the package's runtime and template, then `score`."""
    from device_profiles.worker import generate

    prompts = [package.prompt(p.question, strategy.value if strategy else None) for p in problems]
    log.info("accuracy: %d problems through %s (%d threads)", len(prompts), package.runtime, threads)
    texts = generate(package.runtime, package.model_path, threads, prompts, max_new_tokens=max_new_tokens)
    return score(texts, problems, strategy=strategy, source_accuracy=package.source_accuracy)
