"""EDIT: dual-CoT pairs (AHP/CCP or offline twins), their filter, and the KRSL example weights.

"Beyond Imitation: Learning Key Reasoning Steps from Dual Chain-of-Thoughts in Reasoning Distillation"
(Dai et al., 2024). Step 1 is plain SFT on right CoTs (+ AHP-right ones); step 2 trains the step-1 model
with the key reasoning step loss (KRSL): per pair, `L = Σ_t w_t·CE_t / n_right + Σ_t w'_t·CE_t / n_wrong`
where w = +right_weight on the right CoT's key-step tokens (shared_weight elsewhere) and w' = −wrong_weight
on the wrong CoT's key-step tokens (0 elsewhere); the trainer drops a negative term once its CE exceeds
`nll_cap` (`weighted_ce(..., nll_cap)`). Each pair gives two examples, so both are scaled by 2 to make the
step loss the mean over pairs of L (contract: `Σ w·CE / #examples in the step`).
Not copied from the published code: its step 2 crashes on an unset attribute, and it silently falls back
to inverted-sign weights when the script's values are missing — here every weight is an explicit argument.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, is_dataclass, replace
from typing import Any

from edge_distill.answers import answers_match
from edge_distill.objectives.dual_cot import (
    STOP_STRINGS,
    ahp_prompt,
    ccp_prompt,
    cut_completion,
    perturb_rationale,
    split_rationale,
)
from edge_distill.objectives.examples import Example
from edge_distill.objectives.keysteps import KeySteps, key_step_fraction, key_steps
from edge_distill.objectives.sft import encode
from edge_distill.strategies import format_response, judge, student_prompt
from edge_distill.types import DEFAULT_JUDGING, DEFAULT_REL_TOL, Judging, Sample, Strategy

log = logging.getLogger(__name__)

DUAL_STRATEGIES = (Strategy.COT, Strategy.L2M)


@dataclass(frozen=True)
class DualPair:
    """A right and a wrong rationale for the same problem; `kind` is "ahp", "ccp" or "perturb"."""

    right: Sample
    wrong: Sample
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "right": self.right.to_dict(), "wrong": self.wrong.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DualPair:
        return cls(Sample.from_dict(d["right"]), Sample.from_dict(d["wrong"]), d["kind"])


# --------------------------------------------------------------------------- pair construction
def offline_pairs(
    samples: Sequence[Sample], rel_tol: float = DEFAULT_REL_TOL
) -> tuple[list[DualPair], dict[str, int]]:
    """Pairs for a teacher that cannot be re-prompted: each right CoT/L2M sample + its op-swapped twin."""
    pairs: list[DualPair] = []
    stats: Counter[str] = Counter()
    for s in samples:
        if s.strategy not in DUAL_STRATEGIES or not s.correct:
            continue
        twin = perturb_rationale(s.rationale, s.gold, seed=f"{s.problem_id}:{s.strategy.value}")
        if twin is None:
            stats["no_perturbable_step"] += 1
            continue
        rationale, answer, p = twin
        wrong = replace(
            s,
            rationale=rationale,
            raw="",
            pred=answer,
            correct=answers_match(answer, s.gold, rel_tol),
            source="synthetic",
            meta={**s.meta, "edit": "perturb", "swap": p.swap, "step": p.step},
        )
        pairs.append(DualPair(s, wrong, "perturb"))
    stats["pairs_built"] = len(pairs)
    return pairs, dict(stats)


def _teacher_sample(base: Sample, text: str, kind: str, judging: Judging) -> Sample:
    text = cut_completion(text)
    pred, correct = judge(base.strategy, text, base.gold, judging=judging)
    return replace(
        base, rationale=split_rationale(text), raw=text, pred=pred, correct=correct, meta={"edit": kind}
    )


def _with_stops(sampling: Any, temperature: float | None = None) -> Any:
    """The caller's sampling plus our exemplar boundaries as stop strings (and AHP's low temperature)."""
    if sampling is None or not is_dataclass(sampling):
        return sampling
    changes: dict[str, Any] = {}
    if hasattr(sampling, "stop"):
        changes["stop"] = tuple(sampling.stop) + tuple(s for s in STOP_STRINGS if s not in sampling.stop)
    if temperature is not None and hasattr(sampling, "temperature"):
        changes["temperature"] = temperature
    return replace(sampling, **changes)


def live_pairs(
    teacher: Any,
    samples: Sequence[Sample],
    sampling: Any = None,
    *,
    k: int = 1,
    ahp_temperature: float | None = 0.2,
    judging: Judging = DEFAULT_JUDGING,
) -> tuple[list[DualPair], dict[str, int]]:
    """AHP for each wrong CoT, CCP for each right CoT, through `teacher.complete(prompts, k, sampling)`.

    `samples` are the teacher's judged CoT samples, right and wrong (teach/samples.jsonl). AHP runs at
    `ahp_temperature` (the paper's 0.2), CCP at the given sampling; both stop at our exemplar boundaries.
    Completions that failed (finish_reason "error") or were cut ("length") are counted and skipped; judging
    the new side happens here, keeping or dropping the pair in `filter_pairs`.
    """
    cots = [s for s in samples if s.strategy == Strategy.COT]
    wrong = [s for s in cots if not s.correct]
    right = [s for s in cots if s.correct]
    stats: Counter[str] = Counter(ahp_requests=len(wrong), ccp_requests=len(right))
    pairs: list[DualPair] = []
    for kind, bases, prompts, samp in (
        (
            "ahp",
            wrong,
            [ahp_prompt(s.question, s.gold) for s in wrong],
            _with_stops(sampling, ahp_temperature),
        ),
        ("ccp", right, [ccp_prompt(s.question, s.rationale, s.gold) for s in right], _with_stops(sampling)),
    ):
        if not prompts:
            continue
        for base, outs in zip(bases, teacher.complete(prompts, k, samp), strict=True):
            for c in outs:
                if c.finish_reason != "stop":
                    stats[f"{kind}_teacher_{c.finish_reason}"] += 1
                    continue
                new = _teacher_sample(base, c.text, kind, judging)
                pairs.append(DualPair(new, base, kind) if kind == "ahp" else DualPair(base, new, kind))
    stats["pairs_built"] = len(pairs)
    return pairs, dict(stats)


def filter_pairs(
    pairs: Sequence[DualPair], rel_tol: float = DEFAULT_REL_TOL
) -> tuple[list[DualPair], dict[str, int]]:
    """Keep pairs whose right side is correct and whose wrong side has a wrong (extractable) answer.

    Drop reasons: empty_rationale (seen with a real small teacher: AHP answering only "The answer is
    <hint>."), right_not_correct, wrong_no_answer, wrong_not_wrong, identical (no key steps at all).
    """
    kept: list[DualPair] = []
    stats: Counter[str] = Counter()
    for p in pairs:
        gold = p.right.gold
        if not p.right.rationale.strip() or not p.wrong.rationale.strip():
            reason = "empty_rationale"  # e.g. an AHP reply that only restates the hinted answer
        elif p.right.pred is None or not answers_match(p.right.pred, gold, rel_tol):
            reason = "right_not_correct"
        elif p.wrong.pred is None:
            reason = "wrong_no_answer"
        elif answers_match(p.wrong.pred, gold, rel_tol):
            reason = "wrong_not_wrong"
        elif p.right.rationale.strip() == p.wrong.rationale.strip():
            reason = "identical"
        else:
            kept.append(p)
            stats[f"kept_{p.kind}"] += 1
            continue
        stats[f"dropped_{reason}"] += 1
    stats["kept"] = len(kept)
    stats["dropped"] = len(pairs) - len(kept)
    return kept, dict(stats)


def step1_samples(samples: Sequence[Sample], pairs: Sequence[DualPair]) -> list[Sample]:
    """EDIT step 1 data: the correct training samples plus the AHP-right CoTs of kept pairs."""
    out = [s for s in samples if s.correct]
    seen = {(s.problem_id, s.rationale) for s in out}
    for p in pairs:
        if p.kind == "ahp" and (p.right.problem_id, p.right.rationale) not in seen:
            seen.add((p.right.problem_id, p.right.rationale))
            out.append(p.right)
    return out


# --------------------------------------------------------------------------- KRSL weights
def krsl_weights(
    n_prompt: int, diff: Sequence[bool], *, diff_weight: float, shared_weight: float = 0.0, parts: int = 2
) -> list[float]:
    """Per-token KRSL weights for one sequence: prompt [n_prompt] zeros, then one weight per response token.

    diff [n_resp] key-step flags → [n_prompt + n_resp] with `parts·(diff_weight | shared_weight) / n_resp`
    (normalized by the number of label tokens, as in EDIT). Signs are the caller's: pass a negative
    `diff_weight` for the wrong CoT.
    """
    n = len(diff)
    if n == 0:
        return [0.0] * n_prompt
    scale = parts / n
    return [0.0] * n_prompt + [scale * (diff_weight if d else shared_weight) for d in diff]


def _response(s: Sample) -> str:
    """Right side: the gold answer (as SFT writes it); wrong side: its own (wrong) prediction."""
    return format_response(s.strategy, s.rationale, (s.gold or s.pred) if s.correct else s.pred)


def build_krsl_examples(
    tokenizer: Any,
    pairs: Sequence[DualPair],
    *,
    right_weight: float = 1.0,
    wrong_weight: float = 0.025,
    shared_weight: float = 0.0,
    max_length: int = 1024,
) -> tuple[list[Example], dict[str, Any]]:
    """Two examples per pair (right: +right_weight on key steps; wrong: −wrong_weight on key steps).

    `wrong_weight` is a magnitude (config `train.edit.wrong_weight`); a negative value is an error rather
    than a silent sign flip. Key steps come from `key_steps` over the response token ids (prompt + EOS
    included in the sequences, EOS never a key step unless the lengths differ there).
    """
    if wrong_weight < 0 or right_weight < 0:
        raise ValueError(
            f"train.edit weights are magnitudes (got right={right_weight}, wrong={wrong_weight})"
        )
    eos = tokenizer.eos_token_id
    examples: list[Example] = []
    all_steps: list[KeySteps] = []
    n_long = 0
    for i, p in enumerate(pairs):
        prompt = encode(tokenizer, student_prompt(p.right.question))
        r_ids = encode(tokenizer, _response(p.right)) + [eos]
        w_ids = encode(tokenizer, _response(p.wrong)) + [eos]
        if len(prompt) + max(len(r_ids), len(w_ids)) > max_length:
            n_long += 1
            continue
        steps = key_steps(r_ids, w_ids)
        all_steps.append(steps)
        group = f"edit:{p.right.problem_id}:{i}"
        rw = krsl_weights(len(prompt), steps.a_diff, diff_weight=right_weight, shared_weight=shared_weight)
        ww = krsl_weights(len(prompt), steps.b_diff, diff_weight=-wrong_weight, shared_weight=0.0)
        examples.append(Example(prompt + r_ids, rw, group, sample=i))  # `sample`: the pair's right side
        examples.append(Example(prompt + w_ids, ww, group))
    frac = key_step_fraction(all_steps)
    metrics: dict[str, Any] = {
        "objective": "edit",
        "edit_pairs_used": len(all_steps),
        "edit_pairs_too_long": n_long,
        "key_step_fraction": frac["key_step_fraction"],
        "key_step_tokens": int(frac["key_step_tokens"]),
        "response_tokens": int(frac["total_tokens"]),
        "edit_right_weight": right_weight,
        "edit_wrong_weight": -wrong_weight,
        "edit_shared_weight": shared_weight,
        "examples": len(examples),
    }
    log.info(
        "edit: %d pairs → %d examples, key-step fraction %.3f",
        len(all_steps),
        len(examples),
        frac["key_step_fraction"],
    )
    return examples, metrics
