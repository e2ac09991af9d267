"""FDD: feedback-driven distillation (docs/methods.md, "FDD"; no public code, the design beyond the abstract is ours).

round_0 trains on the teacher data. Each later round: the student solves every training problem
(greedy or k samples) → easy/hard; the teacher writes a harder variant of each easy problem and a new
problem of similar complexity for each hard one; candidates too close to an eval question
(contamination) or to a training problem / each other (near duplicates) are dropped *before* any
solution is paid for; the rest are kept only if independent teacher solutions agree (PoT vs CoT, or a
majority of k); verified problems join the data with their agreeing rationales (cumulative) and the
student is retrained (continuing from the previous round or from the base).
Accounting per round: requested == added + Σ dropped[reason].
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.config import EvalConfig, FddConfig, SikedConfig
from edge_distill.errors import ConfigError
from edge_distill.io import make_dirs, read_jsonl, write_json, write_jsonl
from edge_distill.methods import (
    Stages,
    adopt_eval,
    best_index,
    cached_problems,
    cached_rows,
    cached_samples,
    dev_record,
    evaluated,
    read_record,
    trained_model,
)
from edge_distill.methods.dedup import check_candidates, settings
from edge_distill.methods.mixing import alpha, composition, filter_correct
from edge_distill.methods.sampling import SamplingParams, sample_student
from edge_distill.methods.siked import MethodResult, SamplerFactory
from edge_distill.rundir import from_stored, to_stored
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Sample, Strategy

log = logging.getLogger(__name__)

DROP_REASONS = ("teacher_error", "unparsable", "contaminated", "near_duplicate", "no_answer", "disagreement")
_CUT_RE = re.compile(r"\n\s*\n|\n\s*(?:Solution|Answer|Original problem|Problem|Question)\b", re.IGNORECASE)


def feedback_sampling(
    params: FddConfig, siked: SikedConfig, max_new_tokens: int, seed: int
) -> SamplingParams:
    """How the student answers the training problems for the easy/hard split: greedy with one sample, else
    sampled like SIKeD; as long as an eval answer (`eval.max_new_tokens`)."""
    greedy = params.feedback_samples == 1
    return SamplingParams(
        n=params.feedback_samples,
        temperature=0.0 if greedy else siked.temperature,
        top_p=siked.top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )


def require_live_teacher(teacher: Any) -> None:
    if not callable(getattr(teacher, "complete", None)):
        raise ConfigError(
            f"methods: fdd needs a live teacher that can write new problems (teacher.backend: llamacpp, http, "
            f"transformers or vllm); {getattr(teacher, 'name', teacher)!r} only replays recorded solutions"
        )


def parse_problem(text: str) -> str | None:
    """The problem the teacher wrote: up to the first blank line or solution/answer heading."""
    body = _CUT_RE.split(text.strip(), maxsplit=1)[0].strip().strip('"').strip()
    if len(body.split()) < 6 or len(body) > 1200:
        return None
    return body


def classify(
    samples: Sequence[Sample], problems: Sequence[Problem], threshold: float
) -> dict[str, list[str]]:
    """Easy = solved in ≥ `threshold` of its samples (and at least once); hard = the rest."""
    total, right = Counter(s.problem_id for s in samples), Counter(s.problem_id for s in samples if s.correct)
    easy = [p.id for p in problems if right[p.id] > 0 and right[p.id] / max(1, total[p.id]) >= threshold]
    easy_set = set(easy)
    return {"easy": easy, "hard": [p.id for p in problems if p.id not in easy_set]}


def agreed_answer(preds: dict[Strategy, list[str | None]], mode: str, k: int) -> str | None:
    """PoT-vs-CoT: the majority PoT answer equals the majority CoT answer. Majority: one answer has more
    than half of all k·|strategies| votes. Answers are compared after normalization."""
    from edge_distill.answers import normalize_number

    def top(values: list[str | None]) -> tuple[str | None, int]:
        counts = Counter(n for n in (normalize_number(v) if v else None for v in values) if n is not None)
        return counts.most_common(1)[0] if counts else (None, 0)

    if mode == "pot_cot":
        pot, _ = top(preds.get(Strategy.POT, []))
        cot, _ = top(preds.get(Strategy.COT, []))
        return pot if pot is not None and pot == cot else None
    answer, votes = top([p for vs in preds.values() for p in vs])
    return answer if votes * 2 > k * len(preds) else None


def _write_prompts(problems: list[Problem], kinds: dict[str, str], params: FddConfig) -> list[str]:
    return [
        (params.harder_template if kinds[p.id] == "easy" else params.similar_template).format(
            question=p.question
        )
        for p in problems
    ]


def _pick_sources(problems: list[Problem], split: dict[str, list[str]], cap: int | None) -> list[Problem]:
    """Easy and hard problems interleaved, so a cap keeps both kinds."""
    by_id = {p.id: p for p in problems}
    easy, hard = [by_id[i] for i in split["easy"]], [by_id[i] for i in split["hard"]]
    out = [x for pair in zip(easy, hard, strict=False) for x in pair]
    n = min(len(easy), len(hard))
    out += easy[n:] + hard[n:]
    return out[:cap] if cap else out


def generate_problems(
    teacher: Any,
    sources: list[Problem],
    split: dict[str, list[str]],
    round_k: int,
    params: FddConfig,
    *,
    existing: Sequence[str],
    eval_questions: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per requested problem: source, kind, text, and `drop` (a reason) or None."""
    from edge_distill.teachers.live import Sampling

    kinds = {pid: kind for kind, ids in split.items() for pid in ids}
    sampling = Sampling(
        temperature=params.write_temperature, top_p=0.95, max_tokens=params.write_max_tokens, seed=round_k
    )
    completions = teacher.complete(_write_prompts(sources, kinds, params), 1, sampling) if sources else []
    rows: list[dict[str, Any]] = []
    for p, comps in zip(sources, completions, strict=True):
        c = comps[0] if comps else None
        kind = "harder" if kinds[p.id] == "easy" else "similar"
        row: dict[str, Any] = {
            "id": f"fdd{round_k}-{kind}-{p.id}",
            "source_id": p.id,
            "kind": kind,
            "raw": c.text if c else "",
            "question": None,
            "drop": None,
        }
        if c is None or c.finish_reason == "error":
            row["drop"] = "teacher_error"
        else:
            row["question"] = parse_problem(c.text)
            row["drop"] = None if row["question"] else "unparsable"
        rows.append(row)
    live = [r for r in rows if r["drop"] is None]
    verdicts = check_candidates(
        [r["question"] for r in live],
        existing=existing,
        eval_questions=eval_questions,
        dedup_threshold=params.dedup_threshold,
        contamination_threshold=params.contamination_threshold,
    )
    for r, v in zip(live, verdicts, strict=True):
        r.update(
            drop=v.reason,
            eval_score=round(v.eval_score, 4),
            dup_score=round(v.dup_score, 4),
            match=v.match if not v.keep else None,
        )
    return rows


