"""Do SIKeD, FDD, CasCoD and EDIT beat plain CoT distillation on the same student? One command, one table.

Every arm is an ordinary `edge-distill run` directory built from ONE base config (same data split, same
recorded/live teacher samples, same student, same LoRA settings, same decoding); only the arm's keys differ:

| arm       | teacher strategies | what changes                                                            |
|-----------|--------------------|-------------------------------------------------------------------------|
| untrained | -                  | the student before training, decoded like the SFT arms                  |
| sft-cot   | cot                | plain SFT on CoT rationales: the REFERENCE every arm is paired against  |
| sft-all   | cot, l2m, pot      | plain SFT on all three strategies                                       |
| cascod    | cot                | CasCoD's rationale -> answer objective (two-stage decoding)             |
| edit      | cot                | EDIT: step 1 is the sft-cot model (`train.reuse_sft`), + key-step step 2 |
| siked     | cot, l2m, pot      | SIKeD: iteration 0 is the sft-all model (`train.reuse_sft`), + self-guided iterations, best on dev |
| fdd       | cot, l2m, pot      | FDD rounds; needs a live teacher (with the recorded one it is skipped, and says so) |

Selection happens on dev only (SIKeD/FDD pick their best step there). The test split is decoded once per arm,
after every arm has finished training: `--phase train` stops before it. Extra eval sets (`--ood FILE ...`,
any shape `data.load_problems` reads) are decoded after test. Each arm is a run dir under `--out`, and every
decode is written next to it, so an interrupted study resumes where it stopped (just run it again).

Output: a table (accuracy, n, Wilson 95 % CI, Δ vs sft-cot with paired bootstrap CI, exact McNemar p, the
power of that test to detect a 5-point difference at this n, wall time) printed and written as JSON + PNG.

    # CPU protocol (2 cores, ~70 min measured; the numbers in docs/study.md; test = the first 500 GSM8K test problems):
    python benchmarks/accuracy_study.py --protocol cpu --gsm8k ../shared/datasets/gsm8k
    # CPU protocol v2 (2 cores, GSM8K first steps derived from the socratic files; docs/study.md, 2 seeds ~2 h):
    python benchmarks/accuracy_study.py --protocol cpu-v2 --gsm8k ../shared/datasets/gsm8k --seeds 0 1
    # GPU protocol (one H100/H200, full GSM8K; see --help for --gsm8k and the device payload):
    python benchmarks/accuracy_study.py --protocol gpu --gsm8k ../shared/datasets/gsm8k
    # any base-config key, for every arm:  --set train.lr=3e-4 --set eval.max_new_tokens=256
    # an extra arm: an arm with its own keys, in its own run dirs, beside the arms already run (they resume):
    python benchmarks/accuracy_study.py --protocol cpu-v2 --gsm8k ../shared/datasets/gsm8k --seeds 0 1 \
        --arms siked --variant siked-pot-first=siked 'siked.priority=[pot,cot,l2m]'
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # run from a checkout without installing

log = logging.getLogger("accuracy_study")

ALL = ["cot", "l2m", "pot"]
REFERENCE = "sft-cot"
DELTA = 0.05  # the difference the protocol is sized to detect (5 accuracy points)


@dataclass(frozen=True)
class Arm:
    name: str
    keys: dict[str, Any] = field(default_factory=dict)  # config overrides (dotted keys)
    reuse: str | None = None  # the arm whose trained model this one starts from (train.reuse_sft)
    live_teacher: bool = False  # needs a teacher that can write new problems (FDD)
    note: str = ""


ARMS: list[Arm] = [
    Arm("untrained", note="no training; decoded like the SFT arms"),
    Arm(REFERENCE, {"teacher.strategies": ["cot"]}, note="reference"),
    Arm("sft-all", {"teacher.strategies": ALL}),
    Arm("cascod", {"teacher.strategies": ["cot"], "train.objective": "cascod"}),
    Arm("edit", {"teacher.strategies": ["cot"], "train.objective": "edit"}, reuse=REFERENCE),
    Arm("siked", {"teacher.strategies": ALL, "methods": ["siked"]}, reuse="sft-all"),
    Arm("fdd", {"teacher.strategies": ALL, "methods": ["fdd"]}, live_teacher=True),
]
ARM_NAMES = [a.name for a in ARMS]

# protocols (base configs, test sizes, derived data) live in study_protocols.py, beside this script
from study_protocols import CPU_V2, DERIVED, PROTOCOLS, TEST_LIMIT, TINY  # noqa: E402, F401 (CPU_V2, TINY: tests)


def parse_variant(spec: list[str], known: list[Arm]) -> Arm:
    """`--variant NAME=ARM KEY=VALUE...`: a new arm NAME, the arm ARM with these config keys on top (it keeps
    ARM's reuse: a SIKeD variant still starts from the sft-all model)."""
    name, sep, of = spec[0].partition("=")
    base = next((a for a in known if a.name == of and a.name != "untrained"), None)
    usage = (
        "expected NAME=ARM KEY=VALUE..., e.g. --variant siked-pot-first=siked 'siked.priority=[pot,cot,l2m]'"
    )
    if not sep or base is None:
        raise SystemExit(f"--variant {' '.join(spec)}: {usage} (ARM: one of {', '.join(ARM_NAMES[1:])})")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", name) or name in {a.name for a in known}:
        raise SystemExit(f"--variant {spec[0]}: NAME must be new, lowercase letters, digits and '-'")
    if len(spec) < 2:
        raise SystemExit(f"--variant {spec[0]}: give at least one KEY=VALUE ({usage})")
    keys = parse_set(spec[1:])
    note = f"{of} with " + ", ".join(f"{k}={v}" for k, v in keys.items())
    return Arm(name, {**base.keys, **keys}, reuse=base.reuse, live_teacher=base.live_teacher, note=note)


# ------------------------------------------------------------------------------------------- config
def set_key(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for k in path:
        tree = tree.setdefault(k, {})
    tree[last] = value


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` (value read as YAML: numbers, lists, null)."""
    import yaml

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def arm_config(base: dict[str, Any], arm: Arm, seed: int, runs: Path, user: dict[str, Any]) -> Any:
    """The arm's full config: base protocol, then the arm's keys, then `--set` keys (for every arm)."""
    from edge_distill.config import config_from_dict

    tree = copy.deepcopy(base)
    for k, v in {**arm.keys, **user}.items():
        set_key(tree, k, v)
    tree.update(name=f"{arm.name}-s{seed}", runs_dir=str(runs), seed=seed)
    tree.setdefault("data", {})["seed"] = seed
    if arm.reuse:
        set_key(tree, "train.reuse_sft", str((runs / f"{arm.reuse}-s{seed}").resolve()))
    return config_from_dict(tree, origin=f"accuracy_study arm {arm.name}")


# ------------------------------------------------------------------------------------------- decoding
def decode_once(cfg: Any, model: Path, problems: list[Any], out_dir: Path, split: str) -> dict[str, Any]:
    """Decode `problems` with the arm's decoding into `out_dir/{split}*` unless that file exists already."""
    from edge_distill import stages
    from edge_distill.types import Judging

    summary_file = out_dir / f"{split}.json"
    if summary_file.is_file():
        return json.loads(summary_file.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    result = stages.evaluate_student(cfg.eval, cfg.train, model, problems, out_dir, split, Judging.of(cfg))
    summary = result.summary() | {"decode_s": round(time.perf_counter() - t0, 1)}
    from edge_distill.io import write_json

    write_json(summary_file, summary)  # adds the wall time to what evaluate_student wrote
    return summary


def correct_of(out_dir: Path, split: str) -> dict[str, bool]:
    from edge_distill.eval import correct_by_id
    from edge_distill.io import read_jsonl

    return correct_by_id(read_jsonl(out_dir / f"{split}_predictions.jsonl"))


# ------------------------------------------------------------------------------------------- the study
def train_phase(
    args: argparse.Namespace, arms: list[Arm], base: dict[str, Any], user: dict[str, Any]
) -> dict:
    """Run every arm's pipeline up to its dev eval (resumable). Returns {arm-seed: state}."""
    from edge_distill.models import resolve_model
    from edge_distill.pipeline import run_pipeline

    runs = args.out / "runs"
    live = user.get("teacher.backend", base["teacher"]["backend"]) != "recorded"
    states: dict[str, Any] = {}
    for seed in args.seeds:
        for arm in arms:
            key = f"{arm.name}-s{seed}"
            if arm.live_teacher and not live:
                states[key] = {"skipped": "needs a live teacher that writes new problems (FDD); the recorded "
                               "teacher only replays GSM8K solutions. Rerun with --set teacher.backend=... "
                               "(http/llamacpp/transformers/vllm) to include it"}  # fmt: skip
                log.warning("%s: skipped (%s)", key, states[key]["skipped"])
                continue
            if arm.name == "untrained":
                cfg = arm_config(base, next(a for a in ARMS if a.name == REFERENCE), seed, runs, user)
                out = args.out / "untrained" / f"s{seed}"
                dev = _dev_problems(args, seed, runs, cfg)
                t0 = time.perf_counter()
                decode_once(cfg, resolve_model(cfg.student.model), dev, out, "dev")
                states[key] = {"cfg": cfg, "dir": out, "model": resolve_model(cfg.student.model),
                               "train_s": 0.0, "dev_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
                continue
            cfg = arm_config(base, arm, seed, runs, user)
            log.info("=== arm %s (seed %d) ===", arm.name, seed)
            t0 = time.perf_counter()
            run = run_pipeline(cfg, resume=True)
            states[key] = {"cfg": cfg, "dir": run.path / "eval", "run": run.path, "builds_on": arm.reuse,
                           "note": arm.note, "phase_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return states


def _dev_problems(args: argparse.Namespace, seed: int, runs: Path, cfg: Any) -> list[Any]:
    """The reference arm's dev split (the untrained arm runs after it, so the data stage has run)."""
    from edge_distill import stages
    from edge_distill.rundir import RunDir

    return stages.load_split(RunDir.open(runs / f"{REFERENCE}-s{seed}"), "dev")


def _stage_walls(run_path: Path) -> dict[str, float]:
    stages_file = run_path / "stages.json"
    data = json.loads(stages_file.read_text(encoding="utf-8")) if stages_file.is_file() else {}
    return {k: float(v.get("wall_s", 0.0)) for k, v in data.items()}


def eval_phase(args: argparse.Namespace, states: dict[str, Any], ood: list[tuple[str, list[Any]]]) -> None:
    """Decode test (once per arm, after all training) and every --ood set; resumable per file."""
    from edge_distill import stages
    from edge_distill.pipeline import final_model_dir
    from edge_distill.rundir import RunDir

    for key, st in states.items():
        if "skipped" in st:
            continue
        cfg = st["cfg"]
        if "run" in st:
            st["model"] = final_model_dir(RunDir.open(st["run"]))
        test = stages.load_test(cfg.data)[: args.test_limit]
        log.info("%s: test (%d problems)", key, len(test))
        decode_once(cfg, st["model"], test, st["dir"], "test")
        for name, problems in ood:
            decode_once(cfg, st["model"], problems, st["dir"], f"ood_{name}")


def difficulty_of(protocol: str, split: str) -> Any:
    """problem -> difficulty bucket: operators in the step for a derived protocol's own splits (its problems
    are one step each), calculator steps of the GSM8K gold solution otherwise (`data.difficulty`)."""
    from edge_distill.data import difficulty

    if protocol in DERIVED and not split.startswith("ood_"):
        from gsm8k_first_step import step_ops

        return lambda p: step_ops(p.solution)
    return difficulty


def split_problems(
    args: argparse.Namespace, states: dict[str, Any], ood: list[tuple[str, list[Any]]]
) -> dict:
    """{split: the problems decoded there} over all seeds (dev differs by seed; ids are the source's)."""
    from edge_distill import stages

    out: dict[str, dict[str, Any]] = {"dev": {}, "test": {}}
    for key, st in states.items():
        if "skipped" in st:
            continue
        seed = int(key.rsplit("-s", 1)[1])
        if (args.out / "runs" / f"{REFERENCE}-s{seed}").is_dir():
            out["dev"].update({p.id: p for p in _dev_problems(args, seed, args.out / "runs", st["cfg"])})
        out["test"].update({p.id: p for p in stages.load_test(st["cfg"].data)[: args.test_limit]})
    for name, problems in ood:
        out[f"ood_{name}"] = {p.id: p for p in problems}
    return out


def by_difficulty(correct: dict[str, bool], problems: dict[str, Any], bucket_of: Any) -> dict[str, Any]:
    """{bucket: {n, correct, accuracy, ci95}} of one decode; problems without a bucket are left out."""
    from edge_distill.stats import wilson_ci

    groups: dict[str, list[bool]] = {}
    for pid, ok in correct.items():
        b = bucket_of(problems[pid]) if pid in problems else None
        if b is not None:
            groups.setdefault(b, []).append(ok)
    return {b: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v), "ci95": list(wilson_ci(sum(v), len(v)))}
            for b, v in sorted(groups.items())}  # fmt: skip


def tabulate(
    args: argparse.Namespace, states: dict[str, Any], sets: list[str], problems: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    from edge_distill.stats import mcnemar_power, paired_comparison, wilson_ci

    rows: list[dict[str, Any]] = []
    for key, st in states.items():
        arm, seed = key.rsplit("-s", 1)
        row: dict[str, Any] = {"arm": arm, "seed": int(seed)}
        if "skipped" in st:
            rows.append(row | {"skipped": st["skipped"]})
            continue
        walls = _stage_walls(st["run"]) if "run" in st else {}
        row["train_s"] = round(walls.get("train", 0.0) + walls.get("methods", 0.0), 1)
        row["builds_on"] = st.get("builds_on")
        if st.get("note"):
            row["note"] = st["note"]
        row["sets"] = {}
        for split in sets:
            f = st["dir"] / f"{split}.json"
            if not f.is_file():
                continue
            s = json.loads(f.read_text(encoding="utf-8"))
            entry = {k: s.get(k) for k in ("accuracy", "n", "correct", "per_strategy")}
            entry["ci95"] = list(wilson_ci(s["correct"], s["n"]))
            entry["decode_s"] = s.get("decode_s")
            entry["by_difficulty"] = by_difficulty(
                correct_of(st["dir"], split), problems.get(split, {}), difficulty_of(args.protocol, split)
            )
            ref = states.get(f"{REFERENCE}-s{seed}")
            if arm != REFERENCE and ref and "skipped" not in ref and (ref["dir"] / f"{split}.json").is_file():
                cmp = paired_comparison(correct_of(ref["dir"], split), correct_of(st["dir"], split))
                disc = (cmp["first_only"] + cmp["second_only"]) / cmp["n"] if cmp["n"] else 0.0
                cmp["discordant_rate"] = disc
                cmp["power_5pt"] = mcnemar_power(
                    cmp["n"], alternative_discordance(disc, cmp["first_accuracy"]), DELTA
                )
                entry["vs_reference"] = cmp
            row["sets"][split] = entry
        row["wall_s"] = round(
            sum(walls.values())
            + sum((e.get("decode_s") or 0.0) for sp, e in row["sets"].items() if sp != "dev"),
            1,
        )
        if arm == "untrained":
            row["wall_s"] = round(sum((e.get("decode_s") or 0.0) for e in row["sets"].values()), 1)
        rows.append(row)
    return {"rows": rows}


def alternative_discordance(observed: float, reference_accuracy: float, delta: float = DELTA) -> float:
    """The discordance the power is computed at: the larger of what was observed and what two arms that
    solve problems independently at the reference's accuracy and `delta` above it would show.

    Near the floor the observed discordance between two weak arms can be smaller than `delta` itself; taking
    it as is would claim almost certain detection (every discordant problem favouring the better arm), which
    is the most optimistic case, not the expected one."""
    p, q = reference_accuracy, min(1.0, reference_accuracy + delta)
    return max(observed, p + q - 2 * p * q)


def design_power(rows: list[dict[str, Any]], split: str, delta: float = DELTA) -> dict[str, Any] | None:
    """What the protocol can detect on `split`: the power of the exact McNemar test for a `delta` gain over
    the reference's measured accuracy at this n (independent arms), and the n that would give 0.8."""
    from edge_distill.stats import mcnemar_power

    ref = next((r for r in rows if r["arm"] == REFERENCE and split in r.get("sets", {})), None)
    if ref is None:
        return None
    n, acc = ref["sets"][split]["n"], ref["sets"][split]["accuracy"]
    pd = alternative_discordance(0.0, acc, delta)
    n80 = next((m for m in range(50, 20001, 50) if mcnemar_power(m, pd, delta) >= 0.8), None)
    return {"n": n, "reference_accuracy": acc, "delta": delta, "discordance": round(pd, 4),
            "power": round(mcnemar_power(n, pd, delta), 3), "n_for_power_0_8": n80}  # fmt: skip


def render(rows: list[dict[str, Any]], sets: list[str], design: dict[str, Any]) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = []
    for split in sets:
        lines += [
            f"\n**{split}** — Δ and p are paired against {REFERENCE} on the same problems; power = chance the exact "
            f"McNemar test detects a {pct(DELTA)}-point difference at this n (at the larger of the observed "
            f"discordance and that of independent arms at {REFERENCE}'s accuracy and 5 points above)\n",
            "| arm | seed | accuracy | n | 95 % CI | Δ vs sft-cot [95 % CI] | McNemar p | power (5 pt) | train s | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if "skipped" in r:
                lines.append(f"| {r['arm']} | {r['seed']} | skipped: {r['skipped']} |  |  |  |  |  |  |  |")
                continue
            e = r["sets"].get(split)
            if e is None:
                continue
            lo, hi = e["ci95"]
            v = e.get("vs_reference")
            cmp = (
                f"{100 * v['delta']:+.1f} [{100 * v['delta_ci95'][0]:+.1f}, {100 * v['delta_ci95'][1]:+.1f}] | "
                f"{v['mcnemar_p']:.3f} | {v['power_5pt']:.2f}"
                if v
                else "— | — | —"
            )
            lines.append(
                f"| {r['arm']} | {r['seed']} | {pct(e['accuracy'])} % ({e['correct']}/{e['n']}) | {e['n']} | "
                f"{pct(lo)}–{pct(hi)} | {cmp} | {r.get('train_s', 0):.0f} | {r.get('wall_s', 0):.0f} |"
            )
        lines += render_difficulty(rows, split)
    for split in sets:
        dp = design.get(split)
        if dp:
            lines.append(f"\n{split}: power to detect a {100 * dp['delta']:.0f}-point gain over {REFERENCE} "
                         f"({100 * dp['reference_accuracy']:.1f} %) at n={dp['n']}: {dp['power']:.2f} "
                         f"(0.8 needs n ≈ {dp['n_for_power_0_8']})")  # fmt: skip
    return "\n".join(lines)


def render_difficulty(rows: list[dict[str, Any]], split: str) -> list[str]:
    """One line per arm: accuracy (correct/n) in each difficulty bucket of `split`."""
    done = [r for r in rows if "skipped" not in r and split in r["sets"]]
    buckets = sorted({b for r in done for b in r["sets"][split].get("by_difficulty", {})})
    if not buckets:
        return []
    lines = [f"\n*{split} by difficulty*\n", "| arm | seed | " + " | ".join(buckets) + " |",
             "|---|---|" + "---|" * len(buckets)]  # fmt: skip
    for r in done:
        d = r["sets"][split]["by_difficulty"]
        cells = [
            f"{100 * d[b]['accuracy']:.1f} % ({d[b]['correct']}/{d[b]['n']})" if b in d else "–"
            for b in buckets
        ]
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict[str, Any]], sets: list[str], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    done = [r for r in rows if "skipped" not in r]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 0.45 * len(done) + 1.5), squeeze=False)
    for ax, split in zip(axes[0], sets, strict=True):
        names, acc, err_lo, err_hi = [], [], [], []
        for r in done:
            e = r["sets"].get(split)
            if e is None:
                continue
            names.append(f"{r['arm']} (s{r['seed']})")
            acc.append(100 * e["accuracy"])
            err_lo.append(100 * (e["accuracy"] - e["ci95"][0]))
            err_hi.append(100 * (e["ci95"][1] - e["accuracy"]))
        ax.barh(names, acc, xerr=[err_lo, err_hi], color="#4c72b0", capsize=3)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy % (Wilson 95 % CI)")
        ax.set_title(f"{split} (n={done[0]['sets'].get(split, {}).get('n', '?') if done else '?'})")
    fig.tight_layout()
    from edge_distill.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def machine() -> dict[str, Any]:
    import torch
    import transformers

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    ap.add_argument("--arms", nargs="*", default=ARM_NAMES, choices=ARM_NAMES, metavar="ARM",
                    help=f"subset of {', '.join(ARM_NAMES)} ({REFERENCE} is always run: it is the reference)")  # fmt: skip
    ap.add_argument(
        "--seeds", nargs="*", type=int, default=[0], help="each seed: its own dev split and training"
    )
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="base-config key, every arm"
    )
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar="SPEC",
                    help="NAME=ARM KEY=VALUE...: an extra arm NAME, ARM with these config keys, in its own run "
                         "dirs (e.g. --variant siked-pot-first=siked 'siked.priority=[pot,cot,l2m]')")  # fmt: skip
    ap.add_argument("--ood", nargs="*", default=[], metavar="FILE", help="extra eval sets (any loader shape)")
    ap.add_argument("--gsm8k", type=Path, help="dir with full GSM8K train.jsonl/test.jsonl (gpu protocol; "
                    "cpu: its test gives the 500 problems the protocol is sized for)")  # fmt: skip
    ap.add_argument("--test-limit", type=int, metavar="N",
                    help="the first N test problems (file order); default: cpu 500, gpu/tiny all")  # fmt: skip
    ap.add_argument(
        "--payload", type=Path, help="a study_payload.py payload: student GGUF + GSM8K (offline GPU)"
    )
    ap.add_argument(
        "--phase", choices=["train", "all"], default="all", help="train: stop before reading test"
    )
    ap.add_argument(
        "--out", type=Path, help="study dir (run dirs + decodes); default runs/accuracy-study-<protocol>"
    )
    ap.add_argument(
        "--json", type=Path, help="result JSON; default benchmarks/results/accuracy_study_<protocol>.json"
    )
    args = ap.parse_args(argv)

    from edge_distill.console import setup_logging

    setup_logging()
    args.out = args.out or Path("runs") / f"accuracy-study-{args.protocol}"
    args.json = args.json or ROOT / "benchmarks" / "results" / f"accuracy_study_{args.protocol}.json"
    base = copy.deepcopy(PROTOCOLS[args.protocol])
    if args.payload:  # the same SmolLM2 GGUF the CPU protocol dequantizes, brought along in pieces
        from study_payload import assemble

        from edge_distill.models import SMOLLM2_CACHE_NAME, cache_root, convert_smollm2

        got = assemble(args.payload)
        base["student"]["model"] = str(
            convert_smollm2(cache_root() / "models" / SMOLLM2_CACHE_NAME, got["gguf"])
        )
        args.gsm8k = got["gsm8k"]
    if args.protocol in DERIVED:
        if not args.gsm8k:
            raise SystemExit(f"--protocol {args.protocol} derives its problems from GSM8K's socratic files: pass "
                             "--gsm8k DIR (train_socratic.jsonl, test_socratic.jsonl), e.g. ../shared/datasets/gsm8k")  # fmt: skip
        from gsm8k_first_step import derive

        derive(args.gsm8k, args.out / "data")
        args.gsm8k = args.out / "data"
    if args.gsm8k:
        base["data"].update(train=str((args.gsm8k / "train.jsonl").resolve()),
                            test=str((args.gsm8k / "test.jsonl").resolve()))  # fmt: skip
    elif args.protocol == "gpu":
        raise SystemExit("--protocol gpu reads the full GSM8K: pass --gsm8k DIR (train.jsonl, test.jsonl)")
    elif args.protocol == "cpu":
        log.warning("--protocol cpu without --gsm8k DIR: test is the shipped sample (250 problems), not the 500 "
                    "the protocol is sized for; the table's design-power line says what it can detect")  # fmt: skip
    if args.test_limit is None:
        args.test_limit = TEST_LIMIT[args.protocol]
    elif args.test_limit < 1:
        raise SystemExit(f"--test-limit {args.test_limit}: must be >= 1")
    user = parse_set(args.set)
    known = list(ARMS)
    for spec in args.variant:
        known.append(parse_variant(spec, known))
    wanted = set(args.arms) | {REFERENCE} | {a.name for a in known[len(ARMS) :]}
    if "untrained" in wanted or any(a.reuse for a in known if a.name in wanted):
        wanted |= {a.reuse for a in known if a.name in wanted and a.reuse}
    arms = [a for a in known if a.name in wanted]
    # the untrained arm reads the reference's dev split: run it after the reference
    arms.sort(key=lambda a: (a.name == "untrained", known.index(a)))

    from edge_distill import stages
    from edge_distill.config import DataConfig

    ood = []
    for f in args.ood:
        problems = stages.load_problems(DataConfig(train=f, test=f), "test")
        ood.append((Path(f).stem.replace(".", "_"), problems))
    t0 = time.time()
    setup = {"protocol": args.protocol, "base_config": base, "set": user, "seeds": args.seeds,
             "arms": [a.name for a in arms], "reference": REFERENCE, "delta": DELTA, "test_limit": args.test_limit,
             "ood": {n: len(p) for n, p in ood}, "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    states = train_phase(args, arms, base, user)
    sets = ["dev"]
    if args.phase == "all":
        eval_phase(args, states, ood)
        sets += ["test", *(f"ood_{n}" for n, _ in ood)]
    result = {"setup": setup, **tabulate(args, states, sets, split_problems(args, states, ood))}
    result["setup"]["design_power"] = {s: design_power(result["rows"], s) for s in sets}
    result["setup"].update(wall_s=round(time.time() - t0, 1), loadavg_end=os.getloadavg())
    table = render(result["rows"], sets, result["setup"]["design_power"])
    result["table_md"] = table
    from edge_distill.io import write_json

    write_json(args.json, result)
    png = plot(result["rows"], sets, args.json.with_suffix(".png"))
    print(table)
    print(f"\nwrote {args.json}" + (f" and {png}" if png else "") + f"; run dirs under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
