"""Bench outputs: the `BenchReport` record, a markdown table per (package x profile), one JSON file, one PNG
chart (matplotlib Agg, imported only when the chart is drawn so `edge-distill profiles` stays light).

`bench` builds the records and imports this module; this module never imports `bench` back.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device_profiles import gate
from device_profiles.accuracy import AccuracyResult
from device_profiles.bandwidth import HostHardware
from device_profiles.estimate import Figures
from device_profiles.loader import Budget
from device_profiles.worker import RuntimeMeasurement
from edge_distill.io import atomic_path, make_dirs, write_json, write_text

log = logging.getLogger(__name__)


@dataclass
class BenchReport:
    package: str
    package_name: str
    format: str
    quant: str
    profile: str
    profile_file: str
    profile_format: str
    budget: Budget
    weights_bytes: int
    measurement: RuntimeMeasurement
    host: HostHardware
    figures: Figures
    accuracy: AccuracyResult | None
    gates: list[gate.GateLine]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    quantization: dict[str, Any] | None = None  # the manifest's report: bits/weight, type mix, LM-head type

    @property
    def passed(self) -> bool:
        return gate.passed(self.gates)

    @property
    def preferred_format(self) -> bool:
        return self.format == self.profile_format

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package, "package_name": self.package_name, "format": self.format, "quant": self.quant,
            "profile": self.profile, "profile_file": self.profile_file, "basis": self.figures.basis,
            "passed": self.passed, "preferred_format": self.preferred_format,
            "budget": self.budget.model_dump(), "figures": self.figures.to_dict(),
            "measurement": asdict(self.measurement), "host": asdict(self.host),
            "accuracy": self.accuracy.summary() if self.accuracy else None,
            "gates": [g.to_dict() for g in self.gates], "weights_bytes": self.weights_bytes, "created": self.created,
            "quantization": self.quantization,
        }  # fmt: skip


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    s = f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{s} {unit}".strip()


def quantization_line(quant: str, q: dict[str, Any] | None) -> str:
    """`weights q4_k_m: 6.19 bpw (Q5_0 58%, ...), LM head Q8_0` from a manifest's quantization report."""
    if not q:
        return "weights: quantization not recorded in the manifest (exported before the report existed)"
    from exporters.quantize import summary_line

    return f"weights {summary_line(quant, q)}"