def verify_problems(
    teacher: Any, rows: list[dict[str, Any]], params: FddConfig, *, judging: Judging = DEFAULT_JUDGING
) -> tuple[list[Problem], list[Sample]]:
    """Solve the surviving candidates independently; keep those whose solutions agree. Mutates rows' `drop`."""
    from edge_distill.strategies import judge_many, parse_teacher_completion

    live = [r for r in rows if r["drop"] is None]
    cands = [Problem(r["id"], r["question"], "", source=f"fdd:{r['kind']}:{r['source_id']}") for r in live]
    strategies = [Strategy.POT, Strategy.COT]
    texts: dict[Strategy, list[list[str]]] = {}
    preds: dict[Strategy, list[list[str | None]]] = {}
    for s in strategies:
        comps = teacher.generate(cands, s, params.verify_k) if cands else []
        texts[s] = [
            [parse_teacher_completion(s, c.text) for c in cs if c.finish_reason != "error"] for cs in comps
        ]
        flat = [(s, t) for ts in texts[s] for t in ts]
        judged = iter(judge_many(flat, [""] * len(flat), judging=judging))
        preds[s] = [[next(judged)[0] for _ in ts] for ts in texts[s]]
    problems: list[Problem] = []
    samples: list[Sample] = []
    for i, (r, p) in enumerate(zip(live, cands, strict=True)):
        per = {s: preds[s][i] for s in strategies}
        answer = agreed_answer(per, params.verify, params.verify_k)
        if answer is None:
            r["drop"] = "no_answer" if not any(v for vs in per.values() for v in vs) else "disagreement"
            continue
        r["answer"] = answer
        problems.append(Problem(p.id, p.question, answer, source=p.source))
        samples += _agreeing_samples(p, answer, strategies, texts, preds, i, judging.rel_tol)
    return problems, filter_correct(samples)


