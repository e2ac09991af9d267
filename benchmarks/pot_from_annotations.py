"""Share of GSM8K train problems whose mechanically generated PoT program reproduces the gold answer.

The recorded teacher builds PoT programs from GSM8K's calculator annotations (and, where a sentence has
none, from its plain-text arithmetic and one-variable equations). This runs every program in the real
sandbox and compares with gold using the same comparer as filtering and eval.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pot_from_annotations.py \
        [--data /work/shared/datasets/gsm8k/train.jsonl] [--show 10]

Prints the share and writes benchmarks/results/pot_from_annotations.json (with the failing ids).
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections import Counter
from pathlib import Path

from edge_distill.answers import answers_match
from edge_distill.data import load_problems
from edge_distill.io import write_json
from edge_distill.sandbox import run_programs
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Strategy

log = logging.getLogger("pot_from_annotations")
DEFAULT_DATA = "/work/shared/datasets/gsm8k/train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="GSM8K-format jsonl (default: full GSM8K train)")
    ap.add_argument("--show", type=int, default=5, help="log this many failing problems")
    ap.add_argument("--out", default="benchmarks/results/pot_from_annotations.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    problems = load_problems(args.data, socratic=None)
    t0 = time.perf_counter()
    completions = RecordedTeacher().generate(problems, Strategy.POT, 1)
    t_gen = time.perf_counter() - t0
    idx = [i for i, cs in enumerate(completions) if cs[0].finish_reason == "stop"]
    t0 = time.perf_counter()
    results = run_programs([completions[i][0].text for i in idx], timeout_s=5.0)
    t_run = time.perf_counter() - t0

    outcome: dict[int, str] = {i: "no_program" for i in range(len(problems))}
    for i, res in zip(idx, results, strict=True):
        if not res.ok:
            outcome[i] = "program_error"
        else:
            outcome[i] = "reproduced" if answers_match(res.answer, problems[i].answer) else "wrong"
    counts = Counter(outcome.values())
    n_ok = counts["reproduced"]
    share = n_ok / len(problems)
    failing = [problems[i].id for i, o in outcome.items() if o != "reproduced"]
    for pid in failing[: args.show]:
        p = next(p for p in problems if p.id == pid)
        log.info("--- %s gold=%s\n%s", pid, p.answer, p.solution)

    log.info(
        "| data | problems | reproduced | share | no program | program error | wrong | gen s | sandbox s |"
    )
    log.info("|---|---|---|---|---|---|---|---|---|")
    log.info(
        "| %s | %d | %d | %.2f %% | %d | %d | %d | %.1f | %.1f |",
        Path(args.data).name, len(problems), n_ok, 100 * share, counts["no_program"], counts["program_error"],
        counts["wrong"], t_gen, t_run,
    )  # fmt: skip
    write_json(
        args.out,
        {
            "data": args.data,
            "problems": len(problems),
            "reproduced": n_ok,
            "share": share,
            "outcomes": dict(counts),
            "generate_s": t_gen,
            "sandbox_s": t_run,
            "programs_per_s": len(idx) / t_run if t_run else None,
            "failing_ids": failing,
            "python": platform.python_version(),
        },
    )
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
