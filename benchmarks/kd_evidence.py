"""Does logit distillation (`train.kd`) bring the student closer to its teacher than SFT on the same text?

Real components end to end, on CPU, with the builtin SmolLM2-135M student:
1. the TEACHER is a copy of the student fully fine-tuned for a few steps on GSM8K sample CoT (the gold
   rationales of `teacher: builtin:gsm8k`), so teacher and student share the tokenizer and differ in weights;
2. the teach stage's offline path (`stages.teach_with_topk`) has that teacher (transformers backend) write a
   CoT rationale for each training question and record its top-k log-probs (k = 20) beside the samples;
3. three students train from the same base on the SAME examples (the teacher's rationales, in the student
   format) for the SAME number of steps with the same LoRA settings:
      sft          plain token-weighted CE (train.kd off)
      kd-offline   (1 − λ)·CE + λ·KL(teacher ‖ student) on the recorded top-20 + tail bucket
      kd-online    the same with the teacher running beside the student (full vocabulary)
4. on HELD-OUT questions the teacher writes a rationale in the student format (greedy); each student (and
   the untrained base) is scored on those response tokens: the mean per-token forward KL(teacher ‖ student)
   over the full vocabulary, and the student's NLL of the teacher's text (nats/token).

Printed as a table and written to benchmarks/results/kd_evidence.json with the storage of the top-k records
(bytes per 1,000 samples at k = 20, measured mean tokens per sample) and the online teacher's memory
(weights, and the process RSS increase measured when it was loaded), plus wall time per arm.

    python benchmarks/kd_evidence.py                 # SmolLM2-135M: ~20 min on 2 idle CPU cores
    python benchmarks/kd_evidence.py --student tiny  # a 2-layer random Llama (benchmarks/_fixtures.py), fully
                                                     # fine-tuned: ~15 min on 2 idle cores; docs/methods.md quotes it
    python benchmarks/kd_evidence.py --quick         # a smoke run (minutes, numbers not meaningful)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from device_profiles.bandwidth import cpu_model

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("kd_evidence")


def rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


# ------------------------------------------------------------------------------------------ 1. the teacher
def fine_tune_teacher(
    base: Path, work: Path, n_problems: int, steps: int, batch: int, lr: float, max_length: int
) -> Path:
    from edge_distill.config import TrainConfig
    from edge_distill.data import load_problems
    from edge_distill.models import load_tokenizer
    from edge_distill.objectives.build import objective
    from edge_distill.teach import filter_samples, teach
    from edge_distill.teachers.recorded import RecordedTeacher
    from edge_distill.training import train

    final = work / "teacher" / "final"
    if (final / "config.json").is_file():
        return final
    problems = load_problems("builtin:gsm8k-sample", split="train")[-n_problems:]  # not the KD questions
    samples, _ = teach(RecordedTeacher("builtin:gsm8k"), problems, ["cot"], 1, progress=False)
    samples = filter_samples(samples)
    cfg = TrainConfig(finetune="full", lr=lr, max_steps=steps, batch_size=batch, max_length=max_length, precision="fp32",
                      warmup_steps=2, save_steps=10_000, logging_steps=4)  # fmt: skip
    examples, _ = objective("sft").build_examples(load_tokenizer(base), samples, cfg)
    train(base, examples, work / "teacher", cfg, seed=0)
    return final


# ------------------------------------------------------------------------------------------ 2./4. teacher text
def heldout_sequences(
    teacher_dir: Path, problems: list[Any], max_new_tokens: int
) -> list[tuple[int, list[int]]]:
    """(prompt length, prompt + response + EOS ids) of the teacher's greedy CoT in the student format."""
    from edge_distill.generation import generate
    from edge_distill.models import load_model, load_tokenizer
    from edge_distill.objectives.sft import encode
    from edge_distill.strategies import student_prompt

    tok = load_tokenizer(teacher_dir)
    model = load_model(teacher_dir, dtype=__import__("torch").float32, device="cpu")
    prompts = [student_prompt(p.question, "cot") for p in problems]
    outs = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=8, progress=False)
    seqs = []
    for prompt, (text,) in zip(prompts, outs, strict=True):
        p = encode(tok, prompt)
        seqs.append((len(p), p + encode(tok, text) + [tok.eos_token_id]))
    return seqs