def _agreeing_samples(
    p: Problem,
    answer: str,
    strategies: list[Strategy],
    texts: dict[Strategy, list[list[str]]],
    preds: dict[Strategy, list[list[str | None]]],
    i: int,
    rel_tol: float,
) -> list[Sample]:
    from edge_distill.answers import answers_match
    from edge_distill.strategies import split_final_answer

    out = []
    for s in strategies:
        for text, pred in zip(texts[s][i], preds[s][i], strict=True):
            if pred is not None and answers_match(pred, answer, rel_tol):
                rationale = text if s is Strategy.POT else split_final_answer(text)[0]
                out.append(
                    Sample(
                        p.id,
                        p.question,
                        answer,
                        s,
                        rationale,
                        raw=text,
                        pred=pred,
                        correct=True,
                        source="synthetic",
                        meta={"fdd_source": p.source},
                    )
                )
    return out


def run_fdd(
    out_dir: Path,
    *,
    train_problems: Sequence[Problem],
    dev_problems: Sequence[Problem],
    teacher_samples: Sequence[Sample],
    base_model: Path,
    stages: Stages,
    sampler_factory: SamplerFactory,
    teacher: Any,
    params: FddConfig,
    feedback: SamplingParams | None = None,
    seed: int = 0,
    eval_questions: Sequence[str] = (),
    start_model: Path | None = None,
    start_summary: dict[str, Any] | None = None,
) -> MethodResult:
    """Run (or resume) FDD rounds under `out_dir/round_k/`; returns the best round on dev and the
    cumulative problems/samples (so SIKeD can run on the enriched data next). `feedback`: the student's
    sampling for the easy/hard split (default: `feedback_sampling` with the config's defaults)."""
    require_live_teacher(teacher)
    if feedback is None:
        feedback = feedback_sampling(params, SikedConfig(), EvalConfig().max_new_tokens, seed)
    original, dev = list(train_problems), list(dev_problems)
    problems, samples = list(original), list(teacher_samples)
    eval_questions = list(eval_questions) + [p.question for p in dev]
    ctx = _Round(
        original, teacher, stages, sampler_factory, params, feedback, eval_questions, Path(base_model)
    )
    records: list[dict[str, Any]] = []
    model: Path | None = None
    for k in range(params.rounds):
        step = out_dir / f"round_{k}"
        record = read_record(step)
        if record is not None:
            log.info("FDD round %d: finished earlier (dev %.3f), skipped", k, record["dev"]["accuracy"])
            problems = cached_problems(step / "problems.jsonl", lambda: [])
            samples = cached_samples(step / "samples.jsonl", lambda: [])
        else:
            make_dirs(step)
            t0 = time.perf_counter()
            record = {"round": k}
            if k == 0 and start_model is not None:
                record["adopted"] = to_stored(start_model, out_dir)
                model = Path(start_model)
                adopt_eval(step, start_summary)
            else:
                model, problems, samples = _train_round(step, k, model, problems, samples, record, ctx)
            write_jsonl(step / "problems.jsonl", (p.to_dict() for p in problems))
            write_jsonl(step / "samples.jsonl", (s.to_dict() for s in samples))
            summary = evaluated(stages, model, dev, step / "eval")
            record.update(
                model=to_stored(model, out_dir),
                train_size=len(samples),
                problems=len(problems),
                alpha=alpha(samples),
                composition=composition(samples),
                wall_s=round(time.perf_counter() - t0, 1),
                dev=dev_record(summary),
            )
            write_json(step / "record.json", record)
            log.info(
                "FDD round %d: dev accuracy %.3f, %d problems", k, record["dev"]["accuracy"], len(problems)
            )
        model = from_stored(record["model"], out_dir)
        records.append(record)
    best = best_index(records)
    best_dir = out_dir / f"round_{best}"
    return MethodResult(
        from_stored(records[best]["model"], out_dir),
        best,
        records,
        cached_problems(best_dir / "problems.jsonl", lambda: problems),
        cached_samples(best_dir / "samples.jsonl", lambda: samples),
        best_dir,
    )


