"""`edge-distill eval --model ... --problems ...`: any models on any problem sets, one table, paired tests.

A model is a HF directory, a LoRA adapter directory, an export package (GGUF/ONNX, run through its own
runtime and packaged decoding), or a run directory, which stands for its untrained student (`baseline`),
its trained student (`student`) and every package it exported. Problem sets are files/dataset specs read by
the one loader (`data.load_problems`) or a run's own split (`dev`, `train`; `test` only when named).
Every prediction is judged by the one scorer (`scoring.score`, via `eval.evaluate` for torch models and
`device_profiles.accuracy.run_accuracy` for packages) with one `Judging` for the whole table: the run's
`answers.rel_tol` and `sandbox.mode` (or the flags), so a standalone eval judges exactly as the run did.
Every row of a problem set is paired against that set's reference row (a run's baseline, else the first
model) on the same problems: delta, exact McNemar p and a paired bootstrap CI over problems
(`stats.paired_comparison`). A published file's rows whose gold is not a number are skipped by the loader
and counted in the table's `skipped` column.

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
from edge_distill.types import Judging, Problem

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
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # rows the loader skipped, by reason

    @property
    def skipped(self) -> int:
        return sum(self.skipped_reasons.values())


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
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # problem-set rows the loader skipped

    @property
    def skipped(self) -> int:
        return sum(self.skipped_reasons.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "role": self.role,
            "problems": self.problems,
            "split": self.split,
            **{k: self.summary.get(k) for k in ("n", "correct", "accuracy", "ci95", "per_strategy")},
            "skipped": self.skipped,
            "skipped_reasons": self.skipped_reasons,
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
def resolve_problems(
    specs: list[str], models: list[Candidate], limit: int | None, fields: dict[str, Any] | None = None
) -> list[ProblemSet]:
    """Each --problems: `dev`/`train`/`test` of the (first) run among the models, or a file/dataset spec in
    any published layout (`data.load_problems`; `fields`: question_field/answer_field/id_field/skip_malformed)."""
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
            loaded = load_problems(spec, split="test", socratic=None, **(fields or {}))
            name = Path(spec).name if Path(spec).exists() else spec
            problems = list(loaded[:limit] if limit else loaded)
            out.append(ProblemSet(spec, name, problems, skipped_reasons=loaded.skipped_reasons))
    return out


def _run_split(run: Any, split: str) -> list[Problem]:
    from edge_distill import stages

    return stages.load_test(run.cfg.data) if split == "test" else stages.load_split(run, split)


# ---------------------------------------------------------------------------------------------- evaluate
def resolve_judging(models: list[Candidate], rel_tol: float | None, sandbox_mode: str | None) -> Judging:
    """One judging for the whole table: the flags, else the runs' (`answers.rel_tol`, `sandbox.mode`), else
    the defaults. Runs that judge differently need the flag: rows judged differently are not comparable."""
    runs = {str(c.run.path): Judging.of(c.run.cfg) for c in models if c.run is not None}
    own = set(runs.values())
    for key, flag, given in (
        ("answers.rel_tol", "--rel-tol", rel_tol),
        ("sandbox.mode", "--sandbox-mode", sandbox_mode),
    ):
        attr = "rel_tol" if key == "answers.rel_tol" else "sandbox_mode"
        if given is None and len({getattr(j, attr) for j in own}) > 1:
            values = ", ".join(f"{p}: {getattr(j, attr)}" for p, j in runs.items())
            raise ConfigError(
                f"eval: the runs differ in {key} ({values}); one table judges every row alike: pass {flag}"
            )
    base = next(iter(own)) if own else Judging()
    return Judging(
        base.rel_tol if rel_tol is None else rel_tol,
        base.sandbox_mode if sandbox_mode is None else sandbox_mode,
    )


def _recorded(cand: Candidate, pset: ProblemSet, judging: Judging) -> tuple[list[dict[str, Any]], str] | None:
    """Predictions a run already holds for exactly these problems (its eval stage, or its bench), judged
    the way this table judges."""
    run = cand.run
    if run is None or pset.run is not run or Judging.of(run.cfg) != judging:
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


def _evaluate(
    cand: Candidate, pset: ProblemSet, opts: dict[str, Any], judging: Judging
) -> list[dict[str, Any]]:
    """Decode and judge: a package through its runtime, a torch model as its run's objective decodes; both
    judged with `judging`."""
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
        acc = run_accuracy(
            pkg, threads, pset.problems, strategy=strategy, max_new_tokens=ev.max_new_tokens, judging=judging
        )
        return acc.predictions
    from edge_distill.stages import decode_student

    # a run's models decode as its objective trained them (CasCoD: two stages); a bare model single-pass
    train = cand.run.cfg.train if cand.run is not None else TrainConfig()
    return decode_student(ev, train, cand.path, pset.problems, judging).predictions


@dataclass
class EvalReport:
    """`edge-distill eval --model ...` / `edge_distill.evaluate(...)`: one row per (problem set, model), the
    judging every row was judged with, and where the outputs were written (None: nowhere)."""

    rows: list[Row]
    judging: Judging
    out_dir: Path | None = None

    def table(self) -> str:
        """The markdown table the CLI prints (`render_table`)."""
        return render_table(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"judging": self.judging.to_dict(), "rows": [r.to_dict() for r in self.rows]}


def compare(
    model_specs: list[str | Path],
    problem_specs: list[str | Path],
    *,
    strategy: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    fresh: bool = False,
    out_dir: str | Path | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    skip_malformed: bool = False,
    rel_tol: float | None = None,
    sandbox_mode: str | None = None,
) -> EvalReport:
    """Evaluate every model on every problem set; write `out_dir/eval.{json,md}` and one predictions file
    per row. A run's recorded predictions for exactly these problems are reused unless `fresh`, a decoding
    option, or a judging that differs from the run's is given (the table says which rows were reused).
    Decoding: the run's eval.* for its models (else the defaults), overridden by `strategy`,
    `max_new_tokens`, `batch_size`; judging: `resolve_judging`. Fields: for problem files in a layout
    `data.load_problems` does not recognise."""
    from edge_distill.eval import correct_by_id
    from edge_distill.scoring import summarize
    from edge_distill.stats import paired_comparison

    if not model_specs:
        raise ConfigError("eval: give at least one --model")
    models = resolve_models([str(m) for m in model_specs])
    judging = resolve_judging(models, rel_tol, sandbox_mode)
    fields = {"question_field": question_field, "answer_field": answer_field, "id_field": id_field,
              "skip_malformed": skip_malformed}  # fmt: skip
    psets = resolve_problems([str(p) for p in problem_specs], models, limit, fields)
    opts = {"strategy": strategy, "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    reuse = not fresh and strategy is None and max_new_tokens is None
    rows: list[Row] = []
    for pset in psets:
        for cand in models:
            recorded = _recorded(cand, pset, judging) if reuse else None
            if recorded is not None:
                preds, reused = recorded
                log.info("eval %s on %s: reusing %s", cand.label, pset.name, reused)
            else:
                log.info("eval %s on %s (%d problems)", cand.label, pset.name, len(pset.problems))
                preds, reused = _evaluate(cand, pset, opts, judging), None
            summary = summarize(preds).summary()
            rows.append(Row(cand.label, cand.role, pset.name, pset.split, summary, preds, reused=reused,
                            skipped_reasons=dict(pset.skipped_reasons)))  # fmt: skip
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
    report = EvalReport(rows, judging, Path(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        write_outputs(report, Path(out_dir))
    return report


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


def write_outputs(report: EvalReport, out: Path) -> None:
    write_json(out / "eval.json", report.to_dict())
    for r in report.rows:
        write_jsonl(out / f"{_slug(r.model)}__{_slug(r.problems)}.predictions.jsonl", r.predictions)
    write_text(out / "eval.md", report.table() + "\n")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render_table(rows: list[Row]) -> str:
    """One markdown table: accuracy with its Wilson CI, the rows of the problem file the loader skipped (a
    gold that is not a number, ...), and against the reference row on the same problems the delta, its
    paired bootstrap 95 % CI and the exact McNemar p."""
    lines = [
        "| model | problems | split/name | n | skipped | accuracy % | 95% CI (Wilson) | Δ vs reference (pts) "
        "| paired 95% CI | McNemar p |",
        "|---|---|---|---:|---:|---:|---|---:|---|---:|",
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
            f"| {model} | {r.problems} | {r.split} | {s['n']} | {r.skipped} | {_pct(s['accuracy'])} | "
            f"{_pct(lo)} – {_pct(hi)} | {cmp} |"
        )
    return "\n".join(lines)
