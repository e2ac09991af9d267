"""Judge responses against gold answers and summarize: the one scorer of eval and the device bench. Torch-free.

The parser and judge are the ones used for training data (`strategies`; PoT through the sandbox), so an
accuracy from `edge-distill run` and one from `edge-distill bench` on the same problems are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Strategy

NO_TAG = "none"  # per-strategy key for "auto" outputs that start with no strategy tag


@dataclass
class EvalResult:
    """Accuracy with a Wilson 95 % interval, overall and per strategy the student used (or was forced to)."""

    accuracy: float
    n: int
    correct: int
    ci95: tuple[float, float]
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-problem predictions (what stages.json and reports carry)."""
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "correct": self.correct,
            "ci95": list(self.ci95),
            "per_strategy": self.per_strategy,
            **self.meta,
        }


def score(
    problems: Sequence[Problem],
    responses: Sequence[str],
    strategy: str = "auto",
    *,
    judging: Judging = DEFAULT_JUDGING,
) -> EvalResult:
    """Judge one response per problem and aggregate. Pure apart from the PoT sandbox.

    `strategy` "auto": each response's own tag decides (untagged: judged as prose, counted under "none");
    cot|l2m|pot: the tag was forced in the prompt, so the response is judged as that strategy.
    `judging`: tolerance and sandbox mode (a run's: `Judging.of(cfg)`)."""
    from edge_distill.strategies import judge_verdicts, parse_response

    if len(problems) != len(responses):
        raise ValueError(f"score: {len(problems)} problems but {len(responses)} responses")
    forced = None if strategy == "auto" else Strategy(strategy)
    chosen: list[Strategy | None] = []
    for text in responses:
        chosen.append(forced if forced is not None else parse_response(text).strategy)
    # An untagged "auto" output is judged as prose (its last "The answer is" line), never executed.
    items = [(s if s is not None else Strategy.COT, text) for s, text in zip(chosen, responses, strict=True)]
    judged = judge_verdicts(items, [p.answer for p in problems], judging=judging)
    predictions: list[dict[str, Any]] = []
    for p, text, s, v in zip(problems, responses, chosen, judged, strict=True):
        key = s.value if s is not None else NO_TAG
        pred, ok = v.pred, v.correct
        predictions.append(
            {
                "id": p.id,
                "question": p.question,
                "gold": p.answer,
                "raw": text,
                "strategy": key,
                "pred": pred,
                "correct": ok,
                "reason": v.reason,  # why pred is empty: unparseable, timeout, no_answer, ZeroDivisionError...
            }
        )
    return summarize(predictions)


def summarize(predictions: Sequence[dict[str, Any]]) -> EvalResult:
    """Accuracy, Wilson CI and per-strategy counts of judged prediction rows (`score`'s, or ones read back
    from a predictions file), so a recorded eval and a fresh one are summarized by the same code."""
    from edge_distill.stats import wilson_ci

    buckets: dict[str, list[bool]] = {}
    for r in predictions:
        buckets.setdefault(str(r["strategy"]), []).append(bool(r["correct"]))
    n = len(predictions)
    correct = sum(1 for r in predictions if r["correct"])
    per_strategy = {
        key: {
            "n": len(v),
            "correct": sum(v),
            "accuracy": sum(v) / len(v),
            "ci95": list(wilson_ci(sum(v), len(v))),
        }
        for key, v in sorted(buckets.items())
    }
    return EvalResult(
        accuracy=correct / n if n else 0.0,
        n=n,
        correct=correct,
        ci95=tuple(wilson_ci(correct, n)),
        per_strategy=per_strategy,
        predictions=list(predictions),
    )
