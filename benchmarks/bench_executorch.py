"""ExecuTorch .pte packages of the SmolLM2 student beside GGUF q4_k_m and ONNX int4: size, bits/weight, fidelity
to torch (teacher-forced top-1 agreement and NLL ratio over exporters.parity's held-out text) and host decode
speed, each package run by its own runtime in a fresh process (device_profiles.worker.measure, as `bench`).
ExecuTorch exports and runs in a worker process of its own (edge_distill/runtimes/executorch.py): its peak RSS is
that process's plus the measuring process's.

    nice -n 19 .venv/bin/python benchmarks/bench_executorch.py --keep /tmp/et-bench
    nice -n 19 .venv/bin/python benchmarks/bench_executorch.py --targets executorch:8da4w --keep /tmp/et-bench

Packages already in --keep that verify are measured again, not re-exported (an export is minutes on 2 cores).
Writes benchmarks/results/executorch.json. On a shared machine at nice 19 the speeds are lower bounds (times
upper bounds): compare the rows with each other, measured back to back, not with other machines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from device_profiles.bandwidth import cpu_model

logger = logging.getLogger("bench_executorch")
TARGETS = "executorch:fp32,executorch:int8,executorch:8da4w,gguf:q4_k_m,onnx:int4"
PROMPT = ("Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
          "How many clips did Natalia sell altogether in April and May?\nSolution:")  # fmt: skip


def _package(model_dir: Path, root: Path, fmt: str, quant: str, threads: int) -> tuple[Path, bool]:
    from exporters import export_model, verify

    pkg = root / f"{fmt}-{quant}"
    if pkg.is_dir() and verify(pkg).ok:
        return pkg, False
    export_model(model_dir, pkg, fmt, quant, threads=threads, check_transformers=False)
    return pkg, True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:smollm2-135m")
    ap.add_argument("--targets", default=TARGETS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "executorch.json")
    ap.add_argument(
        "--keep", type=Path, default=None, help="keep (and reuse) the packages under this directory"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from bench_export import resolve

    from device_profiles.package import read_package
    from device_profiles.worker import measure
    from exporters.errors import ParityError

    model_dir = resolve(args.model)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for target in args.targets.split(","):
            fmt, quant = target.split(":")
            try:
                pkg, exported = _package(model_dir, root, fmt, quant, args.threads)
            except ParityError as e:  # the export's own gate refused it: its fidelity is still a result
                n = e.numbers
                rows.append({"target": target, "refused": str(e).split(": {")[0], "top1_agreement": n.get("top1_agreement"),
                             "nll_ratio": n.get("nll_ratio"), "ppl_ratio": n.get("ppl_ratio"),
                             "fidelity_tokens": n.get("fidelity_tokens")})  # fmt: skip
                logger.warning("%s refused: %s", target, rows[-1])
                continue
            m = json.loads((pkg / "manifest.json").read_text())
            q, fid = m["quantization"], m["fidelity"]
            package = read_package(pkg)
            run = measure(package.runtime, package.model_path, args.threads, PROMPT,
                          new_tokens=args.new_tokens, repetitions=args.repetitions)  # fmt: skip
            row = {
                "target": target,
                "runtime": m["runtime"],
                "model_mb": round(package.weights_bytes / 1e6, 1),
                "package_mb": round(package.size_bytes / 1e6, 1),
                "bits_per_weight": q["bits_per_weight"],
                "file_bits_per_weight": q.get("file_bits_per_weight"),
                "summary": q["summary"],
                "fidelity_tokens": fid["fidelity_tokens"],
                "top1_agreement": round(fid["top1_agreement"], 4),
                "nll_ratio": round(fid["nll_ratio"], 4),
                "greedy_identical_prompts": f"{m['parity']['greedy']['identical_prompts']}/{m['parity']['greedy']['n_prompts']}",
                "export_s": m["timings"]["export_s"] if exported else None,
                "decode_tok_s": round(run.decode_tok_s.median, 1),
                "decode_tok_s_range": [round(run.decode_tok_s.min, 1), round(run.decode_tok_s.max, 1)],
                "prefill_tok_s": round(run.prefill_tok_s.median, 1),
                "ttft_s": round(run.ttft_s.median, 3),
                "peak_rss_mb": round(run.peak_rss_mb, 1),
                "load_s": round(run.load_s, 2),
                "prompt_tokens": run.prompt_tokens,
                "new_tokens": run.new_tokens,
            }
            rows.append(row)
            logger.info("%s", json.dumps(row))
    print(
        f"{'target':<18} {'MB':>6} {'bpw':>5} {'top-1':>6} {'NLL ratio':>9} {'decode tok/s':>12} {'RSS MB':>7}"
    )
    for r in rows:
        if "refused" in r:
            print(
                f"{r['target']:<18} refused by the export's parity gate: top-1 {r['top1_agreement']:.3f}, "
                f"NLL ratio {r['nll_ratio']:.4f} ({r['refused']})"
            )
            continue
        print(f"{r['target']:<18} {r['model_mb']:>6} {r['bits_per_weight']:>5.2f} {r['top1_agreement']:>6.3f} "
              f"{r['nll_ratio']:>9.4f} {r['decode_tok_s']:>12} {r['peak_rss_mb']:>7}")  # fmt: skip
    result = {
        "model": args.model,
        "cpu": cpu_model(),
        "threads": args.threads,
        "nice": os.nice(0),
        "load_avg_at_end": os.getloadavg(),
        "note": "shared 2-core machine at nice 19: speeds are lower bounds, times upper bounds",
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
