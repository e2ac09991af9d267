"""`edge-distill run`: the stages, top to bottom, in one run directory.

    data -> teach -> filter -> train -> eval -> export -> bench -> report

`methods: [siked]` / `[fdd, siked]` replace train with iterations/rounds (edge_distill.methods).
Only this module, `methods.loop` and `exporting` read the config tree; they hand each stage helper
(`edge_distill.stages`) the config section it needs, and components get plain arguments.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill import stages
from edge_distill.config import Config
from edge_distill.errors import StageError
from edge_distill.io import write_json, write_jsonl, write_text
from edge_distill.rundir import STAGE_OF_SECTION, RunDir, config_digest
from edge_distill.types import Judging

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- data
def stage_data(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.data import restrict_dev, split_dev

    d = cfg.data
    problems = stages.load_problems(d, "train")
    train, dev = split_dev(problems, d.dev_size, d.seed)
    if d.limit_train is not None:
        train = train[: d.limit_train]
    summary: dict[str, Any] = {
        "train": len(train),
        "dev": len(dev),
        "source": d.train,
        "layout": problems.layout,
    }
    if problems.skipped:  # rows of the published file whose gold is not a number, ... (data.load_problems)
        summary["skipped"] = dict(problems.skipped_reasons)
    if d.dev_max_calc_steps is not None:
        dev = restrict_dev(dev, d.dev_max_calc_steps)
        summary.update(dev=len(dev), dev_carved=d.dev_size, dev_max_calc_steps=d.dev_max_calc_steps)
    out = run.stage_dir("data")
    write_jsonl(out / "train.jsonl", (p.to_dict() for p in train))
    write_jsonl(out / "dev.jsonl", (p.to_dict() for p in dev))
    return summary


# ---------------------------------------------------------------------------------------------- teach
def stage_teach(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.teach import teach

    problems = stages.load_split(run, "train")
    out = run.stage_dir("teach")
    if stages.records_topk(cfg.train.kd):  # offline KD: the teacher's top-k log-probs, beside the samples
        samples, stats = stages.teach_with_topk(
            cfg.train.kd, cfg.teacher, cfg.student.model, problems, out, Judging.of(cfg)
        )
        write_jsonl(out / "samples.jsonl", (s.to_dict() for s in samples))
        write_json(out / "stats.json", stats)
        return stats
    teacher = stages.build_teacher(cfg.teacher)
    try:
        samples, stats = teach(
            teacher,
            problems,
            cfg.teacher.strategies,
            cfg.teacher.samples_per_strategy,
            judging=Judging.of(cfg),
        )
        if hasattr(teacher, "report"):
            stats["teacher_calls"] = teacher.report()
    finally:
        if hasattr(teacher, "close"):
            teacher.close()
    write_jsonl(out / "samples.jsonl", (s.to_dict() for s in samples))
    write_json(out / "stats.json", stats)
    return stats


def stage_filter(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.teach import filter_samples

    run.require("teach/samples.jsonl")
    samples = stages.load_samples(run.path / "teach" / "samples.jsonl")
    kept = filter_samples(samples, keep=cfg.student.keep)
    out = run.stage_dir("filter")
    write_jsonl(out / "train.jsonl", (s.to_dict() for s in kept))
    by_strategy: dict[str, int] = {}
    for s in kept:
        by_strategy[s.strategy.value] = by_strategy.get(s.strategy.value, 0) + 1
    stats = {"teacher_samples": len(samples), "kept": len(kept), "kept_by_strategy": by_strategy}
    write_json(out / "stats.json", stats)
    return stats


# ---------------------------------------------------------------------------------------------- train / eval
def stage_train(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.models import resolve_model
    from edge_distill.objectives.build import objective

    run.require("filter/train.jsonl")
    samples = stages.load_samples(run.path / "filter" / "train.jsonl")
    if not samples:
        raise StageError(
            "no correct teacher samples survived filtering: nothing to train on (see teach/stats.json)"
        )
    base = resolve_model(cfg.student.model)
    out = run.stage_dir("train")
    pairs = None
    if objective(cfg.train.objective).uses_live_teacher:  # EDIT: AHP/CCP when the teacher can be re-prompted
        pairs = stages.live_teacher_pairs(
            cfg.teacher, run.path / "teach" / "samples.jsonl", out, Judging.of(cfg)
        )
    step1 = stages.reused_sft(cfg.train, cfg.student.model, run)  # EDIT only (Config checks)
    topk = run.path / stages.TOPK_STORE if stages.records_topk(cfg.train.kd) else None
    final = stages.train_student(
        cfg.train,
        samples,
        base,
        out,
        seed=cfg.seed,
        judging=Judging.of(cfg),
        pairs=pairs,
        step1_model=step1,
        topk=topk,
    )
    summary: dict[str, Any] = {"model": str(final), "samples": len(samples), "base": str(base)}
    if step1 is not None:
        summary["reused_sft"] = str(step1)
    # (paths inside the run are stored relative to it by run.mark_done)
    if pairs is not None:
        summary["edit_live_pairs"] = len(pairs)
    return summary


def final_model_dir(run: RunDir) -> Path:
    """The run's result: train/final, or the best iteration/round chosen on dev by the loops."""
    recorded = run.stages()
    for stage in ("methods", "train"):
        model = recorded.get(stage, {}).get("summary", {}).get("model")
        if model:
            from exporters.chat_template import check_trained_prompt

            path = run.resolve(model)
            check_trained_prompt(path)  # a run trained on an older prompt format: say so, clearly
            return path
    raise StageError(f"{run.path}: no trained model yet (run the train stage first)")


