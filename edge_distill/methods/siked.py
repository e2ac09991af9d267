"""SIKeD: self-guided iterative distillation over strategies (docs/methods.md, "SIKeD").

iter_0 trains on the teacher data (or adopts the model a previous method produced). Each later
iteration merges the previous student, samples it n times per training question (free strategy
choice), keeps its correct samples, mixes them with the teacher data by the rule, selects one sample
per question by strategy priority, trains a fresh LoRA (or full FT) from the merged checkpoint and
evaluates on the *dev* split. The best iteration on dev is the result; the test split is never read.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from edge_distill.config import SikedConfig
from edge_distill.io import make_dirs, write_json
from edge_distill.methods import (
    MethodInputs,
    MethodResult,
    SamplerFactory,
    Stages,
    adopt_eval,
    best_index,
    cached_samples,
    dev_record,
    evaluated,
    read_record,
    should_stop,
    trained_model,
)
from edge_distill.methods.mixing import alpha, build_iteration_data, composition
from edge_distill.methods.sampling import SamplingParams, sample_student
from edge_distill.rundir import from_stored, to_stored
from edge_distill.types import Problem, Sample

log = logging.getLogger(__name__)


def sampling_params(params: SikedConfig, seed: int) -> SamplingParams:
    """The student-sampling settings of one iteration (`seed` already offset by the iteration)."""
    return SamplingParams(
        n=params.samples_per_question,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
        seed=seed,
    )


def run_siked(out_dir: Path, inputs: MethodInputs, params: SikedConfig) -> MethodResult:
    """Run (or resume) SIKeD iterations under `out_dir/iter_k/`, from `inputs` (its `start_model`, when
    given, becomes iteration 0)."""
    train_problems, dev = list(inputs.train_problems), list(inputs.dev_problems)
    teacher = list(inputs.teacher_samples)
    stages, start_model = inputs.stages, inputs.start_model
    records: list[dict[str, Any]] = []
    step_dirs: list[Path] = []
    model: Path | None = None
    for k in range(params.iterations):
        step = out_dir / f"iter_{k}"
        step_dirs.append(step)
        done = read_record(step)
        if done is not None:
            log.info("SIKeD iteration %d: finished earlier (dev %.3f), skipped", k, done["dev"]["accuracy"])
            records.append(done)
            model = from_stored(done["model"], out_dir)
        else:
            make_dirs(step)
            t0 = time.perf_counter()
            if k == 0:
                record, model = _iteration_zero(step, teacher, inputs.base_model, start_model, stages)
                if start_model is not None:
                    adopt_eval(step, inputs.start_summary)
            else:
                assert model is not None
                record, model = _iteration(
                    step,
                    k,
                    model,
                    train_problems,
                    teacher,
                    stages,
                    inputs.sampler_factory,
                    params,
                    inputs.seed,
                )
            record["dev"] = dev_record(evaluated(stages, model, dev, step / "eval"))
            record.update(
                iteration=k, model=to_stored(model, out_dir), wall_s=round(time.perf_counter() - t0, 1)
            )
            write_json(step / "record.json", record)
            records.append(record)
            log.info(
                "SIKeD iteration %d: dev accuracy %.3f, alpha %s",
                k,
                record["dev"]["accuracy"],
                record["alpha"],
            )
        if should_stop([r["dev"]["accuracy"] for r in records], params.patience):
            log.info(
                "SIKeD: dev accuracy stopped improving (patience %d), stopping after iteration %d",
                params.patience,
                k,
            )
            break
    best = best_index(records)
    return MethodResult(
        from_stored(records[best]["model"], out_dir),
        best,
        records,
        train_problems,
        teacher,
        step_dirs,
        "iter",
    )


def _iteration_zero(
    step: Path, teacher: list[Sample], base_model: Path, start_model: Path | None, stages: Stages
) -> tuple[dict[str, Any], Path]:
    record: dict[str, Any] = {
        "rule": "teacher",
        "train_size": len(teacher),
        "alpha": alpha(teacher),
        "composition": composition(teacher),
        "student_strategy_mix": {},
    }
    if start_model is not None:
        record["adopted"] = to_stored(start_model, step.parent)
        return record, Path(start_model)
    return record, trained_model(stages, teacher, base_model, step / "train")


def _iteration(
    step: Path,
    k: int,
    prev_model: Path,
    train_problems: list[Problem],
    teacher: list[Sample],
    stages: Stages,
    sampler_factory: SamplerFactory,
    params: SikedConfig,
    seed: int,
) -> tuple[dict[str, Any], Path]:
    start = stages.full_model(prev_model, step)
    questions = train_problems[: params.limit_questions] if params.limit_questions else train_problems

    def draw() -> list[Sample]:
        sampler = sampler_factory(start)
        samples, stats = sample_student(
            sampler, questions, sampling_params(params, seed + k), judging=stages.judging
        )
        write_json(step / "sampler.json", stats.to_dict())
        return samples

    # the "teacher" control rule uses no student samples: none are drawn
    student_raw = [] if params.mixing == "teacher" else cached_samples(step / "student_samples.jsonl", draw)
    data, record = build_iteration_data(
        teacher, student_raw, rule=params.mixing, priority=tuple(params.priority)
    )
    cached_samples(step / "train.jsonl", lambda: data)
    sampler_file = step / "sampler.json"
    record["sampler"] = json.loads(sampler_file.read_text(encoding="utf-8")) if sampler_file.is_file() else {}
    record["start_model"] = to_stored(start, step.parent)
    record["questions_sampled"] = len(questions)
    if not data:
        # mixing="standard" and the student solved nothing: there is nothing to train on, keep the model
        log.warning(
            "SIKeD iteration %d: empty training set (rule %s); the previous model carries over",
            k,
            params.mixing,
        )
        record["skipped_training"] = "empty training set"
        return record, prev_model
    return record, trained_model(stages, data, start, step / "train")
