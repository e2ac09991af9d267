"""The export and bench stages of `edge-distill run`: config -> plain arguments for exporters/device_profiles.

Kept out of pipeline.py so that module reads top to bottom; neither exporters nor device_profiles import
training code, and this glue imports them only when the stage runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_distill.config import Config
from edge_distill.rundir import RunDir


def decoding_for(cfg: Config) -> dict[str, Any]:
    """How the run's student decodes (its objective's description), for the package's prompt_template.json."""
    from edge_distill.objectives.build import objective

    return objective(cfg.train.objective).decoding(cfg.train)


def export_run(cfg: Config, run: RunDir, model_dir: Path) -> dict[str, Any]:
    from exporters import export_targets, run_metadata

    packages = export_targets(
        model_dir,
        run.path / "export",
        [t.model_dump() for t in cfg.export.targets],
        **run_metadata(run.path),
        decoding=decoding_for(cfg),
        strategy=cfg.eval.strategy,  # the package prompts the way the run evaluated its student
        parity_prompts=cfg.export.parity_prompts,
        archive=cfg.export.archive,
    )
    return {"packages": [str(p) for p in packages]}


def bench_run(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Bench every exported package on every configured profile.

    Accuracy runs on the run's dev split, the same problems the source model's manifest accuracy came
    from, so the "accuracy drop" gate compares like with like.
    """
    from device_profiles import bench_packages, bench_summary
    from edge_distill.stages import load_split

    packages = run.stages().get("export", {}).get("summary", {}).get("packages", [])
    dev = load_split(run, "dev")
    reports = bench_packages(
        packages,
        list(cfg.bench.profiles),
        accuracy_limit=cfg.bench.accuracy_limit,
        problems=dev[: cfg.bench.accuracy_limit],
        repetitions=cfg.bench.repetitions,
        out_dir=run.path / "bench",
    )
    return bench_summary(reports)
