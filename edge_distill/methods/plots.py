"""PNG plots of SIKeD iterations / FDD rounds for the run report (matplotlib, Agg backend), plus a
markdown table of the same records."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_distill.io import make_dirs

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    make_dirs(path.parent)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _stacked(ax: Any, steps: list[int], series: dict[str, list[float]]) -> None:
    bottom = [0.0] * len(steps)
    for name, values in sorted(series.items()):
        ax.bar(steps, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if series:
        ax.legend(fontsize=8)


def write_plots(method: str, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Dev accuracy (overall + per strategy), α, student strategy mix and data composition per step."""
    if not records:
        return []
    plt = _pyplot()
    unit = "iteration" if method == "siked" else "round"
    steps = list(range(len(records)))
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, [r["dev"]["accuracy"] for r in records], "o-", label="all", linewidth=2)
    strategies = sorted({s for r in records for s in r["dev"].get("per_strategy", {})})
    for s in strategies:
        ax.plot(
            steps, [r["dev"].get("per_strategy", {}).get(s, float("nan")) for r in records], "o--", label=s
        )
    ax.set(xlabel=unit, ylabel="dev accuracy", title=f"{method}: dev accuracy", xticks=steps)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / f"{method}_dev_accuracy.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, [r.get("alpha") if r.get("alpha") is not None else float("nan") for r in records], "o-")
    ax.set(
        xlabel=unit,
        ylabel="α = |LLM| / (|LLM| + |student|)",
        ylim=(0, 1.05),
        title=f"{method}: mixing rate",
        xticks=steps,
    )
    paths.append(_save(fig, out_dir / f"{method}_alpha.png"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    keys = sorted({k for r in records for k in r.get("composition", {}).get("by_source_strategy", {})})
    _stacked(
        ax,
        steps,
        {
            k: [r.get("composition", {}).get("by_source_strategy", {}).get(k, 0) for r in records]
            for k in keys
        },
    )
    ax.set(xlabel=unit, ylabel="training samples", title=f"{method}: data composition", xticks=steps)
    paths.append(_save(fig, out_dir / f"{method}_composition.png"))

    mixes = [r.get("student_strategy_mix") or {} for r in records]
    if any(mixes):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        names = sorted({k for m in mixes for k in m})
        _stacked(ax, steps, {k: [m.get(k, 0.0) for m in mixes] for k in names})
        ax.set(
            xlabel=unit,
            ylabel="share of student samples",
            ylim=(0, 1.05),
            xticks=steps,
            title=f"{method}: strategy the student chose",
        )
        paths.append(_save(fig, out_dir / f"{method}_strategy_mix.png"))
    log.info("wrote %d %s plots to %s", len(paths), method, out_dir)
    return paths


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def records_markdown(
    method: str, records: list[dict[str, Any]], best: int, plots: list[Path], rel_to: Path
) -> str:
    """A markdown section for report.md: one row per iteration/round, best marked, plots linked."""
    unit = "iteration" if method == "siked" else "round"
    lines = [f"### {method.upper()} ({len(records)} {unit}s, best: {best} on dev)", ""]
    if method == "siked":
        lines += [
            "| iter | dev acc | per strategy | α | train | by source | student mix |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(records):
            per = ", ".join(f"{s} {_fmt(a)}" for s, a in sorted(r["dev"].get("per_strategy", {}).items()))
            mix = ", ".join(
                f"{s} {_fmt(v)}" for s, v in sorted((r.get("student_strategy_mix") or {}).items())
            )
            src = ", ".join(
                f"{s} {n}" for s, n in sorted(r.get("composition", {}).get("by_source", {}).items())
            )
            mark = " **best**" if i == best else ""
            lines.append(
                f"| {i}{mark} | {_fmt(r['dev']['accuracy'])} | {per} | {_fmt(r.get('alpha'))} | "
                f"{r.get('train_size')} | {src} | {mix} |"
            )
    else:
        lines += [
            "| round | dev acc | easy/hard | requested | generated | verified | dropped | train |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(records):
            dropped = ", ".join(f"{k} {v}" for k, v in (r.get("dropped") or {}).items() if v)
            mark = " **best**" if i == best else ""
            lines.append(
                f"| {i}{mark} | {_fmt(r['dev']['accuracy'])} | {r.get('easy', '–')}/{r.get('hard', '–')} | "
                f"{r.get('requested', '–')} | {r.get('generated', '–')} | {r.get('verified', '–')} | "
                f"{dropped or '–'} | {r.get('train_size')} |"
            )
    lines.append("")
    for p in plots:
        rel = p.relative_to(rel_to) if p.is_relative_to(rel_to) else p
        lines.append(f"![{p.stem}]({rel})")
    return "\n".join(lines) + "\n"
