"""Ask the teacher, judge every rationale, and say exactly how many failed and why.

`teach` returns *all* samples, right and wrong (EDIT learns from wrong CoTs; reports need the counts),
each with `correct` set and, when it failed, `meta["failure"]` in:
  error        the teacher call failed (finish_reason "error"),
  truncated    the completion hit the token limit (finish_reason "length"); never trusted as correct,
  unparseable  no answer could be extracted from a CoT/L2M rationale,
  pot_error    the PoT program failed in the sandbox (`meta["pot_reason"]`: no_answer, not_a_number,
               the exception type, ...; `meta["error"]` the message),
  timeout      the PoT program ran out of time in the sandbox,
  wrong        an answer was found and it differs from the gold answer,
  no_gold      the problem has no gold answer to judge against (synthetic problems before voting).
A strategy with no correct sample at all is a logged warning and a line in the stats' "warnings" (the
stage's summary JSON), never a silent zero. `filter_samples` then keeps the correct ones fit for training.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from tqdm.auto import tqdm

from edge_distill.answers import answers_match
from edge_distill.errors import TeacherError
from edge_distill.sandbox import run_programs
from edge_distill.strategies import has_subquestions, parse_teacher_completion, split_final_answer
from edge_distill.teachers.base import Completion, Teacher
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Sample, Strategy

__all__ = ["FAILURE_REASONS", "filter_samples", "teach"]

log = logging.getLogger(__name__)

FAILURE_REASONS = ("error", "truncated", "unparseable", "pot_error", "timeout", "wrong", "no_gold")
KEEP_MODES = ("one_per_strategy", "all")


def topk_key(p: Problem, strategy: Strategy, j: int) -> str:
    """The key of a sample's teacher top-k record in `teach/topk.npz` (`Sample.meta["topk"]`)."""
    return f"{p.id}/{strategy.value}/{j}"


def _sample(p: Problem, strategy: Strategy, c: Completion, j: int, teacher: str) -> Sample:
    """A sample with rationale parsed and, for CoT/L2M, pred extracted; PoT preds come from the sandbox."""
    meta: dict[str, Any] = {
        "teacher": teacher,
        "finish_reason": c.finish_reason,
        "cached": c.cached,
        "k_index": j,
    }
    if c.topk is not None:
        meta["topk"] = topk_key(p, strategy, j)
    s = Sample(p.id, p.question, p.answer, strategy, rationale="", raw=c.text, source="teacher", meta=meta)
    if c.finish_reason == "error":
        meta.update(failure="error", error=c.error or "teacher returned an error")
        return s
    body = parse_teacher_completion(strategy, c.text)
    if strategy is Strategy.POT:
        s.rationale = body
    else:
        s.rationale, s.pred = split_final_answer(body)
    if c.finish_reason == "length":  # a cut-off rationale may still contain a number; it is not an answer
        meta["failure"] = "truncated"
    return s


