"""Dev accuracy of sft vs cascod vs edit on one student with the recorded GSM8K teacher (CPU-sized).

Same data, same LoRA settings, same seed for every objective; only `train.objective` changes. EDIT's step 1
is SFT on the right CoTs, which with offline twins (no AHP) is exactly the SFT run's data, so the SFT model
is reused as EDIT's step-1 model (`train_with_objective(..., step1_model=...)`) instead of training it twice.

    OMP_NUM_THREADS=1 python benchmarks/compare_objectives.py --train 200 --dev 100 --out runs/compare
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from edge_distill.config import TrainConfig
from edge_distill.data import load_problems, split_dev
from edge_distill.eval import evaluate, write_eval
from edge_distill.io import write_json
from edge_distill.models import resolve_model
from edge_distill.objectives.build import generate_fn_for, train_with_objective
from edge_distill.strategies import judge, split_final_answer
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Problem, Sample, Strategy

log = logging.getLogger("compare_objectives")


def teacher_samples(problems: list[Problem]) -> list[Sample]:
    """Correct CoT samples from the recorded teacher (gold GSM8K solutions)."""
    out = []
    for p, comps in zip(problems, RecordedTeacher().generate(problems, Strategy.COT, 1), strict=True):
        for c in comps:
            if c.finish_reason != "stop":
                continue
            pred, ok = judge(Strategy.COT, c.text, p.answer)
            if ok:
                rationale = split_final_answer(c.text)[0]
                out.append(
                    Sample(
                        p.id,
                        p.question,
                        p.answer,
                        Strategy.COT,
                        rationale,
                        raw=c.text,
                        pred=pred,
                        correct=True,
                    )
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--train", type=int, default=200, help="training problems (GSM8K sample, train split)")
    ap.add_argument("--dev", type=int, default=100, help="dev problems (held out of the train split)")
    ap.add_argument("--objectives", nargs="*", default=["sft", "cascod", "edit"])
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--step2-lr", type=float, default=5e-6)
    ap.add_argument("--step2-epochs", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--eval-strategy", default="cot")
    ap.add_argument(
        "--step1-model", type=Path, default=None, help="EDIT step-1 model when sft is not in this run"
    )
    ap.add_argument("--baseline", action="store_true", help="also evaluate the untrained student")
    ap.add_argument("--out", type=Path, default=Path("runs/compare-objectives"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    problems = load_problems("builtin:gsm8k-sample", split="train")
    train_p, dev_p = split_dev(problems, args.dev, seed=0)
    train_p = train_p[: args.train]
    samples = teacher_samples(train_p)
    base = resolve_model(args.model)
    log.info(
        "%d train problems → %d CoT samples; %d dev problems; student %s",
        len(train_p),
        len(samples),
        len(dev_p),
        base,
    )
    results: dict[str, Any] = {
        "setup": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "samples": len(samples),
        }
    }

    def run_eval(name: str, model: Path, cfg: TrainConfig | None) -> dict[str, Any]:
        t0 = time.time()
        r = evaluate(
            model,
            dev_p,
            strategy=args.eval_strategy,
            max_new_tokens=args.max_new_tokens,
            batch_size=16,
            generate_fn=generate_fn_for(cfg) if cfg is not None else None,
        )
        write_eval(r, args.out / name / "eval", "dev")
        s = r.summary()
        return {k: s[k] for k in ("accuracy", "n", "correct", "ci95", "decoding")} | {
            "eval_s": round(time.time() - t0)
        }

    if args.baseline:
        results["base"] = run_eval("base", base, None)
    sft_model: Path | None = None
    for obj in args.objectives:
        cfg = TrainConfig(
            objective=obj,
            lr=args.lr,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_length=args.max_length,
            save_steps=10_000,
            logging_steps=5,
        )
        cfg.cascod.alpha = args.alpha
        cfg.edit.step2_lr = args.step2_lr
        cfg.edit.step2_epochs = args.step2_epochs
        t0 = time.time()
        done = args.out / obj / ("step2/final" if obj == "edit" else "final")
        if done.is_dir():  # rerunning (e.g. after an eval failure) reuses the trained model
            final = done
        else:
            step1 = (sft_model or args.step1_model) if obj == "edit" else None
            final = train_with_objective(cfg, samples, base, args.out / obj, step1_model=step1)
        train_s = round(time.time() - t0)
        if obj == "sft":
            sft_model = final
        metrics_path = args.out / obj / "objective.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        results[obj] = run_eval(obj, final, cfg) | {"train_s": train_s, "objective_metrics": metrics}
        log.info("%s: %s", obj, json.dumps(results[obj]))
        write_json(args.out / "results.json", results)
    for name, r in results.items():
        if name != "setup":
            log.info(
                "%-6s dev acc %.3f (%d/%d, 95%% CI %.3f-%.3f)",
                name,
                r["accuracy"],
                r["correct"],
                r["n"],
                *r["ci95"],
            )


if __name__ == "__main__":
    main()