@dataclass(frozen=True)
class _Round:
    """What every FDD round reads and no round changes."""

    original: list[Problem]
    teacher: Any
    stages: Stages
    sampler_factory: SamplerFactory
    params: FddConfig
    feedback: SamplingParams
    eval_questions: list[str]
    base_model: Path


def _train_round(step: Path, k: int, model: Path | None, problems: list[Problem], samples: list[Sample],
                 record: dict[str, Any], ctx: _Round) -> tuple[Path, list[Problem], list[Sample]]:  # fmt: skip
    """Round k: (k > 0) grow the data from the student's feedback, then train on all of it."""
    if k > 0:
        assert model is not None
        new_p, new_s = _feedback_and_generate(
            step, k, model, ctx.original, problems, ctx.teacher, ctx.stages, ctx.sampler_factory, ctx.params,
            ctx.feedback, ctx.eval_questions, record,
        )  # fmt: skip
        problems, samples = problems + new_p, samples + new_s
    assert model is not None or k == 0
    base = ctx.stages.full_model(model, step) if (k > 0 and ctx.params.continue_training) else ctx.base_model
    return trained_model(ctx.stages, samples, base, step / "train"), problems, samples


def _feedback_and_generate(
    step: Path,
    k: int,
    model: Path,
    original: list[Problem],
    problems: list[Problem],
    teacher: Any,
    stages: Stages,
    sampler_factory: SamplerFactory,
    params: FddConfig,
    feedback: SamplingParams,
    eval_questions: list[str],
    record: dict[str, Any],
) -> tuple[list[Problem], list[Sample]]:
    """Feedback → easy/hard → teacher writes candidates → dedup/contamination → verification; every
    step saved in `step/` (feedback, generated, accounting, verified) so a resume makes no teacher call."""
    start = stages.full_model(model, step)
    questions = original[: params.limit_questions] if params.limit_questions else original

    def answer() -> list[Sample]:
        return sample_student(sampler_factory(start), questions, feedback, judging=stages.judging)[0]

    fb = cached_samples(step / "feedback.jsonl", answer)
    split = classify(fb, questions, params.easy_threshold)
    sources = _pick_sources(questions, split, params.max_new_problems)
    rows = cached_rows(
        step / "generated.jsonl",
        lambda: generate_problems(
            teacher,
            sources,
            split,
            k,
            params,
            existing=[p.question for p in problems],
            eval_questions=eval_questions,
        ),
    )
    verified = step / "verified.jsonl"
    if not verified.is_file():
        new_p, new_s = verify_problems(teacher, rows, params, judging=stages.judging)
        write_jsonl(step / "accounting.jsonl", rows)
        write_jsonl(step / "new_problems.jsonl", (p.to_dict() for p in new_p))
        write_jsonl(verified, (s.to_dict() for s in new_s))  # written last: marks verification done
    rows = read_jsonl(step / "accounting.jsonl")
    new_p = [Problem.from_dict(r) for r in read_jsonl(step / "new_problems.jsonl")]
    new_s = [Sample.from_dict(r) for r in read_jsonl(verified)]
    dropped = Counter(r["drop"] for r in rows if r["drop"] is not None)
    record.update(
        easy=len(split["easy"]),
        hard=len(split["hard"]),
        requested=len(rows),
        generated=sum(r["drop"] not in ("teacher_error", "unparsable") for r in rows),
        verified=len(new_p),
        added_samples=len(new_s),
        dropped={r: dropped.get(r, 0) for r in DROP_REASONS},
        similarity=settings(params.dedup_threshold, params.contamination_threshold, len(eval_questions)),
    )
    return new_p, new_s
