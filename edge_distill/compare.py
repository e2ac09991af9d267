"""`edge-distill eval --model ... --problems ...`: any models on any problem sets, one table, paired tests.

A model is a HF directory, a LoRA adapter directory, an export package (GGUF/ONNX, run through its own
runtime and packaged decoding), or a run directory, which stands for its untrained student (`baseline`),
its trained student (`student`) and every package it exported. Problem sets are files/dataset specs read by
the one loader (`data.load_problems`) or a run's own split (`dev`, `train`; `test` only when named).
Every prediction is judged by the one scorer (`scoring.score`, via `eval.evaluate` for torch models and
`device_profiles.accuracy.run_accuracy` for packages), and every row of a problem set is paired against
that set's reference row (a run's baseline, else the first model) on the same problems: delta, exact
McNemar p and a paired bootstrap CI over problems (`stats.paired_comparison`).

Torch is imported only when a torch model is evaluated: packages can be evaluated on a device install.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_distill.errors import ConfigError
from edge_distill.io import read_jsonl, write_json, write_jsonl, write_text
from edge_distill.types import Problem

log = logging.getLogger(__name__)

RUN_SPLITS = ("dev", "train", "test")


@dataclass
class Candidate:
    """One model to evaluate. `kind`: torch | package; `role`: baseline | student | package | model."""

    label: str
    kind: str
    path: Path
    role: str
    run: Any = None  # the RunDir it came from (its eval/decoding settings), if any


@dataclass
class ProblemSet:
    name: str  # what the user wrote (`dev`, a file, a dataset spec)
    split: str  # dev | train | test for a run's splits, else the file's name
    problems: list[Problem]
    run: Any = None  # the run whose split this is (its recorded predictions may be reused)


@dataclass
class Row:
    model: str
    role: str
    problems: str
    split: str
    summary: dict[str, Any]
    predictions: list[dict[str, Any]] = field(repr=False, default_factory=list)
    vs_reference: dict[str, Any] | None = None
    reused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "role": self.role,
            "problems": self.problems,
            "split": self.split,
            **{k: self.summary.get(k) for k in ("n", "correct", "accuracy", "ci95", "per_strategy")},
            "vs_reference": self.vs_reference,
            "reused": self.reused,
        }


# ---------------------------------------------------------------------------------------------- models
def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "stages.json").is_file()


def resolve_models(specs: list[str]) -> list[Candidate]:
    """Each --model: a run directory expands to baseline, student and its packages; anything else is one."""
    from edge_distill.rundir import RunDir

    runs = sum(1 for s in specs if _is_run(Path(s)))
    out: list[Candidate] = []
    for spec in specs:
        path = Path(spec)
        if _is_run(path):
            out += _run_candidates(RunDir.open(path), prefix=f"{path.name}:" if runs > 1 else "")
        elif (path / "manifest.json").is_file():
            out.append(Candidate(path.name, "package", path, "package"))
        elif (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            out.append(Candidate(path.name, "torch", path, "model"))
        else:
            raise ConfigError(
                f"--model {spec}: not a run directory (config.yaml + stages.json), an export package "
                "(manifest.json), a HF model directory (config.json) or a LoRA adapter (adapter_config.json)"
            )
    labels = [c.label for c in out]
    for i, c in enumerate(out):  # two models with the same directory name: keep both apart
        if labels.count(c.label) > 1:
            c.label = f"{c.label}#{i}"
    return out


def _run_candidates(run: Any, prefix: str) -> list[Candidate]:
    from edge_distill.models import resolve_model
    from edge_distill.pipeline import final_model_dir

    out = [Candidate(f"{prefix}baseline", "torch", resolve_model(run.cfg.student.model), "baseline", run)]
    out.append(Candidate(f"{prefix}student", "torch", final_model_dir(run), "student", run))
    packages = run.stages().get("export", {}).get("summary", {}).get("packages") or []
    for p in packages:
        path = run.resolve(p)
        if (path / "manifest.json").is_file():
            out.append(Candidate(f"{prefix}{path.name}", "package", path, "package", run))
    return out


# ---------------------------------------------------------------------------------------------- problems
def resolve_problems(specs: list[str], models: list[Candidate], limit: int | None) -> list[ProblemSet]:
    """Each --problems: `dev`/`train`/`test` of the (first) run among the models, or a file/dataset spec."""
    from edge_distill.data import load_problems

    runs = [c.run for c in models if c.run is not None]
    if not specs:
        if not runs:
            raise ConfigError("--problems is required unless a --model is a run directory (default: its dev)")
        specs = ["dev"]
    out: list[ProblemSet] = []
    for spec in specs:
        if spec in RUN_SPLITS and not Path(spec).exists():
            if not runs:
                raise ConfigError(
                    f"--problems {spec}: a split name needs a run directory among --model; pass a file instead"
                )
            run = runs[0]
            problems = _run_split(run, spec)
            out.append(ProblemSet(spec, spec, problems[:limit] if limit else problems, run))
        else:
            problems = load_problems(spec, split="test", socratic=None)
            name = Path(spec).name if Path(spec).exists() else spec
            out.append(ProblemSet(spec, name, problems[:limit] if limit else problems))
    return out


def _run_split(run: Any, split: str) -> list[Problem]:
    from edge_distill import stages

    return stages.load_test(run.cfg.data) if split == "test" else stages.load_split(run, split)


# ---------------------------------------------------------------------------------------------- evaluate
def _recorded(cand: Candidate, pset: ProblemSet) -> tuple[list[dict[str, Any]], str] | None:
    """Predictions a run already holds for exactly these problems (its eval stage, or its bench)."""
    run = cand.run
    if run is None or pset.run is not run:
        return None
    files = {
        "student": [f"eval/{pset.split}_predictions.jsonl"],
        "baseline": [f"eval/baseline_{pset.split}_predictions.jsonl"],
        "package": [f"bench/{cand.path.name}.predictions.jsonl"] if pset.split == "dev" else [],
    }[cand.role]
    # predictions of a stage that is stale (its inputs re-ran after it) are not the model's current ones
    if run.stages().get("bench" if cand.role == "package" else "eval", {}).get("stale"):
        return None
    want = [p.id for p in pset.problems]
    for rel in files:
        path = run.path / rel
        if path.is_file():
            rows = read_jsonl(path)
            by_id = {str(r["id"]): r for r in rows}
            if all(i in by_id for i in want):
                return [by_id[i] for i in want], rel
    return None


def _evaluate(cand: Candidate, pset: ProblemSet, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode and judge: a package through its runtime, a torch model as its run's objective decodes."""
    from edge_distill.config import EvalConfig, TrainConfig

    ev = cand.run.cfg.eval if cand.run is not None else EvalConfig()
    updates = {k: v for k, v in opts.items() if v is not None}
    ev = ev.model_copy(update={**updates, "limit": None})
    if cand.kind == "package":
        from device_profiles.accuracy import run_accuracy
        from device_profiles.loader import load_profile
        from device_profiles.package import read_package
        from edge_distill.types import Strategy

        pkg = read_package(cand.path)
        strategy = None if ev.strategy == "auto" else Strategy(ev.strategy)
        threads = load_profile("host").resolved_threads()
        acc = run_accuracy(pkg, threads, pset.problems, strategy=strategy, max_new_tokens=ev.max_new_tokens)
        return acc.predictions
    from edge_distill.stages import decode_student

    # a run's models decode as its objective trained them (CasCoD: two stages); a bare model single-pass
    train = cand.run.cfg.train if cand.run is not None else TrainConfig()
    return decode_student(ev, train, cand.path, pset.problems).predictions


