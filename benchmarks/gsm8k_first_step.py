"""GSM8K first step: an easier set derived from GSM8K's socratic solutions, for the CPU study (protocol v2).

Each GSM8K problem becomes the problem of its first step: the problem's statements followed by the first
socratic sub-question in place of the final question, answered by that step's calculator result. The gold
solution is the step's own rationale (so the recorded teacher replays it as CoT, L2M and PoT exactly as it
replays full GSM8K solutions):

    Janet's ducks lay 16 eggs per day. She eats three for breakfast ... $2 per fresh duck egg.
    How many eggs does Janet sell?                                        -> 16 - 3 - 4 = <<16-3-4=9>>9 -> 9

Why: a 135M student trained on two cores stays at GSM8K's floor (1.5-4 %, docs/study.md's learning curve),
where no method can be told apart from another. One GSM8K step is roughly the difficulty of AddSub/SVAMP,
where the quickstart's student gains ~11 points, so a reference arm can clear its untrained baseline by
enough to rank methods. The set keeps GSM8K's language, numbers and license (MIT), and the split: train
problems derive from train, test from test.

A problem is kept only when the derivation is safe, decided from the text alone (never from any model's
output): its final sentence is a question with no number and no "if" (otherwise removing it would drop a
given), its first step has exactly one calculator annotation whose result is a plain number, and that
sub-question ends in "?". Measured on the full GSM8K: see `derive`'s log line (kept/total per file).

    python benchmarks/gsm8k_first_step.py --gsm8k ../shared/datasets/gsm8k --out runs/gsm8k-first-step
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("gsm8k_first_step")

_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FINAL = "\n#### "
SPLITS = ("train", "test")


def first_step(question: str, socratic_answer: str) -> dict[str, Any] | None:
    """The first-step problem of one GSM8K row (question + socratic answer), or None when not derivable."""
    sentences = _SENTENCES.split(question.strip())
    final = sentences[-1]
    if (
        len(sentences) < 2
        or not final.endswith("?")
        or re.search(r"\d", final)
        or re.search(r"\bif\b", final, re.I)
    ):
        return None
    steps = socratic_answer.split(_FINAL, 1)[0].split("\n")
    if len(steps) < 2 or " ** " not in steps[0]:
        return None  # a one-step problem is already its own first step: nothing easier to derive
    sub_question, rationale = (s.strip() for s in steps[0].split(" ** ", 1))
    calcs = _ANNOTATION.findall(rationale)
    if not sub_question.endswith("?") or len(calcs) != 1:
        return None
    result = calcs[0][1].strip()
    if not _PLAIN_NUMBER.fullmatch(result):
        return None
    if "." in result:
        result = result.rstrip("0").rstrip(".")
    context = " ".join(sentences[:-1])
    return {
        "question": f"{context} {sub_question}",
        "answer": f"{rationale}{_FINAL}{result}",
        "socratic": f"{sub_question} ** {rationale}{_FINAL}{result}",
    }


OPS_BUCKETS = ("1 op", "2 ops", "3+ ops")
_OPERATOR = re.compile(r"(?<=[\d)%\s])[-+*/x](?=[\s\d(.$])")


def step_ops(solution: str | None) -> str | None:
    """The difficulty of a first-step problem: arithmetic operators in its one calculator annotation
    (`16-3-4` -> "2 ops"); None for a solution without exactly one annotation."""
    calcs = _ANNOTATION.findall(solution or "")
    if len(calcs) != 1:
        return None
    n = len(_OPERATOR.findall(calcs[0][0].replace(" ", "")))
    return OPS_BUCKETS[min(max(n, 1), 3) - 1]


def derive(gsm8k: Path, out: Path) -> dict[str, int]:
    """Write out/{train,test}.jsonl and their *_socratic.jsonl siblings (GSM8K's layout) from the full GSM8K
    dir's socratic files; returns the kept count per split. Rows keep their source order."""
    from edge_distill.io import read_jsonl, write_jsonl

    kept: dict[str, int] = {}
    for split in SPLITS:
        src = gsm8k / f"{split}_socratic.jsonl"
        if not src.is_file():
            raise SystemExit(f"{src}: not found (--gsm8k must be a GSM8K dir with {split}_socratic.jsonl)")
        rows = read_jsonl(src)
        derived = [d for r in rows if (d := first_step(r["question"], r["answer"])) is not None]
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(
            out / f"{split}.jsonl", ({"question": d["question"], "answer": d["answer"]} for d in derived)
        )
        write_jsonl(
            out / f"{split}_socratic.jsonl",
            ({"question": d["question"], "answer": d["socratic"]} for d in derived),
        )
        kept[split] = len(derived)
        log.info("%s: %d of %d problems have a derivable first step", src, len(derived), len(rows))
    return kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsm8k", type=Path, required=True, help="GSM8K dir with train/test_socratic.jsonl")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(derive(args.gsm8k, args.out)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
