"""Quantized accuracy: the packaged model, through its runtime, with its packaged prompt template, judged
by the same parser/judge as training and eval (PoT through the sandbox), with n and a Wilson 95 % CI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Strategy

_PROGRESS_CHUNK = 16  # prompts per generation process in the accuracy pass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyResult:
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    # the unquantized student's accuracy on the SAME problems (its eval predictions), None when not measured
    source_accuracy: float | None
    source_n: int | None
    # as eval's summary: strategy -> {"n", "correct", "accuracy", "ci95"} ("none": untagged outputs)
    per_strategy: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drop(self) -> float | None:
        """Accuracy lost by quantization/export (positive = worse than the source model)."""
        return None if self.source_accuracy is None else self.source_accuracy - self.accuracy

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n, "correct": self.correct, "accuracy": self.accuracy, "ci95": [self.ci_low, self.ci_high],
            "source_accuracy": self.source_accuracy, "source_n": self.source_n, "drop": self.drop,
            "per_strategy": self.per_strategy,
        }  # fmt: skip


def load_eval_problems(path: str | Path | None = None, limit: int | None = None) -> list[Problem]:
    """The problems the bench measures accuracy on: a GSM8K-style file (`question`, `answer` with '#### N'
    or a plain number), default the builtin test slice; the first `limit` (a fixed, reproducible slice).
    Read by `data.load_problems`, the loader of the pipeline, so ids and gold answers are the same."""
    from edge_distill.data import load_problems

    problems = load_problems(
        path if path is not None else "builtin:gsm8k-sample", split="test", socratic=None
    )
    return list(problems[:limit] if limit is not None else problems)


def score(
    completions: list[str],
    problems: list[Problem],
    *,
    strategy: Strategy | None = None,
    source_accuracy: tuple[float | None, int | None] = (None, None),
    judging: Judging = DEFAULT_JUDGING,
) -> AccuracyResult:
    """Judge completions (text after the prompt) with eval's scorer (`edge_distill.scoring.score`) and
    `judging` (the source run's tolerance and sandbox mode)."""
    from edge_distill.scoring import score as judge

    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completions for {len(problems)} problems")
    r = judge(problems, completions, strategy.value if strategy else "auto", judging=judging)
    return AccuracyResult(
        r.n, r.correct, r.accuracy, *r.ci95, *source_accuracy, r.per_strategy, r.predictions
    )


def source_on(
    problems: list[Problem], source_correct: Mapping[str, bool] | None
) -> tuple[float | None, int | None]:
    """The source model's accuracy on exactly these problems, from its per-problem judgements (eval's
    predictions). None unless it was judged on every one of them: a number from other problems (the
    manifest's dev accuracy next to a test slice) is not a comparison."""
    if not source_correct or not problems or any(p.id not in source_correct for p in problems):
        return None, None
    return sum(bool(source_correct[p.id]) for p in problems) / len(problems), len(problems)


def run_accuracy(
    package: Any,
    threads: int,
    problems: list[Problem],
    *,
    strategy: Strategy | None = None,
    max_new_tokens: int = 320,
    source_correct: Mapping[str, bool] | None = None,
    judging: Judging = DEFAULT_JUDGING,
) -> AccuracyResult:
    """Generate greedily with the package's runtime, prompt template and decoding (CasCoD: two stages, as
    in eval), then `score`. `strategy` None: the one the package was exported with (its eval.strategy).
    `source_correct` ({problem id: correct} of the unquantized model on the same problems, same decoding)
    gives the accuracy drop; without it there is no source number. `judging`: the source run's tolerance
    and sandbox mode, so the package is judged as its source was."""
    strategy = strategy or package.strategy
    from device_profiles.worker import generate
    from edge_distill.console import progress
    from edge_distill.decoding import staged_decode

    def run(batch: list[str], n: int = 1, max_new_tokens: int = max_new_tokens) -> list[list[str]]:
        # chunks of prompts per worker process, so the pass shows progress (a process start each)
        texts: list[str] = []
        chunks = [batch[i : i + _PROGRESS_CHUNK] for i in range(0, len(batch), _PROGRESS_CHUNK)]
        with progress(total=len(batch), desc=f"accuracy {package.runtime}", unit="problem") as bar:
            for chunk in chunks:
                texts += generate(
                    package.runtime, package.model_path, threads, chunk, max_new_tokens=max_new_tokens
                )
                bar.update(len(chunk))
        return [[t] for t in texts]

    prompts = [package.prompt(p.question, strategy.value if strategy else None) for p in problems]
    decoding = package.decoding
    log.info("accuracy: %d problems through %s (%d threads, %d-stage decoding)", len(prompts), package.runtime,
             threads, decoding.get("stages", 1))  # fmt: skip
    texts = [outs[0] for outs in staged_decode(run, prompts, decoding, max_new_tokens=max_new_tokens)]
    return score(
        texts,
        problems,
        strategy=strategy,
        source_accuracy=source_on(problems, source_correct),
        judging=judging,
    )