def _best_step_eval(run: RunDir) -> Path | None:
    """The dev eval the SIKeD/FDD loop already ran for its best step (the methods summary names its dir)."""
    step_eval = run.stages().get("methods", {}).get("summary", {}).get("best_eval")
    if not step_eval:
        return None
    step_eval = run.resolve(step_eval)
    return step_eval if (step_eval / "dev.json").is_file() else None


def stage_eval(cfg: Config, run: RunDir) -> dict[str, Any]:
    """The final student on dev (and test with eval.final_test), and with eval.baseline the untrained
    student on the same problems with the same decoding (`baseline_dev*`), paired against it."""
    from edge_distill.models import resolve_model

    model = final_model_dir(run)
    out = run.stage_dir("eval")
    judging = Judging.of(cfg)
    step_eval = _best_step_eval(run)
    dev = stages.load_split(run, "dev")
    if step_eval is not None:  # the loop selected this model on that very eval: reuse, don't redo it
        for f in step_eval.glob("dev*"):
            write_text(out / f.name, f.read_text(encoding="utf-8"))
        summary: dict[str, Any] = {"dev": json.loads((out / "dev.json").read_text(encoding="utf-8"))}
    else:
        summary = {
            "dev": stages.evaluate_student(cfg.eval, cfg.train, model, dev, out, "dev", judging).summary()
        }
    splits = {"dev": dev}
    if cfg.eval.final_test or cfg.eval.split == "test":
        test = stages.load_test(cfg.data)
        summary["test"] = stages.evaluate_student(
            cfg.eval, cfg.train, model, test, out, "test", judging
        ).summary()
        splits["test"] = test
    if cfg.eval.baseline:
        base = resolve_model(cfg.student.model)
        for split, problems in splits.items():
            r = stages.evaluate_student(
                cfg.eval, cfg.train, base, problems, out, f"baseline_{split}", judging
            )
            summary[f"baseline_{split}"] = r.summary()
            summary[f"vs_baseline_{split}"] = stages.paired_against(
                out / f"baseline_{split}_predictions.jsonl", out / f"{split}_predictions.jsonl"
            )
    return summary


def stage_methods(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.methods.loop import run_methods_from_config

    return run_methods_from_config(cfg, run)


# ---------------------------------------------------------------------------------------------- export / bench
def stage_export(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.exporting import export_run

    return export_run(cfg, run, final_model_dir(run))


def stage_bench(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.exporting import bench_run

    return bench_run(cfg, run)


def stage_report(cfg: Config, run: RunDir) -> dict[str, Any]:
    from edge_distill.report import write_report

    path = write_report(run)
    return {"report": str(path)}


# ---------------------------------------------------------------------------------------------- driver
def plan(cfg: Config) -> list[tuple[str, Callable[[Config, RunDir], dict[str, Any]]]]:
    steps: list[tuple[str, Callable[[Config, RunDir], dict[str, Any]]]] = [
        ("data", stage_data),
        ("teach", stage_teach),
        ("filter", stage_filter),
    ]
    if cfg.methods:
        steps.append(("methods", stage_methods))
    else:
        steps.append(("train", stage_train))
    steps.append(("eval", stage_eval))
    if cfg.export.targets:
        steps.append(("export", stage_export))
        if cfg.bench.profiles:
            steps.append(("bench", stage_bench))
    steps.append(("report", stage_report))
    return steps


def run_pipeline(
    cfg: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    until: str | None = None,
    redo: str | None = None,
) -> RunDir:
    """Run every stage not yet finished; stop after `until`; re-run `redo` even if finished."""
    run = RunDir(cfg, resume=resume or until is not None or redo is not None, overwrite=overwrite)
    try:  # the run directory is locked from RunDir() until here: one writer at a time
        # every stage that judges gets Judging.of(cfg) (answers.rel_tol, sandbox.mode) passed explicitly
        return _run_stages(cfg, run, until=until, redo=redo)
    finally:
        run.release()


def _run_stages(cfg: Config, run: RunDir, *, until: str | None, redo: str | None) -> RunDir:
    steps = plan(cfg)
    names = [n for n, _ in steps]
    for name in (until, redo):
        if name is not None and name not in names:
            raise StageError(f"stage {name!r} is not part of this run; stages: {', '.join(names)}")
    # a changed eval.*/export.*/bench.* section re-runs its stage (the trained model is kept)
    rerun = {redo} | {STAGE_OF_SECTION[s] for s in run.changed_sections}
    log.info("run %s (config %s): %s", run.path, config_digest(cfg), " -> ".join(names))
    for i, (name, fn) in enumerate(steps, 1):
        counter = f"[{i}/{len(steps)}] {name}"  # one line per stage: "[4/7] train: done in 41.2 s"
        if run.done(name) and name not in rerun and name != "report":
            log.info("%s: already finished, skipped", counter)
        else:
            log.info("%s: started", counter)
            t0 = time.perf_counter()
            summary = fn(cfg, run)
            wall = time.perf_counter() - t0
            run.mark_done(name, wall, summary)
            # whatever was built on the old outputs of this stage is out of date now
            stale = run.mark_stale([n for n in names[i:] if n != "report"], f"{name} re-ran after it")
            if stale:
                log.info("stage %s re-ran: %s marked stale (redone by the next run)", name, ", ".join(stale))
            run.metric(name, wall_s=round(wall, 2), **{k: v for k, v in summary.items() if _scalar(v)})
            log.info("%s: done in %.1f s", counter, wall)
        if name == until:
            break
    return run


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float | str | bool)