def table(r: BenchReport) -> str:
    """Markdown: headline numbers, then one row per budget line with pass/fail."""
    m, f, a = r.measurement, r.figures, r.accuracy
    label = f.basis.upper()
    lines = [
        f"### {r.package_name} on {r.profile} — {'PASS' if r.passed else 'FAIL'} ({label})",
        "",
        f"- {f.note}",
        f"- {quantization_line(r.quant, r.quantization)}",
        f"- runtime {m.runtime}, {m.threads} threads, prompt {m.prompt_tokens} tokens, {m.new_tokens} new tokens, "
        f"{m.repetitions} repetitions after warm-up ({m.warmup_s:.2f}s), load {m.load_s:.2f}s",
        f"- host measurement: decode {m.decode_tok_s.median:.1f} tok/s (min {m.decode_tok_s.min:.1f}, max "
        f"{m.decode_tok_s.max:.1f}), prefill {m.prefill_tok_s.median:.1f} tok/s, TTFT {m.ttft_s.median:.3f}s "
        f"(min {m.ttft_s.min:.3f}, max {m.ttft_s.max:.3f}), peak RSS {m.peak_rss_mb:.0f} MiB "
        f"(interpreter before load {m.baseline_rss_mb:.0f} MiB)",
        f"- {label.lower()} for {r.profile}: decode {f.decode_tok_s:.1f} tok/s = {100 * f.roofline_fraction:.0f}% of "
        f"the bandwidth roofline {f.roofline_tok_s:.0f} tok/s ({f.bandwidth_gbs:g} GB/s / "
        f"{r.weights_bytes / 2**20:.1f} MiB weights per token)",
    ]
    if f.assumptions:
        lines.append("- assumptions of this estimate:")
        lines += [f"  - {x}" for x in f.assumptions]
    if a is not None:
        src = (
            "not measured on these problems"
            if a.source_accuracy is None
            else f"{a.source_accuracy:.3f} on the same {a.source_n} problems"
        )
        lines.append(
            f"- accuracy {a.accuracy:.3f} ({a.correct}/{a.n}, 95% CI {a.ci_low:.3f}–{a.ci_high:.3f}); "
            f"source model {src}; by strategy "
            + ", ".join(f"{k} {v['correct']}/{v['n']}" for k, v in a.per_strategy.items())
        )
    if not r.preferred_format:
        lines.append(f"- note: {r.profile} prefers {r.profile_format}; this package is {r.format}")
    lines += ["", "| budget | value | limit | basis | status |", "|---|---|---|---|---|"]
    for g in r.gates:
        status = {"pass": "pass", "fail": "**FAIL**"}.get(g.status, g.status)
        lines.append(
            f"| {g.name} | {_fmt(g.value, g.unit)} | {_fmt(g.limit, g.unit)} | {g.basis} | {status} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(reports: list[BenchReport], out_dir: Path, stem: str = "bench") -> dict[str, Path]:
    """bench.md, bench.json (+ predictions JSONL per package) and bench.png in `out_dir`."""
    make_dirs(out_dir)
    paths = {"md": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json", "png": out_dir / f"{stem}.png"}
    md = "\n".join(table(r) for r in reports)
    write_text(paths["md"], f"# Device bench\n\n{md}")
    write_json(
        paths["json"],
        {"all_passed": all(r.passed for r in reports), "reports": [r.to_dict() for r in reports]},
    )
    plot(reports, paths["png"])
    log.info("bench report: %s", paths["md"])
    return paths


def _bar(ax: Any, labels: list[str], values: list[float], limits: list[float | None], bases: list[str], title: str,
         higher_is_better: bool) -> None:  # fmt: skip
    xs = range(len(values))
    colors = []
    for v, lim in zip(values, limits, strict=True):
        ok = lim is None or (v >= lim if higher_is_better else v <= lim)
        colors.append("tab:green" if ok else "tab:red")
    bars = ax.bar(xs, values, color=colors)
    for bar, basis in zip(bars, bases, strict=True):
        if basis == "estimated":
            bar.set_hatch("//")
            bar.set_alpha(0.7)
    for x, lim in zip(xs, limits, strict=True):
        if lim is not None:
            ax.hlines(lim, x - 0.4, x + 0.4, colors="black", linestyles="--")
    ax.set_title(title + (" (≥ budget)" if higher_is_better else " (≤ budget)"), fontsize=9)
    ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)


def plot(reports: list[BenchReport], path: Path) -> None:
    """Latency, memory and accuracy against the budget; hatched bars are estimates, dashed lines budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.package_name}\n{r.profile}" for r in reports]
    bases = [r.figures.basis for r in reports]
    b = [r.budget for r in reports]
    fig, grid = plt.subplots(2, 2, figsize=(max(10.0, 0.8 * len(reports) + 5), 8.5))
    axes = grid.ravel()
    _bar(axes[0], labels, [r.figures.decode_tok_s for r in reports], [x.min_decode_tok_s for x in b], bases,
         "decode tok/s", True)  # fmt: skip
    _bar(
        axes[1],
        labels,
        [r.figures.ttft_s for r in reports],
        [x.max_ttft_s for x in b],
        bases,
        "TTFT s",
        False,
    )
    _bar(axes[2], labels, [r.figures.peak_rss_mb for r in reports], [x.max_peak_rss_mb for x in b], bases,
         "peak RSS MiB", False)  # fmt: skip
    accs = [r.accuracy.accuracy if r.accuracy else 0.0 for r in reports]
    _bar(axes[3], labels, accs, [x.min_accuracy for x in b], ["measured"] * len(reports), "accuracy", True)
    for i, r in enumerate(reports):
        if r.accuracy is not None:
            a = r.accuracy
            axes[3].errorbar(i, a.accuracy, yerr=[[a.accuracy - a.ci_low], [a.ci_high - a.accuracy]], fmt="none",
                             ecolor="black", capsize=3)  # fmt: skip
    fig.suptitle("edge-distill device bench (hatched = estimated, dashed = budget)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
