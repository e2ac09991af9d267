"""Export SmolLM2-135M (or any HF dir) to GGUF/ONNX packages and report sizes, times and parity with torch.

    python benchmarks/bench_export.py                         # builtin:smollm2-135m, q8_0 + q4_k_m + onnx int4
    python benchmarks/bench_export.py --model DIR --targets gguf:f16,onnx:fp32 --threads 2
    python benchmarks/bench_export.py --targets gguf:q4_k_m,gguf:q8_0,onnx:int4,gguf:auto   # quantization report

Writes benchmarks/results/export.json. `export_s` is the conversion itself (GGUF write + llama.cpp quantize, or
the ONNX builder); `total_s` adds loading the torch model, the torch reference and every parity check.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench_export")


def resolve(spec: str) -> Path:
    path = Path(spec)
    if path.is_dir():
        return path
    from edge_distill.models import resolve_model

    return resolve_model(spec)


def _num(v: float | None, width: int, digits: int) -> str:
    return f"{v:>{width}.{digits}f}" if v is not None else f"{'n/a':>{width}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--targets", default="gguf:q8_0,gguf:q4_k_m,onnx:int4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parity-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export.json")
    ap.add_argument("--keep", type=Path, default=None, help="keep the packages under this directory")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from exporters import export_model, verify
    from exporters.api import AUTO_MAX_NLL_RATIO, AUTO_MIN_TOP1

    t0 = time.perf_counter()
    model_dir = resolve(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for target in args.targets.split(","):
            fmt, quant = target.split(":")
            t = time.perf_counter()
            pkg = export_model(model_dir, root / f"{fmt}-{quant}", fmt, quant, threads=args.threads,
                               parity_tokens=args.parity_tokens)  # fmt: skip
            wall = time.perf_counter() - t
            m = json.loads((pkg / "manifest.json").read_text())
            model_bytes = sum(f["bytes"] for n, f in m["files"].items() if n.startswith("model"))
            g = m["parity"]["greedy"]
            q, fid = m["quantization"], m["fidelity"]
            row = {
                "target": target,
                "quant": m["quant"],
                "model_mb": round(model_bytes / 1e6, 1),
                "bits_per_weight": q["bits_per_weight"],
                "type_mix": {t: x["share"] for t, x in q["type_mix"].items()},
                "lm_head": q["lm_head"]["type"],
                "summary": q["summary"],
                "fidelity_tokens": fid["fidelity_tokens"],
                "top1_agreement": round(fid["top1_agreement"], 4),
                "nll_ratio": round(fid["nll_ratio"], 4),
                "auto_candidates": (m.get("quant_auto") or {}).get("candidates"),
                "export_s": m["timings"]["export_s"],
                "export_cpu_s": m["timings"]["export_cpu_s"],
                "total_s": round(wall, 1),
                "token_agreement": round(g["token_agreement"], 3),
                "identical_prompts": f"{g['identical_prompts']}/{g['n_prompts']}",
                "tokens_compared": g["tokens_compared"],
                "ppl_ratio": round(g["ppl_ratio"], 4),
                "tokenizer_mismatches": {
                    k: v["mismatches"] for k, v in m["parity"].items() if k.startswith("tokenizer")
                },
                "transformers_gguf": m["parity"].get("transformers_gguf"),
                "verify_ok": verify(pkg).ok,
            }
            rows.append(row)
            logger.info("%s", json.dumps(row))
    print(
        f"{'target':<14} {'quant':<7} {'MB':>6} {'bpw':>5} {'top-1':>6} {'NLL ratio':>9} {'greedy':>6}  type mix / LM head"
    )
    for r in rows:
        print(f"{r['target']:<14} {r['quant']:<7} {r['model_mb']:>6} {r['bits_per_weight']:>5.2f} "
              f"{r['top1_agreement']:>6.3f} {r['nll_ratio']:>9.4f} {r['token_agreement']:>6.2f}  {r['summary']}")  # fmt: skip
    for r in rows:
        if r["auto_candidates"]:
            print(
                f"\n{r['target']} candidates (chosen: {r['quant']}; top-1 >= {AUTO_MIN_TOP1}, NLL ratio <= {AUTO_MAX_NLL_RATIO}):"
            )
            print(f"{'quant':<8} {'bpw':>6} {'top-1':>7} {'NLL ratio':>9}  meets")
            for c in r["auto_candidates"]:
                print(f"{c['quant']:<8} {_num(c['bits_per_weight'], 6, 3)} {_num(c['top1_agreement'], 7, 4)} "
                      f"{_num(c['nll_ratio'], 9, 4)}  {'yes' if c['meets_threshold'] else 'no'}"
                      f"{'  (' + c['error'] + ')' if c['error'] else ''}")  # fmt: skip
    result = {"model": str(args.model), "threads": args.threads, "load_avg": os.getloadavg(), "rows": rows,
              "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
