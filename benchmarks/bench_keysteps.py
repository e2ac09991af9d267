"""Key-step detection speed: 10k dual-CoT pairs through `key_steps` vs a pure-Python DP.

Pairs are real: GSM8K gold CoTs (plain text) and their op-swapped twins (`perturb_rationale`), tokenized
with the tiny test tokenizer, cycled up to --pairs. Reports pairs/s, the key-step fraction and, on a subset,
the time a pure-Python O(La·Lb) DP over the whole sequences (what the published code does) would take.

    OMP_NUM_THREADS=1 python benchmarks/bench_keysteps.py --pairs 10000
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

from _fixtures import build_tiny_tokenizer  # benchmarks/_fixtures.py: this script's directory is on sys.path

from edge_distill.objectives.dual_cot import perturb_rationale
from edge_distill.objectives.keysteps import key_step_fraction, key_steps, levenshtein_reference

log = logging.getLogger("bench_keysteps")
GSM8K = Path(__file__).resolve().parents[1] / "edge_distill" / "assets" / "gsm8k" / "train.jsonl"


def real_pairs(tokenizer) -> list[tuple[list[int], list[int]]]:
    pairs = []
    for i, line in enumerate(GSM8K.read_text(encoding="utf-8").splitlines()):
        body, _, gold = json.loads(line)["answer"].rpartition("####")
        plain = re.sub(r"<<[^<>]*>>", "", body).strip()
        twin = perturb_rationale(plain, gold.strip(), seed=str(i))
        if twin is None:
            continue
        right = f"{plain}\nThe answer is {gold.strip()}."
        wrong = f"{twin[0]}\nThe answer is {twin[1]}."
        pairs.append((tokenizer(right)["input_ids"], tokenizer(wrong)["input_ids"]))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--reference-subset", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = real_pairs(build_tiny_tokenizer())
    pairs = [base[i % len(base)] for i in range(args.pairs)]
    t0 = time.perf_counter()
    steps = [key_steps(a, b) for a, b in pairs]
    dt = time.perf_counter() - t0
    frac = key_step_fraction(steps)
    sub = pairs[: args.reference_subset]
    t1 = time.perf_counter()
    for a, b in sub:
        levenshtein_reference(a, b)
    dt_ref = (time.perf_counter() - t1) / len(sub) * len(pairs)
    mean_len = sum(len(a) + len(b) for a, b in pairs) / (2 * len(pairs))
    result = {
        "pairs": len(pairs),
        "distinct_pairs": len(base),
        "mean_tokens_per_cot": round(mean_len, 1),
        "key_steps_seconds": round(dt, 3),
        "pairs_per_second": round(len(pairs) / dt),
        "pure_python_full_dp_seconds_extrapolated": round(dt_ref, 1),
        "speedup": round(dt_ref / dt, 1),
        "key_step_fraction": round(frac["key_step_fraction"], 4),
    }
    log.info(json.dumps(result))


if __name__ == "__main__":
    main()
