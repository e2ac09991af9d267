"""The Python API: what the `edge-distill` commands do, as functions with typed results.

    import edge_distill as ed

    result = ed.run("my.yaml", name="exp1", train={"lr": 1e-4})      # the pipeline -> RunResult
    report = ed.evaluate([result.path], ["svamp:SVAMP.json"])       # any models x problem sets -> EvalReport
    print(report.table())
    packages = ed.export(result.path, ["gguf:q4_k_m"])              # -> [ExportedPackage]
    bench = ed.bench(packages[0].path, "raspberry-pi-5")            # -> BenchResult
    problems = ed.load_problems("asdiv:ASDiv.xml")                  # -> LoadedProblems

The CLI is a thin layer over these five functions (`edge_distill/cli.py` parses flags, calls one of them and
prints its result), so the two cannot drift. Every error the user can fix is an `EdgeDistillError`
subclass (`ConfigError`, `DataError`, `StageError`, `ExportError`, ...) with a message naming the file, key
or flag; nothing here imports torch until a call needs it (importing `edge_distill` stays cheap).

Judging (answer tolerance and PoT sandbox mode) is explicit: a run's models and packages are judged with the
run's `answers.rel_tol` and `sandbox.mode`, `rel_tol=` / `sandbox_mode=` override it; nothing is process-wide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_distill.errors import ConfigError

if TYPE_CHECKING:
    from device_profiles.report import BenchReport
    from edge_distill.compare import EvalReport
    from edge_distill.config import Config
    from edge_distill.data import LoadedProblems
    from edge_distill.types import Judging

__all__ = [
    "BenchResult",
    "ExportedPackage",
    "RunResult",
    "bench",
    "evaluate",
    "export",
    "load_problems",
    "run",
]

PathLike = str | Path


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RunResult:
    """A run directory after `run`: its config, the recorded stages (stages.json) and what they produced."""

    path: Path
    config: Config
    stages: dict[str, Any]
    report: Path | None  # report.md
    packages: list[Path] = field(default_factory=list)  # the exported packages, in export.targets order
    gates_passed: bool | None = None  # every (package x profile) within budget; None: no bench ran

    def summary(self, stage: str) -> dict[str, Any]:
        """A stage's recorded summary ({} when the stage did not run)."""
        return dict(self.stages.get(stage, {}).get("summary", {}))

    @property
    def eval(self) -> dict[str, Any]:
        """The eval stage's summary: dev (and test) accuracy with CIs, the baseline and the paired deltas."""
        return self.summary("eval")


@dataclass(frozen=True)
class ExportedPackage:
    """One verified package `export` wrote."""

    path: Path
    format: str
    quant: str  # the quant written (`auto`: the chosen one)
    signed: bool


@dataclass(frozen=True)
class BenchResult:
    """`bench`: one report per (package, profile), as bench.md shows them."""

    reports: list[BenchReport]
    out_dir: Path | None = None

    @property
    def all_passed(self) -> bool:
        return all(r.passed for r in self.reports)

    def markdown(self) -> str:
        """What the CLI prints (the content of bench.md)."""
        from device_profiles.report import table

        return "# Device bench\n\n" + "\n".join(table(r) for r in self.reports)

    def summary(self) -> dict[str, Any]:
        from device_profiles import bench_summary

        return bench_summary(self.reports)


# ---------------------------------------------------------------------------------------------- helpers
def _overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword overrides as dotted keys: `train__lr=1e-4`, `**{"train.lr": 1e-4}` and `train={"lr": 1e-4}`
    all set train.lr (a dict merges into its section, it does not replace it)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = value

    for key, value in overrides.items():
        walk(key.replace("__", "."), value)
    return flat