def teach(
    teacher: Teacher,
    problems: list[Problem],
    strategies: list[Strategy],
    k: int,
    *,
    pot_timeout_s: float = 2.0,
    progress: bool = True,
    judging: Judging = DEFAULT_JUDGING,
    topk_out: dict[str, Any] | None = None,
) -> tuple[list[Sample], dict[str, Any]]:
    """Generate `k` rationales per problem and strategy, judge them, and count failures by reason.

    `topk_out`: receives the teacher's top-k records (completions that carry one, `train.kd` offline) by
    the key each sample holds in `meta["topk"]`.

    Returns (samples, stats). stats: {"teacher", "problems", "k", "completions", "correct",
    "failures": {reason: n}, "by_strategy": {s: {"completions", "correct", <reasons>..., "problems_solved",
    "pot_reasons": {why: n} (PoT only)}}, "problems_solved_any", "cached", "warnings": [text]}.
    `judging`: the run's tolerance and sandbox mode (`Judging.of(cfg)`).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    strategies = [Strategy(s) for s in strategies]
    samples: list[Sample] = []
    by_strategy: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    bar = tqdm(strategies, desc=f"teacher {teacher.name}", unit="strategy", disable=not progress)
    for strategy in bar:
        bar.set_postfix_str(strategy.value)
        completions = teacher.generate(problems, strategy, k)
        if len(completions) != len(problems):
            raise TeacherError(
                f"teacher {teacher.name} returned {len(completions)} completion lists for {len(problems)} problems"
            )
        batch = [
            _sample(p, strategy, c, j, teacher.name)
            for p, cs in zip(problems, completions, strict=True)
            for j, c in enumerate(cs)
        ]
        if topk_out is not None:
            for p, cs in zip(problems, completions, strict=True):
                for j, c in enumerate(cs):
                    if c.topk is not None:
                        topk_out[topk_key(p, strategy, j)] = c.topk
        _judge(batch, strategy, pot_timeout_s, judging)
        samples.extend(batch)
        counts = Counter(s.meta.get("failure") or "correct" for s in batch)
        solved = {s.problem_id for s in batch if s.correct}
        row: dict[str, Any] = {
            "completions": len(batch),
            "correct": counts["correct"],
            **{r: counts[r] for r in FAILURE_REASONS},
            "problems_solved": len(solved),
        }
        if strategy is Strategy.POT:
            row["pot_reasons"] = dict(Counter(s.meta["pot_reason"] for s in batch if "pot_reason" in s.meta))
        by_strategy[strategy.value] = row
        log.info("teacher %s / %s: %s", teacher.name, strategy.value, row)
        if batch and not counts["correct"]:
            warnings.append(_nothing_correct(teacher.name, strategy, batch, counts))
            log.warning("%s", warnings[-1])
    failures = Counter(s.meta["failure"] for s in samples if s.meta.get("failure"))
    stats = {
        "teacher": teacher.name,
        "problems": len(problems),
        "k": k,
        "strategies": [s.value for s in strategies],
        "completions": len(samples),
        "correct": sum(s.correct for s in samples),
        "failures": {r: failures[r] for r in FAILURE_REASONS},
        "by_strategy": by_strategy,
        "problems_solved_any": len({s.problem_id for s in samples if s.correct}),
        "cached": sum(bool(s.meta.get("cached")) for s in samples),
        "warnings": warnings,
    }
    return samples, stats


def _nothing_correct(teacher: str, strategy: Strategy, batch: list[Sample], counts: Counter[str]) -> str:
    """The loud line for a strategy that contributes no training data: how it failed, with one example."""
    why = ", ".join(f"{n} {r}" for r, n in counts.most_common() if r != "correct")
    example = next((s.meta.get("error") for s in batch if s.meta.get("error")), None)
    hint = f"; e.g. {str(example)[:160]!r}" if example else ""
    return (
        f"teacher {teacher} / {strategy.value}: 0 of {len(batch)} completions correct ({why}){hint}: this "
        f"strategy adds nothing to training; check the teacher, its prompts and the data (see teach/samples.jsonl)"
    )


def _judge(batch: list[Sample], strategy: Strategy, pot_timeout_s: float, judging: Judging) -> None:
    """Set pred/correct/failure in place; all PoT programs of the batch run in one sandbox batch."""
    todo = [s for s in batch if s.meta.get("failure") is None]
    if strategy is Strategy.POT:
        runnable = [s for s in todo if s.rationale.strip()]
        for s, res in zip(
            runnable,
            run_programs([s.rationale for s in runnable], timeout_s=pot_timeout_s, mode=judging.sandbox_mode),
            strict=True,
        ):
            s.pred = res.answer if res.ok else None
            if not res.ok:
                s.meta.update(error=res.error, pot_reason=res.reason)
    for s in todo:
        if not s.gold:
            s.meta["failure"] = "no_gold"
        elif s.pred is None and strategy is Strategy.POT:
            s.meta.setdefault("pot_reason", "no_answer")  # an empty program is not run
            s.meta["failure"] = "timeout" if s.meta["pot_reason"] == "timeout" else "pot_error"
        elif s.pred is None:
            s.meta["failure"] = "unparseable"
        elif answers_match(s.pred, s.gold, judging.rel_tol):
            s.correct = True
        else:
            s.meta["failure"] = "wrong"


def filter_samples(samples: list[Sample], keep: str = "one_per_strategy") -> list[Sample]:
    """The correct samples fit for training, in input order.

    L2M samples must really contain sub-questions and rationales must be non-empty. keep="one_per_strategy"
    (SIKeD) keeps the first per (problem, strategy); keep="all" keeps every one, minus exact duplicates.
    """
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {', '.join(KEEP_MODES)}, got {keep!r}")
    out: list[Sample] = []
    seen: set[tuple[str, Strategy] | tuple[str, Strategy, str]] = set()
    for s in samples:
        if not s.correct or not s.rationale.strip():
            continue
        if s.strategy is Strategy.L2M and not has_subquestions(s.rationale):
            continue
        key = (
            (s.problem_id, s.strategy)
            if keep == "one_per_strategy"
            else (s.problem_id, s.strategy, s.rationale)
        )
        if key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out