def compare(
    model_specs: list[str],
    problem_specs: list[str],
    *,
    strategy: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    fresh: bool = False,
    out_dir: str | Path | None = None,
) -> list[Row]:
    """Evaluate every model on every problem set; write `out_dir/eval.{json,md}` and one predictions file
    per row. A run's recorded predictions for exactly these problems are reused unless `fresh` or a
    decoding option is given (the table says which rows were reused)."""
    from edge_distill.eval import correct_by_id
    from edge_distill.scoring import summarize
    from edge_distill.stats import paired_comparison

    if not model_specs:
        raise ConfigError("eval: give at least one --model")
    models = resolve_models(model_specs)
    psets = resolve_problems(problem_specs, models, limit)
    opts = {"strategy": strategy, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    reuse = not fresh and strategy is None and max_new_tokens is None
    rows: list[Row] = []
    for pset in psets:
        for cand in models:
            recorded = _recorded(cand, pset) if reuse else None
            if recorded is not None:
                preds, reused = recorded
                log.info("eval %s on %s: reusing %s", cand.label, pset.name, reused)
            else:
                log.info("eval %s on %s (%d problems)", cand.label, pset.name, len(pset.problems))
                preds, reused = _evaluate(cand, pset, opts), None
            summary = summarize(preds).summary()
            rows.append(Row(cand.label, cand.role, pset.name, pset.split, summary, preds, reused=reused))
    # per problem set, every row against the reference: the (first) run's baseline, else the first model
    for pset in psets:
        set_rows = [r for r in rows if r.problems == pset.name]
        ref_row = next((r for r in set_rows if r.role == "baseline"), set_rows[0])
        for r in set_rows:
            if r is not ref_row:
                r.vs_reference = {
                    "reference": ref_row.model,
                    **paired_comparison(correct_by_id(ref_row.predictions), correct_by_id(r.predictions)),
                }
    if out_dir is not None:
        write_outputs(rows, Path(out_dir))
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


def write_outputs(rows: list[Row], out: Path) -> None:
    write_json(out / "eval.json", {"rows": [r.to_dict() for r in rows]})
    for r in rows:
        write_jsonl(out / f"{_slug(r.model)}__{_slug(r.problems)}.predictions.jsonl", r.predictions)
    write_text(out / "eval.md", render_table(rows) + "\n")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_table(rows: list[Row]) -> str:
    """One markdown table: accuracy with its Wilson CI, and against the reference row on the same problems
    the delta, its paired bootstrap 95 % CI and the exact McNemar p."""
    lines = [
        "| model | problems | split/name | n | accuracy % | 95% CI (Wilson) | Δ vs reference (pts) "
        "| paired 95% CI | McNemar p |",
        "|---|---|---|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        s = r.summary
        lo, hi = s["ci95"]
        v = r.vs_reference
        if v is None:
            cmp = "reference | | "
        else:
            dlo, dhi = v["delta_ci95"]
            cmp = f"{100 * v['delta']:+.1f} | {100 * dlo:+.1f} – {100 * dhi:+.1f} | {v['mcnemar_p']:.3g}"
        model = r.model + (" (recorded)" if r.reused else "")
        lines.append(
            f"| {model} | {r.problems} | {r.split} | {s['n']} | {_pct(s['accuracy'])} | "
            f"{_pct(lo)} – {_pct(hi)} | {cmp} |"
        )
    return "\n".join(lines)
