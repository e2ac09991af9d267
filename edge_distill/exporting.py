"""The export and bench stages of `edge-distill run`: config -> plain arguments for exporters/device_profiles.

Kept out of pipeline.py so that module reads top to bottom; neither exporters nor device_profiles import
training code, and this glue imports them only when the stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.config import Config
from edge_distill.rundir import RunDir
from edge_distill.types import Judging


def decoding_for(cfg: Config) -> dict[str, Any]:
    """How the run's student decodes (its objective's description), for the package's prompt_template.json."""
    from edge_distill.objectives.build import objective

    return objective(cfg.train.objective).decoding(cfg.train)


def export_run(cfg: Config, run: RunDir, model_dir: Path) -> dict[str, Any]:
    from exporters import export_targets, run_metadata

    meta = run_metadata(run.path)
    meta["source_run"] = "../.."  # relative to the package (export/<format>-<quant>/): the run travels whole
    packages = export_targets(
        model_dir,
        run.path / "export",
        [t.model_dump() for t in cfg.export.targets],
        **meta,
        decoding=decoding_for(cfg),
        strategy=cfg.eval.strategy,  # the package prompts the way the run evaluated its student
        parity_prompts=cfg.export.parity_prompts,
        archive=cfg.export.archive,
        auto_min_top1=cfg.export.auto.min_top1_agreement,
        auto_max_nll_ratio=cfg.export.auto.max_nll_ratio,
    )
    return {"packages": [str(p) for p in packages]}


def bench_run(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Bench every exported package on every configured profile.

    Accuracy runs on the first `bench.accuracy_limit` problems of `bench.split` (dev unless the user names
    test), and the source model's accuracy is read from its eval predictions on exactly those problems
    (same decoder), so the "accuracy drop" gate compares like with like.
    """
    from device_profiles import bench_packages, bench_summary
    from edge_distill.types import Strategy

    packages = [run.resolve(p) for p in run.stages().get("export", {}).get("summary", {}).get("packages", [])]
    problems, source = source_problems(run, cfg.bench.split)
    reports = bench_packages(
        packages,
        list(cfg.bench.profiles),
        accuracy_limit=cfg.bench.accuracy_limit,
        problems=problems[: cfg.bench.accuracy_limit],
        repetitions=cfg.bench.repetitions,
        out_dir=run.path / "bench",
        source_correct=source,
        # the same decoding as the source's eval: token budget and (forced or free) strategy
        accuracy_max_new_tokens=cfg.eval.max_new_tokens,
        strategy=None if cfg.eval.strategy == "auto" else Strategy(cfg.eval.strategy),
        judging=Judging.of(cfg),  # and the same tolerance and sandbox mode
    )
    return bench_summary(reports)


def source_problems(run_path: RunDir | Path, split: str) -> tuple[list[Any], dict[str, bool] | None]:
    """A run's `split` problems (dev: data/dev.jsonl; test: only when named) and its student's
    {id: correct} on them from eval/{split}_predictions.jsonl (None when that eval was not run)."""
    from edge_distill.eval import correct_by_id
    from edge_distill.io import read_jsonl
    from edge_distill.types import Problem

    path = run_path.path if isinstance(run_path, RunDir) else Path(run_path)
    preds = path / "eval" / f"{split}_predictions.jsonl"
    source = correct_by_id(read_jsonl(preds)) if preds.is_file() else None
    if split == "dev":
        from edge_distill.errors import StageError

        if not (path / "data" / "dev.jsonl").is_file():
            raise StageError(f"{path / 'data' / 'dev.jsonl'} is missing: run the data stage first")
        return [Problem.from_dict(r) for r in read_jsonl(path / "data" / "dev.jsonl")], source
    cfg = run_path.cfg if isinstance(run_path, RunDir) else RunDir.open(path).cfg
    from edge_distill.stages import load_test

    return load_test(cfg.data), source


@dataclass(frozen=True)
class BenchInputs:
    """What standalone `edge-distill bench` measures accuracy on, and how: the problems, the source model's
    {id: correct} on them (None: no source comparison), the decoding budget and strategy, and the judging."""

    problems: list[Any]
    source_correct: dict[str, bool] | None
    max_new_tokens: int
    strategy: str
    judging: Judging


def bench_problems(
    package_dirs: list[str | Path],
    problems: str | None,
    split: str | None,
    limit: int,
    *,
    max_new_tokens: int | None = None,
    strategy: str | None = None,
    judging: Judging | None = None,
) -> BenchInputs:
    """The problems standalone `edge-distill bench` measures accuracy on, and the source model's
    {id: correct} on them when known (torch-free).

    `--problems FILE`: that file (any published layout, `data.load_problems`), no source comparison.
    Otherwise the packages' source run (manifest `source_run`, relative to the package) when it is here: its
    `split` (default dev) and its eval predictions, the same problems and decoder. `--split test` without the
    run: the builtin GSM8K test slice. Never test unless named. Decoding budget, strategy and judging
    (tolerance, sandbox mode) are the source run's when it is here, else 320 / auto / the defaults; the
    arguments (the CLI's flags) override them, and a source comparison is then dropped when they differ
    from the run's (the source was not decoded or judged that way)."""
    from device_profiles.accuracy import load_eval_problems
    from edge_distill.errors import ConfigError

    runs = {_source_run(Path(d)) for d in package_dirs}
    run = RunDir.open(runs.pop()) if len(runs) == 1 and None not in runs else None  # type: ignore[arg-type]
    own = (
        (run.cfg.eval.max_new_tokens, run.cfg.eval.strategy, Judging.of(run.cfg))
        if run is not None
        else (320, "auto", Judging())
    )
    chosen = (max_new_tokens or own[0], strategy or own[1], judging or own[2])
    if limit <= 0:
        return BenchInputs([], None, *chosen)
    if problems is not None:
        if split is not None:
            raise ConfigError("bench: give --problems FILE or --split, not both")
        return BenchInputs(load_eval_problems(problems, limit=limit), None, *chosen)
    if run is not None:
        found, source = source_problems(run, split or "dev")
        return BenchInputs(found[:limit], source if chosen == own else None, *chosen)
    if split == "test":
        return BenchInputs(load_eval_problems(None, limit=limit), None, *chosen)
    raise ConfigError(
        "bench: the packages' source run directory is not here (or they come from different runs), so their "
        "dev problems are unknown. Pass --problems FILE (accuracy without a source comparison), or "
        "--split test to measure on the builtin GSM8K test slice"
    )


def _source_run(pkg: Path) -> Path | None:
    """The run directory a package was exported from, when it is here: manifest `source_run` relative to
    the package (or, for packages exported before that, as written)."""
    import json

    src = json.loads((pkg / "manifest.json").read_text(encoding="utf-8")).get("source_run")
    for run in (pkg / src, Path(src)) if src else ():
        if (run / "data" / "dev.jsonl").is_file():
            return run.resolve()
    return None
