"""CasCoD: cascading decomposed CoT distillation as a data transform plus a weighting of `weighted_ce`.

"Improve Student's Reasoning Generalizability through Cascading Decomposed CoTs Distillation"
(Dai et al., 2024). Each CoT/L2M sample becomes two training examples:
- rationale example: student prompt → " [cot]: <rationale>" + EOS (the answer is removed), weight (1−α);
- answer example: student prompt + " [cot]: <rationale>" + "\\n" + marker → " <N>." + EOS, weight α.
Loss per sample = (1−α)·mean CE(rationale tokens) + α·mean CE(answer tokens). The per-part token means live
in the weights (contract: `Σ_t w_t·CE_t / #examples in the step`), so the loss is right whether both parts
land in the same batch or in different micro-batches of one accumulated step. Because one sample occupies
two examples, both parts are scaled by 2: the step loss is then the mean over samples of the CasCoD loss
(and α=0 equals rationale-only SFT exactly). PoT samples are plain SFT examples (no answer step to cut).

Train and inference templates are the same strings (the published code trains on "A:Rationale:" but infers
with "A:\\nRationale:"): `answer_prompt(prompt, rationale_text, marker)` builds the stage-2 prompt both for
the answer example and for two-stage inference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from edge_distill.objectives.examples import Example
from edge_distill.objectives.sft import encode
from edge_distill.strategies import ANSWER_MARKER, format_response, student_prompt
from edge_distill.types import Sample, Strategy

log = logging.getLogger(__name__)

ANSWER_JOIN = "\n"  # between the rationale and the marker, in training and at inference


@dataclass(frozen=True)
class CascodText:
    """The three strings of one CasCoD sample: stage-1 prompt, rationale target, answer target."""

    prompt: str
    rationale: str  # " [cot]: …" without the final-answer line
    answer: str  # text after the marker, e.g. " 72."


def answer_prompt(prompt: str, rationale_text: str, marker: str = ANSWER_MARKER) -> str:
    """Stage-2 prompt: the stage-1 prompt, the rationale (trailing whitespace dropped) and the marker —
    the string `decoding.staged_decode` builds at inference, so one function serves both."""
    from edge_distill import decoding

    return decoding.answer_prompt(prompt, rationale_text, decoding.two_stage(marker, answer_join=ANSWER_JOIN))


def split_response(response: str, marker: str = ANSWER_MARKER) -> tuple[str, str] | None:
    """Split a formatted response at its last answer marker → (rationale text, answer text), or None."""
    i = response.rfind(marker)
    if i < 0:
        return None
    rationale, answer = response[:i].rstrip(), response[i + len(marker) :]
    if not rationale or not answer.strip():
        return None
    return rationale, answer


def cascod_text(sample: Sample, marker: str = ANSWER_MARKER) -> CascodText | None:
    """The CasCoD strings of a CoT/L2M sample (None for PoT or a response without the marker)."""
    if sample.strategy == Strategy.POT:
        return None
    answer = sample.gold or sample.pred  # as in SFT (objectives.sft.sample_response)
    parts = split_response(format_response(sample.strategy, sample.rationale, answer), marker)
    if parts is None:
        return None
    return CascodText(student_prompt(sample.question), parts[0], parts[1])


def cascod_weights(n_prompt: int, n_target: int, part_weight: float, parts: int = 2) -> list[float]:
    """Weights of one part: 0 on the prompt, `parts·part_weight / n_target` on each target token."""
    w = parts * part_weight / n_target if n_target else 0.0
    return [0.0] * n_prompt + [w] * n_target


def build_cascod_examples(
    tokenizer: Any,
    samples: Sequence[Sample],
    *,
    alpha: float = 0.1,
    marker: str = ANSWER_MARKER,
    max_length: int = 1024,
) -> tuple[list[Example], dict[str, Any]]:
    """CasCoD examples for CoT/L2M samples, plain SFT examples for PoT (and marker-less) samples.

    Returns (examples, metrics); metrics carry α and the counts the run report shows. Samples whose
    answer example would exceed `max_length` are dropped (truncating would cut the answer away).
    """
    from edge_distill.objectives.sft import build_sft_examples

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"train.cascod.alpha must be in [0, 1], got {alpha}")
    eos = tokenizer.eos_token_id
    examples: list[Example] = []
    passthrough: list[Sample] = []
    passthrough_index: list[int] = []  # position of each passed-through sample in `samples`
    n_split = n_long = 0
    for i, s in enumerate(samples):
        text = cascod_text(s, marker)
        if text is None:
            passthrough.append(s)
            passthrough_index.append(i)
            continue
        p_ids = encode(tokenizer, text.prompt)
        r_ids = encode(tokenizer, text.rationale) + [eos]
        q_ids = encode(tokenizer, answer_prompt(text.prompt, text.rationale, marker))
        a_ids = encode(tokenizer, text.answer) + [eos]
        if len(q_ids) + len(a_ids) > max_length:
            n_long += 1
            continue
        group = f"cascod:{s.problem_id}:{i}"
        examples.append(
            Example(p_ids + r_ids, cascod_weights(len(p_ids), len(r_ids), 1.0 - alpha), group, sample=i)
        )
        examples.append(
            Example(q_ids + a_ids, cascod_weights(len(q_ids), len(a_ids), alpha), group, sample=i)
        )
        n_split += 1
    for ex in build_sft_examples(tokenizer, passthrough, max_length):
        ex.sample = passthrough_index[ex.sample] if ex.sample is not None else None
        examples.append(ex)
    metrics = {
        "objective": "cascod",
        "cascod_alpha": alpha,
        "cascod_marker": marker,
        "cascod_samples_split": n_split,
        "cascod_samples_passthrough": len(passthrough),
        "cascod_dropped_too_long": n_long,
        "examples": len(examples),
    }
    log.info(
        "cascod: %d samples split, %d passed through (PoT/no marker), %d too long",
        n_split,
        len(passthrough),
        n_long,
    )
    return examples, metrics


def cascod_loss_reference(
    rationale_logits: torch.Tensor,
    rationale_targets: torch.Tensor,
    answer_logits: torch.Tensor,
    answer_targets: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """The paper's loss for one sample, written directly (the oracle for the weighted path in tests).

    rationale_logits [Tr, V] predicting rationale_targets [Tr]; answer_logits [Ta, V] predicting
    answer_targets [Ta] → scalar (1−α)·mean CE_r + α·mean CE_a.
    """
    l_r = F.cross_entropy(rationale_logits.float(), rationale_targets)
    l_a = F.cross_entropy(answer_logits.float(), answer_targets)
    return (1.0 - alpha) * l_r + alpha * l_a
