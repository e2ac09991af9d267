"""`report.md`: one readable page per run, built only from the files the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_distill.io import write_text
from edge_distill.rundir import RunDir


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
    rows = [f"| {name} | {info.get('wall_s', 0):.1f} |" for name, info in stages.items()]
    out += _section("Stages", ["| stage | wall s |", "|---|---|", *rows])

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
        out += _section(f"Objective `{cfg.train.objective}`", [f"`{k}`: {v}" for k, v in objective.items()])

    methods = stages.get("methods", {}).get("summary", {})
    if methods:
        body = [f"`{k}`: {v}" for k, v in methods.items() if not isinstance(v, list | dict)]
        for png in sorted(p.glob("methods/*.png")):
            body.append(f"![{png.stem}]({png.relative_to(p)})")
        out += _section("Iterations / rounds", body)

    for split in ("dev", "test"):
        ev = _load(p / "eval" / f"{split}.json")
        if ev:
            out += _section(f"Accuracy on {split}", _accuracy_table(ev))

    out += _package_sections(p)
    return "\n".join(out).rstrip() + "\n"


def write_report(run: RunDir) -> Path:
    path = run.path / "report.md"
    write_text(path, build_report(run))
    return path
