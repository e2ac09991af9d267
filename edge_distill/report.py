"""`report.md`: one readable page per run, built only from the files the stages wrote.

It reads top to bottom as the result first: baseline (the untrained student, same problems, same decoding)
→ each SIKeD iteration / FDD round → the final student → its packages (quantized, through their runtimes)
→ the device gate; then how the run got there (stages, data, teacher, training). Every accuracy has n,
its Wilson 95 % CI, and a paired comparison with the baseline on the same problems (`stats`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_distill.io import make_dirs, read_jsonl, write_text
from edge_distill.rundir import RunDir, from_stored

log = logging.getLogger(__name__)

PLOT = "eval/accuracy.png"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _acc_line(name: str, s: dict[str, Any]) -> str:
    lo, hi = s.get("ci95", (None, None))
    return f"| {name} | {s.get('n', 0)} | {s.get('correct', 0)} | {_pct(s.get('accuracy'))} | {_pct(lo)} – {_pct(hi)} |"


def _accuracy_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| slice | n | correct | accuracy | 95 % CI (Wilson) |", "|---|---|---|---|---|"]
    lines.append(_acc_line("all", summary))
    for strategy, s in sorted((summary.get("per_strategy") or {}).items()):
        lines.append(_acc_line(f"student chose `{strategy}`", s))
    return lines


def _teacher_table(stats: dict[str, Any]) -> list[str]:
    kinds = list(stats.get("failures", {}))
    head = "| strategy | completions | correct | problems solved | " + " | ".join(kinds) + " |"
    lines = [
        f"`{stats.get('teacher')}`, {stats.get('problems')} problems × K={stats.get('k')}; "
        f"cache hits {stats.get('cached', 0)}.",
        "",
        head,
        "|" + "---|" * (4 + len(kinds)),
    ]
    for strategy, s in (stats.get("by_strategy") or {}).items():
        fails = " | ".join(str(s.get(k, 0)) for k in kinds)
        lines.append(
            f"| {strategy} | {s.get('completions')} | {s.get('correct')} | {s.get('problems_solved')} | {fails} |"
        )
    return lines


def _section(title: str, body: list[str]) -> list[str]:
    return [f"## {title}", "", *body, ""] if body else []


def _predictions(path: Path) -> list[dict[str, Any]] | None:
    return read_jsonl(path) if path.is_file() else None


def result_rows(p: Path, split: str = "dev") -> list[dict[str, Any]]:
    """The accuracy ladder of a run on one split: baseline, iterations/rounds, student, packages. Each row:
    label, kind, summary (n, accuracy, CI, per strategy) and its paired comparison with the baseline (and,
    for a package, with the student) on the problems both were judged on."""
    from edge_distill.eval import correct_by_id
    from edge_distill.scoring import summarize
    from edge_distill.stats import paired_comparison

    found: list[tuple[str, str, list[dict[str, Any]]]] = []
    base = _predictions(p / "eval" / f"baseline_{split}_predictions.jsonl")
    if base is not None:
        found.append(("baseline (untrained student)", "baseline", base))
    if split == "dev":
        methods = _load(p / "methods" / "summary.json") or {}
        for method, info in methods.items():
            # the method lists its step directories (methods/summary.json); nothing here rebuilds them
            if "step_dirs" not in info:
                log.warning(
                    "%s: %s lists no step_dirs (written by an older edge-distill): its steps are left out "
                    "of the ladder", p / "methods" / "summary.json", method,
                )  # fmt: skip
            for k, step_dir in enumerate(info.get("step_dirs", [])):
                preds = _predictions(from_stored(step_dir, p) / "eval" / "dev_predictions.jsonl")
                if preds is not None:
                    best = " (best)" if k == info.get("best") else ""
                    found.append((f"{method} {info.get('unit', 'step')} {k}{best}", "step", preds))
    student = _predictions(p / "eval" / f"{split}_predictions.jsonl")
    if student is not None:
        found.append(("student (final)", "student", student))
    if split == "dev":
        for f in sorted((p / "bench").glob("*.predictions.jsonl")):
            found.append((f"package {f.name.removesuffix('.predictions.jsonl')}", "package", read_jsonl(f)))
    rows = []
    for label, kind, preds in found:
        row: dict[str, Any] = {"label": label, "kind": kind, "summary": summarize(preds).summary()}
        if base is not None and kind != "baseline":
            row["vs_baseline"] = paired_comparison(correct_by_id(base), correct_by_id(preds))
        if student is not None and kind == "package":
            row["vs_student"] = paired_comparison(correct_by_id(student), correct_by_id(preds))
        rows.append(row)
    return rows


def _delta(c: dict[str, Any] | None) -> str:
    if not c:
        return "| | |"
    lo, hi = c["delta_ci95"]
    return (
        f"| {100 * c['delta']:+.1f} pts (n={c['n']}) | {100 * lo:+.1f} – {100 * hi:+.1f} | "
        f"{c['mcnemar_p']:.3g}"
    )


def _results_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | n | accuracy | 95 % CI (Wilson) | Δ vs baseline | paired 95 % CI | McNemar p |",
        "|---|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        s = r["summary"]
        lo, hi = s["ci95"]
        lines.append(
            f"| {r['label']} | {s['n']} | {_pct(s['accuracy'])} | {_pct(lo)} – {_pct(hi)} {_delta(r.get('vs_baseline'))} |"
        )
    drops = [r for r in rows if r.get("vs_student")]
    if drops:
        lines += ["", "Packages against the unquantized student on the same problems (same decoding):", ""]
        lines += ["| package | n | Δ vs student | paired 95 % CI | McNemar p |", "|---|---:|---:|---|---:|"]
        for r in drops:
            c = r["vs_student"]
            lines.append(f"| {r['label']} | {c['n']} {_delta(c)} |")
    lines += [
        "",
        "Δ: accuracy minus the baseline's on the problems both were judged on; paired CI: bootstrap over "
        "problems; McNemar: exact two-sided test on the problems where exactly one of the two was right.",
    ]
    return lines


def write_plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy per row (baseline, iterations/rounds, student, packages) with Wilson CI bars and a band
    over the iterations/rounds, and below it the strategy the model chose on each problem (share)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(len(rows)))
    acc = [100 * r["summary"]["accuracy"] for r in rows]
    lo = [100 * r["summary"]["ci95"][0] for r in rows]
    hi = [100 * r["summary"]["ci95"][1] for r in rows]
    fig, (ax, mix) = plt.subplots(2, 1, figsize=(max(5.0, 1.1 * len(rows) + 2), 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 2]})  # fmt: skip
    ax.errorbar(xs, acc, yerr=[[a - b for a, b in zip(acc, lo, strict=True)],
                               [h - a for a, h in zip(acc, hi, strict=True)]], fmt="o", capsize=4)  # fmt: skip
    steps = [i for i, r in enumerate(rows) if r["kind"] in ("step", "student")]
    if len(steps) > 1:
        ax.plot(steps, [acc[i] for i in steps], "-", color="C0")
        ax.fill_between(steps, [lo[i] for i in steps], [hi[i] for i in steps], alpha=0.2, color="C0")
    if rows[0]["kind"] == "baseline":
        ax.axhspan(lo[0], hi[0], color="grey", alpha=0.15, label="baseline 95% CI")
        ax.axhline(acc[0], color="grey", linestyle="--", linewidth=1)
        ax.legend(fontsize=8)
    ax.set(ylabel="accuracy % (95% CI)", title="dev accuracy: baseline → student → packages")
    names = sorted({k for r in rows for k in r["summary"].get("per_strategy", {})})
    bottom = [0.0] * len(rows)
    for name in names:
        share = [
            r["summary"]["per_strategy"].get(name, {}).get("n", 0) / max(1, r["summary"]["n"]) for r in rows
        ]
        mix.bar(xs, share, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, share, strict=True)]
    mix.set(ylabel="strategy chosen (share)", ylim=(0, 1.05))
    if names:
        mix.legend(fontsize=8, ncol=len(names))
    mix.set_xticks(xs, [r["label"].replace(" (", "\n(") for r in rows], rotation=20, fontsize=8)
    fig.tight_layout()
    make_dirs(path.parent)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _package_sections(p: Path) -> list[str]:
    """Exports and device budgets: what the export and bench stages left in the run directory."""
    out: list[str] = []
    exports = sorted((p / "export").glob("*/manifest.json"))
    if exports:
        body = ["| package | format | quant | size MB |", "|---|---|---|---|"]
        for m in exports:
            man = _load(m)
            size = sum(f["bytes"] for f in man.get("files", {}).values()) / 1e6
            body.append(f"| {m.parent.name} | {man.get('format')} | {man.get('quant')} | {size:.1f} |")
        out += _section("Exports", body)

    bench_md = sorted((p / "bench").glob("*.md"))
    if bench_md:
        body = []
        for md in bench_md:
            body += [md.read_text(encoding="utf-8").strip(), ""]
        for png in sorted((p / "bench").glob("*.png")):
            body.append(f"![{png.stem}]({png.relative_to(p)})")
        out += _section("Device budgets", body)
    return out


def _results_sections(p: Path) -> list[str]:
    """The accuracy ladder on dev (with its plot) and on test."""
    out: list[str] = []
    for split in ("dev", "test"):
        rows = result_rows(p, split)
        if not rows:
            continue
        body = _results_table(rows)
        if split == "dev":
            try:
                plot = write_plot(rows, p / PLOT)
            except Exception as e:  # a plot is an extra: a broken matplotlib must not lose the report
                log.warning("accuracy plot not written: %s", e)
                plot = None
            if plot is not None:
                body += ["", f"![dev accuracy]({PLOT})"]
        out += _section(f"Results on {split}", body)
    return out


def _stage_sections(p: Path, stages: dict[str, Any]) -> list[str]:
    """Stage wall times, and what the data, teach and filter stages counted."""
    marks = {
        name: " (stale: " + info["stale"] + ")" if info.get("stale") else "" for name, info in stages.items()
    }
    rows = [f"| {name}{marks[name]} | {info.get('wall_s', 0):.1f} |" for name, info in stages.items()]
    out = _section("Stages", ["| stage | wall s |", "|---|---|", *rows])

    data = stages.get("data", {}).get("summary", {})
    if data:
        out += _section(
            "Data", [f"train {data.get('train')} problems, dev {data.get('dev')} (carved from train)."]
        )

    teach = _load(p / "teach" / "stats.json")
    if teach:
        out += _section("Teacher", _teacher_table(teach))
    filt = _load(p / "filter" / "stats.json")
    if filt:
        out += _section(
            "Filter",
            [
                f"{filt['kept']} of {filt['teacher_samples']} teacher samples kept: {filt.get('kept_by_strategy')}"
            ],
        )
    return out


def _training_sections(p: Path, objective_name: str, stages: dict[str, Any]) -> list[str]:
    """The training run, the objective's metrics and the methods' iterations / rounds."""
    out: list[str] = []
    result = _load(p / "train" / "train_result.json")
    if result:
        loss = (
            f"loss {result.get('first_loss'):.3f} → {result.get('last_loss'):.3f}"
            if result.get("last_loss")
            else ""
        )
        out += _section(
            "Training",
            [
                f"{result.get('finetune')} on {result.get('examples')} examples, {result.get('steps')} steps "
                f"({result.get('trainable_params'):,} trainable parameters), {loss}, "
                f"{result.get('runtime_s', 0):.0f} s"
                + (
                    f", resumed from step {result['resumed_from_step']}"
                    if result.get("resumed_from_step")
                    else ""
                )
            ],
        )
    objective = _load(p / "train" / "objective.json")
    if objective:
        out += _section(f"Objective `{objective_name}`", [f"`{k}`: {v}" for k, v in objective.items()])

    methods = stages.get("methods", {}).get("summary", {})
    if methods:
        body = [f"`{k}`: {v}" for k, v in methods.items() if not isinstance(v, list | dict)]
        for png in sorted(p.glob("methods/*.png")):
            body.append(f"![{png.stem}]({png.relative_to(p)})")
        out += _section("Iterations / rounds", body)
    return out


def build_report(run: RunDir) -> str:
    p = run.path
    stages = run.stages()
    cfg = run.cfg
    out = [
        f"# edge-distill run `{cfg.name}`",
        "",
        f"student `{cfg.student.model}` ({cfg.train.finetune}, objective `{cfg.train.objective}`), "
        f"teacher `{cfg.teacher.backend}:{cfg.teacher.model}`, methods {cfg.methods or ['sft']}.",
        "",
    ]
    out += _results_sections(p)
    out += _package_sections(p)
    out += _stage_sections(p, stages)
    out += _training_sections(p, cfg.train.objective, stages)
    for split in ("dev", "test"):
        ev = _load(p / "eval" / f"{split}.json")
        if ev:
            out += _section(f"Student on {split}, by the strategy it chose", _accuracy_table(ev))
    return "\n".join(out).rstrip() + "\n"


def write_report(run: RunDir) -> Path:
    path = run.path / "report.md"
    write_text(path, build_report(run))
    return path
