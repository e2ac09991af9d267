"""Learning curve of the embedded student: dev accuracy against training examples seen.

For each arm (a strategy set: cot / pot / all, and LoRA or full fine-tuning) the student is trained once on
the recorded teacher's samples (GSM8K reference solutions: CoT, socratic L2M, PoT from the calculator
annotations) with a constant learning rate after a short warm-up, and a copy of the model is saved when it
has seen each budget of examples; every copy, and the untrained student (budget 0), is decoded greedily on
the same dev problems — carved from train exactly as a run carves them (`data.split_dev`), never test —
and judged by the project's scorer. Reported per point: accuracy with its Wilson 95 % CI overall and by
difficulty (calculator steps in the GSM8K gold solution: 1-2, 3-4, 5+), format adherence
(`strategies.well_formed`: one tag and a well-formed body), the exact McNemar p against the untrained
student on the same problems, and training/decoding seconds.

    # the quickstart's source, 200 dev problems, every arm, budgets up to 1,024 examples (~1 h per arm):
    python benchmarks/learning_curve.py
    # one arm, a few budgets:
    python benchmarks/learning_curve.py --arms pot:full --budgets 64,128,256

Points are cached under --workdir (a rerun only computes what is missing); results go to
benchmarks/results/learning_curve.json and .png (--out).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("learning_curve")

LRS = {"lora": 5e-4, "full": 1e-4}


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
    isa = (
        "AMX"
        if "amx_tile" in flags
        else "AVX-512"
        if "avx512f" in flags
        else "AVX2"
        if "avx2" in flags
        else "?"
    )
    return f"{name}, {os.cpu_count()} cores, {isa}"


class Arm(NamedTuple):
    strategies: str  # cot | l2m | pot | all
    finetune: str  # lora | full
    draws: str = "fast"  # LoRA dropout draws (train.lora.dropout_draws)
    top: int | None = None  # LoRA on the top N decoder layers only (train.lora.top_layers)

    @property
    def name(self) -> str:
        """`STRATEGIES:FINETUNE[:torch][:topN]`, as --arms spells it."""
        return (
            self.base + (":torch" if self.draws == "torch" else "") + (f":top{self.top}" if self.top else "")
        )

    @property
    def base(self) -> str:
        """The arm a LoRA variant is paired with: the same strategies and finetune, default options."""
        return f"{self.strategies}:{self.finetune}"

    @property
    def dir_suffix(self) -> str:
        return ("-torch-draws" if self.draws == "torch" else "") + (f"-top{self.top}" if self.top else "")


def parse_arm(text: str) -> Arm:
    """STRATEGIES:FINETUNE[:torch][:topN]: `torch` = LoRA with nn.Dropout's own draws, `topN` = LoRA on the
    top N decoder layers only (both LoRA only)."""
    parts = text.split(":")
    strategies, finetune, opts = parts[0], parts[1] if len(parts) > 1 else "", parts[2:]
    draws = "torch" if "torch" in opts else "fast"
    tops = [o for o in opts if o.startswith("top") and o[3:].isdigit() and int(o[3:]) > 0]
    ok = (strategies in ("cot", "l2m", "pot", "all") and finetune in ("lora", "full")
          and len(opts) == len(set(opts)) == (draws == "torch") + len(tops) and len(tops) <= 1
          and (not opts or finetune == "lora"))  # fmt: skip
    if not ok:
        raise SystemExit(f"--arms: {text!r} is not STRATEGIES:FINETUNE[:torch][:topN] (cot|l2m|pot|all : "
                         "lora|full; LoRA only: torch = nn.Dropout's own draws, topN = the top N layers)")  # fmt: skip
    return Arm(strategies, finetune, draws, int(tops[0][3:]) if tops else None)


def arm_strategies(name: str) -> list[str]:
    return ["cot", "l2m", "pot"] if name == "all" else [name]


def teacher_samples(pool: list[Any], strategies: list[str]) -> list[Any]:
    """The recorded teacher's correct samples for `pool`, problem by problem in pool order (so the first N
    examples cover the first problems with every strategy of the arm)."""
    from edge_distill.teach import filter_samples, teach
    from edge_distill.teachers.recorded import RecordedTeacher

    samples, _ = teach(RecordedTeacher(), pool, strategies, 1, progress=False)
    kept = filter_samples(samples, keep="one_per_strategy")
    rank = {p.id: i for i, p in enumerate(pool)}
    order = {s: i for i, s in enumerate(strategies)}
    return sorted(kept, key=lambda s: (rank[s.problem_id], order[s.strategy.value]))


def train_arm(model_dir: Path, samples: list[Any], finetune: str, budgets: list[int], out: Path,
              args: argparse.Namespace, horizon: int, draws: str = "fast", top: int | None = None) -> dict[int, tuple[Path, float]]:  # fmt: skip
    """Train once up to max(budgets) examples; save a copy at each budget. {budget: (dir, train seconds)}.

    The data always holds `horizon` (the largest budget of the curve) examples, so the seeded shuffle is
    the same whichever budgets are trained now: a copy at budget b is the same model in every run."""
    from transformers import TrainerCallback

    from edge_distill.config import LoraConfig, TrainConfig
    from edge_distill.models import load_tokenizer
    from edge_distill.objectives.sft import build_sft_examples
    from edge_distill.training import train

    tokenizer = load_tokenizer(model_dir)
    examples = build_sft_examples(tokenizer, samples, args.max_length)
    need = max(horizon, *budgets)
    if len(examples) < need:  # more budget than data: further epochs, in the same order
        examples = [examples[i % len(examples)] for i in range(need)]
    examples = examples[:need]
    at_step = {math.ceil(b / args.batch): b for b in budgets}
    saved: dict[int, tuple[Path, float]] = {}
    t0 = time.time()

    class SaveAt(TrainerCallback):
        def on_step_end(self, a: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            budget = at_step.get(state.global_step)
            if budget is None:
                return
            d = out / f"budget-{budget}"
            model.save_pretrained(d)
            tokenizer.save_pretrained(d)
            saved[budget] = (d, time.time() - t0)

    cfg = TrainConfig(
        finetune=finetune, lr=args.lr or LRS[finetune], batch_size=args.batch, epochs=1,
        max_steps=max(at_step), max_length=args.max_length, warmup_steps=args.warmup, scheduler="constant",
        save_steps=10**6, logging_steps=5, packing=args.packing, precision=args.precision,
        lora=LoraConfig(dropout_draws=draws, top_layers=top),
    )  # fmt: skip
    train(model_dir, examples, out / "train", cfg, seed=args.seed, resume=False, callbacks=[SaveAt()])
    return saved


def evaluate_point(model_dir: Path, dev: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from edge_distill.eval import evaluate
    from edge_distill.fastpath import inference_dtype

    t0 = time.time()
    result = evaluate(
        model_dir, dev, strategy="auto", batch_size=args.eval_batch, max_new_tokens=args.max_new_tokens,
        dtype=inference_dtype(args.precision),
    )  # fmt: skip
    return {"predictions": result.predictions, "decode_s": round(time.time() - t0, 1)}


def summarize_point(
    preds: list[dict[str, Any]], base: list[dict[str, Any]], dev: list[Any]
) -> dict[str, Any]:
    from edge_distill.data import DIFFICULTY_BUCKETS, difficulty
    from edge_distill.stats import mcnemar_exact, wilson_ci
    from edge_distill.strategies import well_formed

    bucket = {p.id: difficulty(p) for p in dev}

    def acc(rows: list[dict[str, Any]]) -> dict[str, Any]:
        k, n = sum(bool(r["correct"]) for r in rows), len(rows)
        return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": list(wilson_ci(k, n))}

    base_ok = {r["id"]: bool(r["correct"]) for r in base}
    wins = sum(1 for r in preds if r["correct"] and not base_ok[r["id"]])
    losses = sum(1 for r in preds if not r["correct"] and base_ok[r["id"]])
    return {
        **acc(preds),
        "by_difficulty": {b: acc([r for r in preds if bucket[r["id"]] == b]) for b in DIFFICULTY_BUCKETS},
        "well_formed": sum(well_formed(r["raw"]) for r in preds) / len(preds),
        "strategy_mix": {
            s: sum(r["strategy"] == s for r in preds) for s in sorted({r["strategy"] for r in preds})
        },
        "vs_untrained": {"wins": wins, "losses": losses, "mcnemar_p": mcnemar_exact(wins, losses)},
    }


def cached(path: Path, compute: Any) -> Any:
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return value


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    base = result["untrained"]
    for arm, pts in result["arms"].items():
        xs = [0] + [p["budget"] for p in pts]
        for ax, key in zip(axes, ("accuracy", "easy", "well_formed"), strict=True):
            if key == "accuracy":
                ys = [base["accuracy"]] + [p["accuracy"] for p in pts]
            elif key == "easy":
                ys = [base["by_difficulty"]["1-2"]["accuracy"]] + [
                    p["by_difficulty"]["1-2"]["accuracy"] for p in pts
                ]
            else:
                ys = [base["well_formed"]] + [p["well_formed"] for p in pts]
            line = ax.plot(xs, [100 * y for y in ys], marker="o", label=arm)[0]
            if key == "accuracy":
                lo = [base["ci95"][0]] + [p["ci95"][0] for p in pts]
                hi = [base["ci95"][1]] + [p["ci95"][1] for p in pts]
                ax.fill_between(
                    xs, [100 * v for v in lo], [100 * v for v in hi], color=line.get_color(), alpha=0.1
                )
    titles = (f"dev accuracy (n={base['n']}, Wilson 95 % CI)", f"dev accuracy, 1-2 steps (n={base['by_difficulty']['1-2']['n']})",
              "well-formed outputs")  # fmt: skip
    ticks = [0, *result["budgets"]]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("symlog", linthresh=min(result["budgets"]), linscale=0.5)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        f"SmolLM2-135M-Instruct on GSM8K dev (carved from train), greedy, {result['cpu']}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(result: dict[str, Any]) -> str:
    rows = ["| arm | examples | dev acc | 95 % CI | 1-2 steps | 3-4 | 5+ | well-formed | W/L vs untrained | McNemar p | train s | decode s |",
            "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]  # fmt: skip

    def row(arm: str, p: dict[str, Any]) -> str:
        d = p["by_difficulty"]
        cell = lambda b: f"{d[b]['correct']}/{d[b]['n']}"  # noqa: E731
        v = p.get("vs_untrained", {})
        return (f"| {arm} | {p.get('budget', 0)} | {100 * p['accuracy']:.1f} % ({p['correct']}/{p['n']}) | "
                f"{100 * p['ci95'][0]:.1f}–{100 * p['ci95'][1]:.1f} | {cell('1-2')} | {cell('3-4')} | {cell('5+')} | "
                f"{100 * p['well_formed']:.0f} % | {v.get('wins', '-')}/{v.get('losses', '-')} | "
                f"{v.get('mcnemar_p', float('nan')):.3g} | {p.get('train_s', 0):.0f} | {p.get('decode_s', 0):.0f} |")  # fmt: skip

    rows.append(row("untrained", result["untrained"]))
    for arm, pts in result["arms"].items():
        rows += [row(arm, p) for p in pts]
    return "\n".join(rows)


def variants_paired(correct: dict[str, dict[int, dict[str, bool]]]) -> dict[str, list[dict[str, Any]]]:
    """Each LoRA variant arm (`X:lora:torch`, `X:lora:topN`, ...) against its base arm `X:lora`, per budget,
    on the same dev problems: what the option changes in accuracy (paired: exact McNemar, bootstrap CI of
    base − variant; `first` = the variant, `second` = the base)."""
    from edge_distill.stats import paired_comparison

    out = {}
    for name, by_budget in correct.items():
        arm = parse_arm(name)
        base = correct.get(arm.base) if name != arm.base else None
        if base:
            out[name] = [{"budget": b, **paired_comparison(by_budget[b], base[b])}
                         for b in sorted(by_budget) if b in base]  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="builtin:gsm8k-sample", help="train source (dev is carved from it)")
    ap.add_argument("--dev-size", type=int, default=200)
    ap.add_argument("--arms", default="cot:lora,pot:lora,all:lora,cot:full,pot:full,all:full")
    ap.add_argument("--budgets", default="64,128,256,512,1024", help="examples seen (0 = untrained, always)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help=f"default per finetune: {LRS}")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir", default="runs/learning-curve")
    ap.add_argument("--out", default="benchmarks/results/learning_curve")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from edge_distill.data import load_problems, split_dev
    from edge_distill.models import resolve_model

    torch.set_num_threads(args.threads)
    arms = [parse_arm(a) for a in args.arms.split(",") if a]
    budgets = sorted({int(b) for b in args.budgets.split(",") if int(b) > 0})
    problems = load_problems(args.train)
    pool, dev = split_dev(problems, args.dev_size, seed=0)
    random.Random(args.seed).shuffle(pool)
    model_dir = resolve_model("builtin:smollm2-135m")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"dev{args.dev_size}-t{args.max_new_tokens}"
    base = cached(work / f"untrained-{tag}.json", lambda: evaluate_point(model_dir, dev, args))
    result: dict[str, Any] = {
        "cpu": _cpu(), "train_source": args.train, "dev_size": len(dev), "budgets": budgets,
        "settings": {k: v for k, v in vars(args).items() if k not in ("arms", "budgets", "workdir", "out")},
        "untrained": {**summarize_point(base["predictions"], base["predictions"], dev), "decode_s": base["decode_s"]},
        "arms": {},
    }  # fmt: skip
    result["untrained"].pop("vs_untrained")
    correct: dict[str, dict[int, dict[str, bool]]] = {}  # arm -> budget -> {problem id: correct}
    for spec in arms:
        arm, strategies, finetune = spec.name, spec.strategies, spec.finetune
        arm_dir = work / f"{strategies}-{finetune}-b{args.batch}-s{args.seed}{spec.dir_suffix}"
        arm_dir.mkdir(parents=True, exist_ok=True)
        trained_file = arm_dir / "trained.json"
        done = json.loads(trained_file.read_text()) if trained_file.is_file() else {}
        missing = [b for b in budgets if str(b) not in done]
        if missing:
            # The constant learning rate after a fixed warm-up and the seeded sample order do not depend on
            # the largest budget, so training up to the largest *missing* one gives the same copies a full
            # run would: a new budget costs only its own steps.
            samples = teacher_samples(pool, arm_strategies(strategies))
            log.info("%s: %d teacher samples; training up to %d examples", arm, len(samples), max(missing))
            saved = train_arm(
                model_dir, samples, finetune, missing, arm_dir, args, max(budgets), spec.draws, spec.top
            )
            done |= {str(b): {"dir": d.name, "train_s": round(s, 1)} for b, (d, s) in saved.items()}
            trained_file.write_text(json.dumps(done))
        pts = []
        for b in budgets:
            info = done[str(b)]
            got = cached(
                arm_dir / f"eval-{tag}-budget-{b}.json",
                lambda d=arm_dir / info["dir"]: evaluate_point(d, dev, args),
            )
            pt = {"budget": b, **summarize_point(got["predictions"], base["predictions"], dev),
                  "train_s": info["train_s"], "decode_s": got["decode_s"]}  # fmt: skip
            log.info(
                "%s @ %d: %d/%d, well-formed %.0f %%", arm, b, pt["correct"], pt["n"], 100 * pt["well_formed"]
            )
            pts.append(pt)
            correct.setdefault(arm, {})[b] = {r["id"]: bool(r["correct"]) for r in got["predictions"]}
        result["arms"][arm] = pts
        result["variants_paired"] = variants_paired(correct)
        _write(result, Path(args.out))
    _write(result, Path(args.out))
    print(table(result))
    return 0


def _write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out.with_suffix(".json"))
    plot(result, out.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
