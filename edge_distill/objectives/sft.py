"""Plain SFT examples: the student learns the response (strategy tag + rationale + answer) after the prompt.

The loss is a per-sample token mean over the response (weights 1/#response tokens), averaged over the
samples of an optimizer step — short and long rationales count equally, as in SIKeD's SFT.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from edge_distill.objectives.examples import Example
from edge_distill.types import Sample, Strategy

logger = logging.getLogger(__name__)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids without special tokens. Prompt and response are encoded separately and concatenated so
    the prompt's tokens are exactly what the student sees at inference (where the prompt is encoded
    alone and the response is generated after it)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def sample_response(sample: Sample) -> str:
    """The response text for a sample: tag + rationale (+ answer line for CoT/L2M)."""
    from edge_distill.strategies import format_response

    answer = None if sample.strategy == Strategy.POT else (sample.gold or sample.pred)
    return format_response(sample.strategy, sample.rationale, answer)


def build_sft_examples(
    tokenizer: Any,
    samples: Sequence[Sample],
    max_length: int,
    stats: dict[str, int] | None = None,
) -> list[Example]:
    """One Example per sample: prompt (weight 0) + response + EOS (weights 1/#response tokens).

    Examples longer than `max_length` tokens are dropped, not truncated: cutting the tail would train the
    student on rationales without their answer. The number dropped is logged and, when `stats` is given,
    stored in `stats["dropped_too_long"]` (with `stats["examples"]`).
    """
    from edge_distill.strategies import student_prompt

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            "build_sft_examples: the tokenizer has no eos_token_id; the student must learn to stop"
        )
    examples: list[Example] = []
    dropped = 0
    for i, s in enumerate(samples):
        prompt = encode(tokenizer, student_prompt(s.question))
        response = encode(tokenizer, sample_response(s)) + [eos]
        if len(prompt) + len(response) > max_length:
            dropped += 1
            continue
        w = 1.0 / len(response)
        examples.append(
            Example(
                prompt + response,
                [0.0] * len(prompt) + [w] * len(response),
                f"sft:{s.problem_id}:{i}",
                sample=i,
            )
        )
    if dropped:
        logger.warning(
            "SFT: dropped %d of %d samples longer than max_length=%d tokens (raise train.max_length to keep them)",
            dropped,
            len(samples),
            max_length,
        )
    if stats is not None:
        stats["dropped_too_long"] = stats.get("dropped_too_long", 0) + dropped
        stats["examples"] = stats.get("examples", 0) + len(examples)
    return examples
