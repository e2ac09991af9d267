"""SIKeD iterations and FDD rounds: which data each iteration/round trains on (docs/methods.md).

The loops get everything as plain arguments plus stage callables (`Stages`), so the pipeline decides
the objective (sft/cascod/edit) and the eval, and the loops decide the data. Only `loop.run_methods_from_config`
reads the config tree. Each iteration/round lives in its own `iter_k/` or `round_k/` directory; a
`record.json` there marks it finished, and every costly step inside (student samples, teacher calls,
training, dev eval) is saved atomically, so a resume redoes nothing finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.io import read_jsonl, write_json, write_jsonl
from edge_distill.rundir import from_stored, to_stored
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Sample

log = logging.getLogger(__name__)

TrainFn = Callable[[list[Sample], Path, Path], Path]
"""train_fn(samples, base_model_dir, out_dir) -> trained model dir (full model or LoRA adapter)."""
EvalFn = Callable[[Path, list[Problem], Path], Any]
"""eval_fn(model_dir, problems, out_dir) -> EvalResult (with .summary() -> dict incl. "accuracy")."""
MergeFn = Callable[[Path, Path], Path]
"""merge_fn(model_dir, work_dir) -> a full-weight model dir (a LoRA adapter merged into its base)."""


@dataclass
class Stages:
    """The pipeline's stage functions the loops call."""

    train: TrainFn
    evaluate: EvalFn
    merge: MergeFn | None = None
    # the run's tolerance and sandbox mode, for judging the student's samples and the teacher's verifications
    judging: Judging = DEFAULT_JUDGING

    def full_model(self, model_dir: Path, work_dir: Path) -> Path:
        """The merged checkpoint the next iteration starts from (SIKeD: 'merge, then a fresh LoRA')."""
        if not (Path(model_dir) / "adapter_config.json").is_file():
            return Path(model_dir)
        merged = work_dir / "merged"
        if (merged / "config.json").is_file():
            return merged
        merge = self.merge or default_merge
        return merge(Path(model_dir), merged)


def default_merge(adapter_dir: Path, out_dir: Path) -> Path:
    from edge_distill.training import merge_lora

    result = merge_lora(adapter_dir, out_dir)
    return Path(result) if result is not None else out_dir


def eval_summary(result: Any) -> dict[str, Any]:
    """EvalResult → plain dict; accepts a dict (tests) or any object with .summary()."""
    if isinstance(result, dict):
        return result
    return dict(result.summary())


def accuracy_of(summary: dict[str, Any]) -> float:
    return float(summary.get("accuracy", 0.0) or 0.0)


def per_strategy_accuracy(summary: dict[str, Any]) -> dict[str, float]:
    """Dev accuracy per chosen strategy, from the scorer's `per_strategy` block (edge_distill.scoring)."""
    return {str(s): float(v["accuracy"]) for s, v in (summary.get("per_strategy") or {}).items()}


def dev_record(summary: dict[str, Any]) -> dict[str, Any]:
    """The `dev` block of an iteration/round record: accuracy, n, per-strategy accuracy, the full summary."""
    return {
        "accuracy": accuracy_of(summary),
        "n": summary.get("n"),
        "per_strategy": per_strategy_accuracy(summary),
        "summary": summary,
    }


# ------------------------------------------------------------------ resumable steps
def cached_samples(path: Path, compute: Callable[[], list[Sample]]) -> list[Sample]:
    if path.is_file():
        log.info("resume: reusing %s", path)
        return [Sample.from_dict(r) for r in read_jsonl(path)]
    samples = compute()
    write_jsonl(path, (s.to_dict() for s in samples))
    return samples


def cached_problems(path: Path, compute: Callable[[], list[Problem]]) -> list[Problem]:
    if path.is_file():
        return [Problem.from_dict(r) for r in read_jsonl(path)]
    problems = compute()
    write_jsonl(path, (p.to_dict() for p in problems))
    return problems


def cached_rows(path: Path, compute: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    if path.is_file():
        return read_jsonl(path)
    rows = compute()
    write_jsonl(path, rows)
    return rows


def trained_model(stages: Stages, samples: list[Sample], base: Path, out_dir: Path) -> Path:
    """Train once: `out_dir/model.json` remembers the result; an unfinished training resumes inside train_fn."""
    marker = out_dir / "model.json"
    if marker.is_file():
        return from_stored(json.loads(marker.read_text(encoding="utf-8"))["model"], out_dir)
    model = Path(stages.train(samples, Path(base), out_dir))
    # relative to out_dir: a copied run directory resumes with its own model
    write_json(
        marker,
        {"model": to_stored(model, out_dir), "base": to_stored(base, out_dir), "samples": len(samples)},
    )
    return model


def evaluated(stages: Stages, model: Path, dev: list[Problem], out_dir: Path) -> dict[str, Any]:
    """Dev eval once; its summary is saved as `out_dir/dev_summary.json`."""
    path = out_dir / "dev_summary.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    summary = eval_summary(stages.evaluate(model, dev, out_dir))
    write_json(path, summary)
    return summary


def adopt_eval(step_dir: Path, summary: dict[str, Any] | None) -> None:
    """An adopted start model keeps the dev eval it already has: no second eval of the same model."""
    path = step_dir / "eval" / "dev_summary.json"
    if summary is not None and not path.is_file():
        write_json(path, summary)


def read_record(step_dir: Path) -> dict[str, Any] | None:
    path = step_dir / "record.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def best_index(records: list[dict[str, Any]]) -> int:
    """Best iteration/round on dev; ties go to the earlier (cheaper, less self-trained) one."""
    return max(range(len(records)), key=lambda i: (records[i]["dev"]["accuracy"], -i))


def should_stop(accuracies: list[float], patience: int) -> bool:
    """True when the last `patience` steps did not beat the best before them (patience 0: never stop early)."""
    if patience <= 0 or len(accuracies) <= patience:
        return False
    best_before = max(accuracies[:-patience])
    return max(accuracies[-patience:]) <= best_before
