"""Does the bench harness add overhead? Its decode tok/s vs a plain runtime loop on the same file and threads.

    python benchmarks/bench_runtime_overhead.py --gguf runs/x/export/gguf-q4_k_m [--onnx .../onnx-int4]
        [--threads 2] [--new-tokens 128] [--rounds 5]

Harness = `device_profiles.worker.measure` (child process, as `edge-distill bench` runs it). Plain = the
few lines a user would write (llama-cpp-python `Llama.generate`, onnxruntime-genai `Generator`), in this
process, timed from the outside; llama.cpp's own perf counters are printed as a third opinion. Rounds
alternate harness/plain so load from other processes hits both alike. Also prints the fraction of the
bandwidth roofline (this host's copy bandwidth / weight bytes per token).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

from device_profiles.bandwidth import host_hardware
from device_profiles.estimate import roofline_tok_s
from device_profiles.package import read_package
from device_profiles.worker import measure

log = logging.getLogger("bench_runtime_overhead")
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"
)


def plain_llamacpp(model: Path, threads: int, prompt: str, new_tokens: int) -> tuple[float, float]:
    """(decode tok/s timed outside, decode tok/s from llama.cpp's perf counters) for one generation."""
    import llama_cpp

    llm = _LLM.get(model) or _LLM.setdefault(
        model,
        llama_cpp.Llama(str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False),
    )
    ids = llm.tokenize(prompt.encode(), add_bos=True)
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    times = []
    for _tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0):
        times.append(time.perf_counter())
        if len(times) == new_tokens:
            break
    perf = llama_cpp.llama_perf_context(llm.ctx)
    # n_eval counts the generated tokens evaluated after the prompt (the last one is sampled, not evaluated)
    internal = perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms else float("nan")
    return (len(times) - 1) / (times[-1] - times[0]), internal


_LLM: dict[Path, object] = {}


def plain_genai(model_dir: Path, threads: int, prompt: str, new_tokens: int) -> float:
    import onnxruntime_genai as og

    if model_dir not in _OG:
        cfg = og.Config(str(model_dir))
        opts = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": opts}}}))
        model = og.Model(cfg)
        _OG[model_dir] = (model, og.Tokenizer(model))
    model, tok = _OG[model_dir]
    ids = tok.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens, do_sample=False
    )
    gen = og.Generator(model, params)
    gen.append_tokens(ids)
    times = []
    while not gen.is_done():
        gen.generate_next_token()
        times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


_OG: dict[Path, tuple[object, object]] = {}


def compare(
    pkg_dir: Path, threads: int, new_tokens: int, rounds: int, refresh_hw: bool = False
) -> dict[str, object]:
    pkg = read_package(pkg_dir)
    prompt = pkg.prompt(QUESTION)
    harness, plain, internal = [], [], []
    for _ in range(rounds):
        m = measure(pkg.runtime, pkg.model_path, threads, prompt, new_tokens=new_tokens, repetitions=1)
        harness.append(m.decode_tok_s.median)
        if pkg.runtime == "llama.cpp":
            plain_llamacpp(pkg.model_path, threads, prompt, 16)  # warm-up, as the harness does
            outside, inside = plain_llamacpp(pkg.model_path, threads, prompt, new_tokens)
            plain.append(outside)
            internal.append(inside)
        else:
            plain_genai(pkg.model_path, threads, prompt, 16)
            plain.append(plain_genai(pkg.model_path, threads, prompt, new_tokens))
    hw = host_hardware(threads, refresh=refresh_hw)
    h, p = statistics.median(harness), statistics.median(plain)
    # Each round runs harness then plain back to back: the median of per-round ratios cancels slow load drift.
    paired = statistics.median(a / b for a, b in zip(harness, plain, strict=True))
    roof = roofline_tok_s(hw.bandwidth_gbs, pkg.weights_bytes)
    return {
        "package": pkg.name, "runtime": pkg.runtime, "threads": threads, "new_tokens": new_tokens, "rounds": rounds,
        "harness_decode_tok_s": h, "plain_decode_tok_s": p, "harness_over_plain": h / p,
        "paired_ratio_median": paired,
        "llamacpp_internal_decode_tok_s": statistics.median(internal) if internal else None,
        "harness_values": harness, "plain_values": plain,
        "host_bandwidth_gbs": hw.bandwidth_gbs, "weights_mib": pkg.weights_bytes / 2**20,
        "roofline_tok_s": roof, "roofline_fraction": h / roof,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, help="GGUF package directory")
    ap.add_argument("--onnx", type=Path, help="ONNX package directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument(
        "--refresh-hw", action="store_true", help="re-measure this host's bandwidth (cached otherwise)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = [
        compare(p, args.threads, args.new_tokens, args.rounds, args.refresh_hw)
        for p in (args.gguf, args.onnx)
        if p
    ]
    for r in results:
        log.info(
            "%s (%s, %d threads): harness %.1f tok/s, plain loop %.1f tok/s -> harness/plain %.3f (paired %.3f); "
            "llama.cpp internal %s; roofline %.0f tok/s (%.1f GB/s / %.1f MiB) -> %.0f%% of roofline",
            r["package"], r["runtime"], r["threads"], r["harness_decode_tok_s"], r["plain_decode_tok_s"],
            r["harness_over_plain"], r["paired_ratio_median"], r["llamacpp_internal_decode_tok_s"], r["roofline_tok_s"],
            r["host_bandwidth_gbs"], r["weights_mib"], 100 * r["roofline_fraction"],
        )  # fmt: skip
    if args.out:
        from edge_distill.io import write_json

        write_json(args.out, results)


if __name__ == "__main__":
    main()