def _config(config: Config | PathLike | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> Config:
    from edge_distill.config import Config, config_from_dict, load_config

    if isinstance(config, Config):
        data, origin = config.model_dump(mode="json"), "Config"
    elif isinstance(config, Mapping):
        data, origin = dict(config), "dict"
    elif config is None:
        data, origin = {}, "defaults"
    elif isinstance(config, (str, Path)):
        data, origin = load_config(config).model_dump(mode="json"), str(config)
    else:
        raise ConfigError(
            f"run(config=...): a Config, a YAML path, a dict or None, not {type(config).__name__}"
        )
    for key, value in _overrides(overrides).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            else:
                child = node[part] = dict(child)
            node = child
        node[parts[-1]] = value
    return config_from_dict(data, origin + (" + overrides" if overrides else ""))


def judging(
    rel_tol: float | None = None, sandbox_mode: str | None = None, base: Judging | None = None
) -> Judging:
    """A `Judging` from flags over `base` (a run's, or the defaults); a bad value is a ConfigError."""
    from edge_distill.types import Judging

    base = base or Judging()
    try:
        return Judging(
            base.rel_tol if rel_tol is None else rel_tol,
            base.sandbox_mode if sandbox_mode is None else sandbox_mode,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


# ---------------------------------------------------------------------------------------------- run
def run(
    config: Config | PathLike | Mapping[str, Any] | None = None,
    /,
    *,
    resume: bool = False,
    overwrite: bool = False,
    until: str | None = None,
    redo: str | None = None,
    **overrides: Any,
) -> RunResult:
    """Run the pipeline (data, teach, filter, train or SIKeD/FDD, eval, export, bench, report) and return
    the run directory's result.

    `config`: a `Config`, a YAML path, a dict of config keys, or None (the quickstart defaults);
    `overrides`: config keys, `train__lr=1e-4` / `**{"train.lr": 1e-4}` / `train={"lr": 1e-4}`.
    `resume` continues an existing run (finished stages are skipped), `overwrite` empties it first; `until`
    stops after a stage, `redo` re-runs one. Raises ConfigError for a bad key or value (naming it)."""
    from edge_distill.pipeline import run_pipeline

    cfg = _config(config, overrides)
    rundir = run_pipeline(cfg, resume=resume, overwrite=overwrite, until=until, redo=redo)
    return _run_result(rundir)


def _run_result(rundir: Any) -> RunResult:
    stages = rundir.stages()
    packages = [rundir.resolve(p) for p in stages.get("export", {}).get("summary", {}).get("packages", [])]
    bench = stages.get("bench")
    passed = None if bench is None else bool(bench.get("summary", {}).get("all_passed", True))
    report = rundir.path / "report.md"
    return RunResult(rundir.path, rundir.cfg, stages, report if report.is_file() else None, packages, passed)


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate(
    models: PathLike | Sequence[PathLike],
    problems: PathLike | Sequence[PathLike] = (),
    *,
    strategy: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    fresh: bool = False,
    out: PathLike | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    skip_malformed: bool = False,
    rel_tol: float | None = None,
    sandbox_mode: str | None = None,
) -> EvalReport:
    """Evaluate models on problem sets: one table, every row paired against the reference (a run's
    untrained baseline, else the first model) with a bootstrap CI and McNemar p.

    `models`: run directories (their baseline, student and packages), HF or LoRA directories, GGUF/ONNX
    packages. `problems`: files or specs in any published layout (`load_problems`: "SVAMP.json",
    "svamp:SVAMP.json", "hf:openai/gsm8k:main"), or `dev`/`train`/`test` of the run (default: its dev).
    Decoding comes from the run's `eval.*` (`strategy`, `max_new_tokens`, `batch_size` override it),
    judging from its `answers.rel_tol` / `sandbox.mode` (`rel_tol`, `sandbox_mode` override it). `out`:
    where eval.json, eval.md and the predictions go (None: nowhere). `*_field`: field names for a file
    in a layout that is not recognised."""
    from edge_distill.compare import compare

    judging(rel_tol, sandbox_mode)  # a bad value fails before any model loads
    return compare(
        _as_list(models),
        _as_list(problems),
        strategy=strategy,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        limit=limit,
        fresh=fresh,
        out_dir=out,
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        skip_malformed=skip_malformed,
        rel_tol=rel_tol,
        sandbox_mode=sandbox_mode,
    )


def _as_list(x: PathLike | Iterable[PathLike]) -> list[PathLike]:
    return [x] if isinstance(x, (str, Path)) else list(x)


# ---------------------------------------------------------------------------------------------- export
def _targets(targets: str | Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for t in [targets] if isinstance(targets, str) else targets:
        if isinstance(t, str) and ":" in t:
            fmt, quant = t.split(":", 1)
        elif isinstance(t, Mapping) and {"format", "quant"} <= set(t):
            fmt, quant = t["format"], t["quant"]
        elif isinstance(t, (tuple, list)) and len(t) == 2:
            fmt, quant = t
        else:
            raise ConfigError(f"export target {t!r}: write FORMAT:QUANT (gguf:q4_k_m), a (format, quant) pair "
                              "or {format, quant}")  # fmt: skip
        out.append((str(fmt), str(quant)))
    if not out:
        raise ConfigError("export: give at least one target, e.g. gguf:q4_k_m")
    return out


def export(
    run_or_model: PathLike,
    targets: str | Sequence[Any],
    *,
    out: PathLike | None = None,
    archive: bool = False,
    parity_prompts: int = 3,
    sign_key: PathLike | None = None,
    strategy: str | None = None,
    auto_min_top1: float | None = None,
    auto_max_nll_ratio: float | None = None,
) -> list[ExportedPackage]:
    """Export a run's final student (or any HF / LoRA model directory) to verified packages, one per
    target ("gguf:q4_k_m", "onnx:int4", "gguf:auto", or (format, quant) pairs).

    A run directory: its final (or best-iteration) model, its decoding and eval.strategy, packages under
    `<run>/export/<format>-<quant>` (the run is locked meanwhile). Otherwise `<model>-<format>-<quant>` in
    the current directory; `out` places the package (one target only). `sign_key`: an ed25519 private key
    (PEM) also writes manifest.sig. Each package appears only after every parity check passed."""
    import os

    from exporters import export_model, resolve_source, run_metadata
    from exporters.signing import load_private_key

    pairs = _targets(targets)
    if out is not None and len(pairs) > 1:
        raise ConfigError("export: out= places one package; give one target, or leave out out=")
    key = load_private_key(sign_key) if sign_key else None  # a bad key fails before minutes of export
    src = Path(run_or_model)
    decoding, run_strategy, lock = None, "auto", None
    if (src / "stages.json").is_file():  # a run directory: its final (or best-iteration) model
        from edge_distill.exporting import decoding_for
        from edge_distill.pipeline import final_model_dir
        from edge_distill.rundir import RunDir

        lock = RunDir.open(src).acquire()  # export writes into the run: not while a run is going on
        model, meta = final_model_dir(lock), run_metadata(src)
        decoding, run_strategy = decoding_for(lock.cfg), lock.cfg.eval.strategy
    else:
        model, meta = resolve_source(src)
    options = {k: v for k, v in (("auto_min_top1", auto_min_top1), ("auto_max_nll_ratio", auto_max_nll_ratio))
               if v is not None}  # fmt: skip
    done = []
    try:
        for fmt, quant in pairs:
            default = (
                src / "export" / f"{fmt}-{quant}" if lock is not None else Path(f"{src.name}-{fmt}-{quant}")
            )
            target = Path(out) if out is not None else default
            target_meta = dict(meta)
            if target_meta.get("source_run") and target.resolve().is_relative_to(src.resolve()):
                target_meta["source_run"] = os.path.relpath(
                    src.resolve(), target.resolve()
                )  # the run travels whole
            pkg = export_model(
                model, target, fmt, quant, **target_meta, decoding=decoding, strategy=strategy or run_strategy,
                parity_prompts=parity_prompts, archive=archive, sign_key=key, **options,
            )  # fmt: skip
            done.append(ExportedPackage(Path(pkg), fmt, _written_quant(Path(pkg), quant), key is not None))
    finally:
        if lock is not None:
            lock.release()
    return done


def _written_quant(pkg: Path, asked: str) -> str:
    import json

    try:
        return str(json.loads((pkg / "manifest.json").read_text(encoding="utf-8")).get("quant") or asked)
    except (OSError, ValueError):
        return asked


# ---------------------------------------------------------------------------------------------- bench
def bench(
    package: PathLike | Sequence[PathLike],
    profile: str | PathLike | Sequence[str | PathLike] = "host",
    remote: str | None = None,
    *,
    problems: PathLike | None = None,
    split: str | None = None,
    accuracy_limit: int = 50,
    repetitions: int = 3,
    out: PathLike | None = None,
    on_target: bool | None = None,
    public_key: PathLike | None = None,
    identity: PathLike | None = None,
    known_hosts: PathLike | None = None,
    remote_python: str | None = None,
    remote_timeout: float = 3600,
    max_new_tokens: int | None = None,
    strategy: str | None = None,
    rel_tol: float | None = None,
    sandbox_mode: str | None = None,
) -> BenchResult:
    """Measure packages through their runtime on device profiles and gate them against the budgets.

    `remote` ("ssh://user@host[:port]") measures on that device over SSH (`identity`, `known_hosts`,
    `remote_python`, `remote_timeout`); otherwise on this host (measured when it is the profile's device,
    `on_target` forces it, else estimated). Quantized accuracy: the packages' source run's `split` (default
    dev) with its eval predictions when that run directory is here, or `problems` (any published layout);
    decoding and judging are the source run's (`max_new_tokens`, `strategy`, `rel_tol`, `sandbox_mode`
    override them, which drops the source comparison). `out`: bench.{md,json,png} and predictions.
    `public_key`: refuse any package without a valid manifest.sig by it."""
    from device_profiles import bench_packages
    from device_profiles.package import read_package
    from edge_distill.exporting import bench_problems
    from edge_distill.types import Strategy

    packages = _as_list(package)
    profiles = [profile] if isinstance(profile, (str, Path)) else list(profile)
    if not remote and (identity or known_hosts or remote_python):
        raise ConfigError(
            "bench: identity/known_hosts/remote_python (--identity, ...) go with remote (--remote)"
        )
    if remote and on_target is not None:
        raise ConfigError("bench: remote measures on the device: drop on_target (--on-target/--on-host)")
    for d in packages:  # a broken or unsigned package is refused before anything else is read
        read_package(d, public_key=public_key)
    given = rel_tol is not None or sandbox_mode is not None  # only the flags given replace the run's
    flags = _partial_judging(packages, rel_tol, sandbox_mode) if given else None
    inputs = bench_problems(
        [str(p) for p in packages], None if problems is None else str(problems), split, accuracy_limit,
        max_new_tokens=max_new_tokens, strategy=strategy, judging=flags,
    )  # fmt: skip
    common = dict(
        accuracy_limit=accuracy_limit, problems=inputs.problems, source_correct=inputs.source_correct,
        accuracy_max_new_tokens=inputs.max_new_tokens,
        strategy=None if inputs.strategy == "auto" else Strategy(inputs.strategy), repetitions=repetitions,
        out_dir=out, public_key=public_key, judging=inputs.judging,
    )  # fmt: skip
    if remote:
        from device_profiles.remote import DEFAULT_REMOTE_PYTHON, bench_remote

        reports = bench_remote(
            packages, profiles, remote, identity=identity, known_hosts=known_hosts,
            remote_python=remote_python or DEFAULT_REMOTE_PYTHON, timeout_s=remote_timeout, **common,
        )  # fmt: skip
    else:
        reports = bench_packages(packages, profiles, on_target=on_target, **common)
    return BenchResult(reports, Path(out) if out is not None else None)


def _partial_judging(packages: list[PathLike], rel_tol: float | None, sandbox_mode: str | None) -> Judging:
    """The flags given over the packages' source run's judging (the defaults without one)."""
    from edge_distill.exporting import _source_run
    from edge_distill.rundir import RunDir
    from edge_distill.types import Judging

    runs = {_source_run(Path(p)) for p in packages}
    base = Judging.of(RunDir.open(runs.pop()).cfg) if len(runs) == 1 and None not in runs else None  # type: ignore[arg-type]
    return judging(rel_tol, sandbox_mode, base)


# ---------------------------------------------------------------------------------------------- problems
def load_problems(
    spec: PathLike,
    *,
    split: str = "test",
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    fmt: str = "auto",
    skip_malformed: bool = False,
    socratic: PathLike | None = None,
) -> LoadedProblems:
    """Problems from a file or dataset as published (GSM8K, SVAMP, ASDiv, MultiArith/AddSub/SingleEq,
    MAWPS, LLM-Adapters, ToRA, GSM-Hard, MATH, ...: recognised by their fields), `NAME:PATH`
    ("svamp:SVAMP.json"), `hf:<id>[:<config>][@<split>]`, or `builtin:gsm8k-sample`. Returns a
    `LoadedProblems`: a sequence of `Problem` with `.skipped_reasons` (rows whose gold is not a number are
    skipped and counted, never an error). `*_field` name the fields of another layout; `socratic`:
    "auto" attaches GSM8K's sibling `<name>_socratic.jsonl`. Same loader as the CLI and the pipeline."""
    from edge_distill.data import load_problems as load

    return load(
        spec, fmt=fmt, question_field=question_field, answer_field=answer_field, id_field=id_field,
        skip_malformed=skip_malformed, split=split, socratic=socratic,
    )  # fmt: skip