def score(model_dir: Path, teacher: Any, seqs: list[tuple[int, list[int]]]) -> dict[str, float]:
    """Mean per-token full-vocabulary KL(teacher ‖ student) and the student's NLL on the response tokens."""
    import torch
    import torch.nn.functional as F

    from edge_distill.models import load_model

    student = load_model(model_dir, dtype=torch.float32, device="cpu")
    kl_sum = nll_sum = 0.0
    n = 0
    with torch.no_grad():
        for p_len, ids in seqs:
            x = torch.tensor([ids])
            s = F.log_softmax(student(input_ids=x).logits[0, p_len - 1 : -1].double(), -1)
            t = F.log_softmax(teacher(input_ids=x).logits[0, p_len - 1 : -1].double(), -1)
            y = x[0, p_len:]
            kl_sum += float((t.exp() * (t - s)).sum())
            nll_sum += float(-s.gather(1, y[:, None]).sum())
            n += len(y)
    del student
    gc.collect()
    return {"kl_to_teacher": kl_sum / n, "nll_of_teacher_text": nll_sum / n, "tokens": n}


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="default runs/kd_evidence[_tiny]")
    ap.add_argument(
        "--out", type=Path, default=None, help="default benchmarks/results/kd_evidence[_tiny].json"
    )
    ap.add_argument("--teacher-problems", type=int, default=128)
    ap.add_argument("--teacher-steps", type=int, default=16)
    ap.add_argument("--teacher-lr", type=float, default=1e-4)
    ap.add_argument("--problems", type=int, default=48, help="training questions the teacher answers")
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--max-length", type=int, default=512, help="training sequence cap (tiny: 1024)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--weight", type=float, default=0.5, help="λ, the divergence's share of the loss")
    ap.add_argument("--arms", default="sft,kd-offline,kd-online")
    ap.add_argument("--student", choices=("smollm2-135m", "tiny"), default="smollm2-135m",
                    help="tiny: a 2-layer random Llama with a 512-token BPE tokenizer (tests/tiny_models.py), fully "
                         "fine-tuned, for a CPU that cannot give the 135M model the time; its own sizes below")  # fmt: skip
    ap.add_argument(
        "--finetune", choices=("lora", "full"), default=None, help="the arms' (default: lora; tiny: full)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = ap.parse_args(argv)
    if args.student == "tiny":  # everything is cheap: more teacher training, more student steps
        # (its 512-token BPE spends ~2x the tokens of SmolLM2's on the same text)
        args.teacher_steps, args.teacher_lr, args.steps, args.lr, args.max_length = 40, 2e-3, 40, 1e-3, 1024
        args.finetune = args.finetune or "full"
    args.finetune = args.finetune or "lora"
    suffix = "_tiny" if args.student == "tiny" else ""
    args.work = args.work or ROOT / "runs" / f"kd_evidence{suffix}"
    args.out = args.out or ROOT / "benchmarks" / "results" / f"kd_evidence{suffix}.json"
    if args.quick:
        args.teacher_problems, args.teacher_steps, args.problems, args.heldout = 16, 2, 6, 4
        args.max_tokens, args.steps = 48, 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from edge_distill import stages
    from edge_distill.config import KdConfig, TeacherConfig, TrainConfig
    from edge_distill.data import load_problems
    from edge_distill.models import load_tokenizer, resolve_model
    from edge_distill.objectives.kd_train import load_teacher, teacher_memory_bytes
    from edge_distill.types import DEFAULT_JUDGING

    torch.manual_seed(0)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.student == "tiny":
        from _fixtures import build_tiny_llama  # benchmarks/_fixtures.py, beside this script

        base = work / "base"
        if not (base / "config.json").is_file():
            build_tiny_llama(base, hidden_size=256, num_layers=2, vocab_size=512, seed=0)
    else:
        base = Path(resolve_model("builtin:smollm2-135m"))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    teacher_dir = fine_tune_teacher(
        base, work, args.teacher_problems, args.teacher_steps, 8, args.teacher_lr, args.max_length
    )
    timings["teacher_fine_tune_s"] = time.perf_counter() - t0

    problems = load_problems("builtin:gsm8k-sample", split="train")[: args.problems]
    heldout = load_problems("builtin:gsm8k-sample", split="test")[: args.heldout]

    t0 = time.perf_counter()
    kd = KdConfig(enabled=True, top_k=args.top_k, weight=args.weight, source="offline")
    teacher_cfg = TeacherConfig(
        backend="transformers", model=str(teacher_dir), strategies=["cot"], n_shots=2, batch_size=8,
        sampling={"temperature": 0.0, "max_tokens": args.max_tokens}, cache=str(work / "teacher.sqlite"),
    )  # fmt: skip
    samples, stats = stages.teach_with_topk(
        kd, teacher_cfg, str(base), problems, work / "teach", DEFAULT_JUDGING
    )
    timings["teach_with_topk_s"] = time.perf_counter() - t0
    # every finished rationale is training text here (the measure is closeness to the teacher, not accuracy);
    # its own answer line, so the example is the teacher's text
    # (a rationale cut at max_tokens too: it is still the teacher's text)
    kept = [s for s in samples if s.meta.get("failure") != "error" and s.rationale.strip()]
    for s in kept:
        s.gold = s.pred or ""
    log.info("%d of %d teacher rationales are training examples", len(kept), len(samples))

    t0 = time.perf_counter()
    seqs = heldout_sequences(teacher_dir, heldout, args.max_tokens)
    timings["heldout_text_s"] = time.perf_counter() - t0

    rss0 = rss()
    teacher = load_teacher(teacher_dir, load_tokenizer(base), "fp32")
    teacher_rss = rss() - rss0
    teacher_bytes = teacher_memory_bytes(teacher)

    rows: list[dict[str, Any]] = [{"arm": "untrained", **score(base, teacher, seqs)}]
    common = dict(finetune=args.finetune, max_steps=args.steps, batch_size=args.batch, lr=args.lr, precision="fp32", warmup_steps=2,
                  save_steps=10_000, logging_steps=4, max_length=args.max_length)  # fmt: skip
    arms = {
        "sft": TrainConfig(**common),
        "kd-offline": TrainConfig(**common, kd=kd),
        "kd-online": TrainConfig(
            **common,
            kd=KdConfig(enabled=True, weight=args.weight, source="online", teacher_model=str(teacher_dir)),
        ),  # fmt: skip
    }
    for name in args.arms.split(","):
        out = work / name
        t0 = time.perf_counter()
        if (out / "train_result.json").is_file():  # finished before (the run was interrupted later)
            model = out / "final"
        else:
            model = stages.train_student(
                arms[name], kept, base, out, seed=0, judging=DEFAULT_JUDGING, topk=work / "teach" / "topk.npz"
            )
        wall = time.perf_counter() - t0
        result = json.loads((out / "train_result.json").read_text())
        wall = result.get("runtime_s", wall)
        objective = json.loads((out / "objective.json").read_text())
        row = {"arm": name, **score(model, teacher, seqs), "train_s": round(wall, 1), "steps": result["steps"],
               "last_loss": result["last_loss"]}  # fmt: skip
        if "kd_coverage" in objective:
            row["kd_coverage"] = objective["kd_coverage"]
        rows.append(row)
        timings[f"{name}_s"] = wall
        gc.collect()

    topk = stats["kd_topk"]
    per_1000 = topk["mean_tokens"] * (4 + 6 * args.top_k) * 1000
    sizes = {
        "top_k": args.top_k,
        "records": topk["records"],
        "mean_tokens_per_sample": round(topk["mean_tokens"], 1),
        "bytes_per_token": 4 + 6 * args.top_k,
        "raw_bytes_per_1000_samples": round(per_1000),
        "npz_file_bytes": topk["file_bytes"],
        "npz_bytes_per_1000_samples": round(topk["file_bytes"] / max(1, topk["records"]) * 1000),
        "full_vocab_fp32_bytes_per_1000_samples_for_comparison": round(
            topk["mean_tokens"] * len(load_tokenizer(base)) * 4 * 1000
        ),
        "online_teacher_weights_bytes": teacher_bytes,
        "online_teacher_rss_increase_bytes": teacher_rss,
    }
    result = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "args": {k: (_rel(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "examples": len(kept),
        "heldout_sequences": len(seqs),
        "rows": rows,
        "sizes": sizes,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    print_table(result)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _rel(path: Path) -> str:
    """`path` relative to the repository when it is inside it (the results file travels with the repo)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def print_table(result: dict[str, Any]) -> None:
    print(f"\nKD evidence on {result['cpu']} ({result['cores']} cores), {result['examples']} teacher examples, "
          f"{result['heldout_sequences']} held-out teacher rationales")  # fmt: skip
    print(f"{'arm':<12} {'KL(T||S) nats/tok':>18} {'NLL nats/tok':>13} {'coverage':>9} {'train s':>8}")
    for r in result["rows"]:
        cov = f"{r['kd_coverage']:.2f}" if "kd_coverage" in r else "-"
        train_s = f"{r['train_s']:.0f}" if "train_s" in r else "-"
        print(
            f"{r['arm']:<12} {r['kl_to_teacher']:>18.4f} {r['nll_of_teacher_text']:>13.4f} {cov:>9} {train_s:>8}"
        )
    s = result["sizes"]
    print(f"\ntop-{s['top_k']} storage: {s['bytes_per_token']} B/token x {s['mean_tokens_per_sample']} tokens/sample = "
          f"{s['raw_bytes_per_1000_samples'] / 1e6:.2f} MB per 1,000 samples raw, "
          f"{s['npz_bytes_per_1000_samples'] / 1e6:.2f} MB as compressed .npz "
          f"(full-vocabulary fp32 would be {s['full_vocab_fp32_bytes_per_1000_samples_for_comparison'] / 1e9:.1f} GB)")  # fmt: skip
    print(f"online teacher: {s['online_teacher_weights_bytes'] / 1e6:.0f} MB of weights, "
          f"RSS +{s['online_teacher_rss_increase_bytes'] / 1e6:.0f} MB when loaded")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
