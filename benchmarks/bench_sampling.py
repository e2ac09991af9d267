"""Student sampling throughput per backend (SIKeD step 4 / FDD feedback) against plain one-by-one generate.

    python benchmarks/bench_sampling.py                       # builtin:smollm2-135m, 8 questions x n=4, 64 tokens
    python benchmarks/bench_sampling.py --questions 16 --n 8 --max-new-tokens 128 --threads 2 --batch-size 32

Backends: `one-by-one` (the baseline: `model.generate` once per sample, one sequence at a time),
`transformers` (edge_distill.methods.sampling.TransformersSampler: batched, n sequences per prompt),
`llamacpp` (an f16 GGUF of the student, in-process, prompt KV reused across the n samples of a prompt).
Tokens are counted the same way for every backend (the HF tokenizer on the returned text). Writes
benchmarks/results/sampling.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_sampling")


def one_by_one(
    model_dir: Path, prompts: list[str], n: int, max_new_tokens: int, temperature: float
) -> list[list[str]]:
    import torch

    from edge_distill.models import load_model, load_tokenizer

    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            texts = []
            for _ in range(n):
                ids = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=temperature,
                    top_p=0.95,
                    top_k=None,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tok.pad_token_id or tok.eos_token_id,
                )
                texts.append(tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
            out.append(texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=32, help="sequences per forward (transformers)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default="one-by-one,transformers,llamacpp")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    from edge_distill.data import load_problems
    from edge_distill.methods.sampling import SamplingParams, make_sampler
    from edge_distill.models import load_tokenizer, resolve_model
    from edge_distill.strategies import student_prompt

    model_dir = Path(args.model) if Path(args.model).is_dir() else resolve_model(args.model)
    problems = load_problems("builtin:gsm8k-sample", split="train")[: args.questions]
    prompts = [student_prompt(p.question) for p in problems]
    params = SamplingParams(
        n=args.n, temperature=args.temperature, top_p=0.95, max_new_tokens=args.max_new_tokens
    )
    tok = load_tokenizer(model_dir)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            t_load = time.perf_counter()
            if backend == "one-by-one":
                run = lambda: one_by_one(model_dir, prompts, args.n, args.max_new_tokens, args.temperature)  # noqa: E731
            else:
                kwargs: dict[str, Any] = (
                    {"batch_size": args.batch_size}
                    if backend == "transformers"
                    else {"gguf_path": Path(tmp) / "student-f16.gguf", "n_threads": args.threads}
                )
                sampler = make_sampler(backend, model_dir, **kwargs)  # type: ignore[arg-type]
                run = lambda s=sampler: s.sample(prompts, params)  # noqa: E731
            load_s = time.perf_counter() - t_load
            t0 = time.perf_counter()
            texts = run()
            wall = time.perf_counter() - t0
            flat = [t for ts in texts for t in ts]
            n_tok = sum(len(x) for x in tok(flat, add_special_tokens=False)["input_ids"])
            rows.append(
                {
                    "backend": backend,
                    "samples": len(flat),
                    "new_tokens": n_tok,
                    "wall_s": round(wall, 2),
                    "load_s": round(load_s, 2),
                    "samples_per_s": round(len(flat) / wall, 3),
                    "tokens_per_s": round(n_tok / wall, 1),
                }
            )
            logger.info("%s", rows[-1])
    base = next((r for r in rows if r["backend"] == "one-by-one"), None)
    for r in rows:
        r["speedup_vs_one_by_one"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2) if base else None
    result = {
        "model": str(model_dir),
        "questions": args.questions,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    header = (
        f"{'backend':<14}{'samples':>8}{'tokens':>8}{'wall s':>8}{'samples/s':>11}{'tok/s':>8}{'speedup':>9}"
    )
    lines = [header] + [
        f"{r['backend']:<14}{r['samples']:>8}{r['new_tokens']:>8}{r['wall_s']:>8}"
        f"{r['samples_per_s']:>11}{r['tokens_per_s']:>8}{r['speedup_vs_one_by_one']!s:>9}"
        for r in rows
    ]
    logger.info("sampling throughput (%s)\n%s", args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
