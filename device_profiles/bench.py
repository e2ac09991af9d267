"""`edge-distill bench`: package x profile -> measured/estimated figures, quantized accuracy, budget gates.

The runtime is measured once per (package, threads) and accuracy once per package, however many profiles
are gated, because only the host can be measured here; other profiles get estimates from that measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_profiles import gate
from device_profiles.accuracy import AccuracyResult, load_eval_problems, run_accuracy
from device_profiles.bandwidth import HostHardware, host_hardware
from device_profiles.estimate import figures_for, runs_on
from device_profiles.loader import DeviceProfile, load_profile
from device_profiles.package import Package, read_package
from device_profiles.report import BenchReport, write_outputs
from device_profiles.worker import RuntimeMeasurement, measure
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Strategy

__all__ = ["BenchReport", "bench_package", "bench_packages", "bench_summary"]

log = logging.getLogger(__name__)


@dataclass
class _Cache:
    """Measurements shared between the profiles of one bench call."""

    measurements: dict[tuple[str, int], RuntimeMeasurement] = field(default_factory=dict)
    accuracy: dict[str, AccuracyResult | None] = field(default_factory=dict)
    hardware: dict[int, HostHardware] = field(default_factory=dict)


def _problems(problems: str | Path | list[Problem] | None, limit: int) -> list[Problem]:
    if isinstance(problems, list):
        return problems[:limit]
    return load_eval_problems(problems, limit=limit) if limit > 0 else []


def _bench_one(
    pkg: Package,
    profile: DeviceProfile,
    *,
    problems: list[Problem],
    timing_question: str,
    repetitions: int,
    new_tokens: int,
    on_target: bool | None,
    host_threads: int,
    strategy: Strategy | None,
    cache: _Cache,
    source_correct: Mapping[str, bool] | None = None,
    max_new_tokens: int = 320,
    judging: Judging = DEFAULT_JUDGING,
) -> BenchReport:
    on_target = runs_on(profile) if on_target is None else on_target
    # On the device: the profile's threads. Estimating: this host as its `host` profile says, scaled by ratios.
    threads = profile.resolved_threads() if on_target else host_threads
    # Re-measured once per bench call, next to the runtime measurement it is compared with: a figure cached
    # from a busier moment made decode look faster than its own roofline.
    if threads not in cache.hardware:
        cache.hardware[threads] = host_hardware(threads, refresh=True)
    host = cache.hardware[threads]
    key = (str(pkg.path), threads)
    if key not in cache.measurements:
        log.info("measuring %s with %s, %d threads", pkg.name, pkg.runtime, threads)
        cache.measurements[key] = measure(
            pkg.runtime, pkg.model_path, threads, pkg.prompt(timing_question), new_tokens=new_tokens,
            repetitions=repetitions,
        )  # fmt: skip
    m = cache.measurements[key]
    if str(pkg.path) not in cache.accuracy:
        cache.accuracy[str(pkg.path)] = (
            run_accuracy(
                pkg,
                threads,
                problems,
                strategy=strategy,
                source_correct=source_correct,
                max_new_tokens=max_new_tokens,
                judging=judging,
            )  # fmt: skip
            if problems
            else None
        )
    acc = cache.accuracy[str(pkg.path)]
    fig = figures_for(
        profile, m, host, package_bytes=pkg.size_bytes, weight_bytes=pkg.weights_bytes, on_target=on_target
    )
    lines = gate.evaluate(profile.budget, fig, acc)
    report = BenchReport(
        str(pkg.path), pkg.name, pkg.format, str(pkg.manifest.get("quant", "")), profile.name, profile.source_file,
        profile.format, profile.budget, pkg.weights_bytes, m, host, fig, acc, lines,
        quantization=pkg.manifest.get("quantization"),
    )  # fmt: skip
    log.info("%s on %s: %s (%s)", pkg.name, profile.name, "pass" if report.passed else "FAIL", fig.basis)
    return report


def bench_packages(
    package_dirs: list[str | Path],
    profiles: list[str | Path | DeviceProfile],
    *,
    accuracy_limit: int = 50,
    problems: str | Path | list[Problem] | None = None,
    repetitions: int = 3,
    new_tokens: int = 64,
    out_dir: str | Path | None = None,
    on_target: bool | None = None,
    strategy: Strategy | None = None,
    extra_profile_dirs: tuple[str | Path, ...] = (),
    public_key: str | Path | None = None,
    source_correct: Mapping[str, bool] | None = None,
    accuracy_max_new_tokens: int = 320,
    judging: Judging = DEFAULT_JUDGING,
) -> list[BenchReport]:
    """Bench every package on every profile; write bench.{md,json,png} into `out_dir` when given.

    `problems`: eval JSONL (GSM8K format) or a list of Problem; default the builtin GSM8K test slice, first
    `accuracy_limit` problems (0 skips the accuracy stage). `on_target`: None = detect from the profile.
    `public_key`: refuse any package without a valid manifest.sig by this ed25519 key.
    `source_correct`: {problem id: correct} of the unquantized model on these problems with the same
    decoding (the run's eval predictions); the accuracy drop is computed only from it.
    `accuracy_max_new_tokens`: the decoding budget of the accuracy pass (the source eval's, to compare).
    `judging`: tolerance and PoT sandbox mode of the accuracy pass (the source run's, to compare).
    Raises EdgeDistillError subclasses (unknown profile, bad profile file, broken package, runtime failure).
    """
    loaded = [p if isinstance(p, DeviceProfile) else load_profile(p, extra_profile_dirs) for p in profiles]
    # fail on a broken (or, with a public key, unsigned) package before any measurement
    pkgs = [read_package(d, public_key=public_key) for d in package_dirs]
    eval_problems = _problems(problems, accuracy_limit)
    timing_question = (eval_problems or load_eval_problems(None, limit=1))[0].question
    # A user `host` profile (e.g. threads: 1 on a shared machine) decides how this host is measured.
    host_threads = load_profile("host", extra_profile_dirs).resolved_threads()
    cache = _Cache()
    reports = [
        _bench_one(
            pkg,
            prof,
            problems=eval_problems,
            timing_question=timing_question,
            repetitions=repetitions,
            new_tokens=new_tokens,
            on_target=on_target,
            host_threads=host_threads,
            strategy=strategy,
            cache=cache,
            source_correct=source_correct,
            max_new_tokens=accuracy_max_new_tokens,
            judging=judging,
        )  # fmt: skip
        for pkg in pkgs
        for prof in loaded
    ]
    if out_dir is not None:
        write_outputs(reports, Path(out_dir))
        _write_predictions(cache, Path(out_dir))
    return reports


def bench_package(
    package_dir: str | Path,
    profile: str | Path | DeviceProfile,
    **kwargs: Any,
) -> BenchReport:
    """One package on one profile; keyword arguments as `bench_packages`."""
    return bench_packages([package_dir], [profile], **kwargs)[0]


def _write_predictions(cache: _Cache, out_dir: Path) -> None:
    from edge_distill.io import write_jsonl

    for pkg_path, acc in cache.accuracy.items():
        if acc is not None:
            write_jsonl(out_dir / f"{Path(pkg_path).name}.predictions.jsonl", acc.predictions)


def bench_summary(reports: list[BenchReport]) -> dict[str, Any]:
    """What the pipeline records for its bench stage (`edge_distill.gates` reads `all_passed`)."""
    return {
        "all_passed": all(r.passed for r in reports),
        "reports": [
            {
                "package": r.package_name,
                "profile": r.profile,
                "basis": r.figures.basis,
                "passed": r.passed,
                "failed": [g.name for g in r.gates if g.status == gate.FAIL],
            }  # fmt: skip
            for r in reports
        ],
    }
