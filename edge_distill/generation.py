"""Batched student generation with transformers: continuous batching (batching.py) or static length-sorted
batches with left padding; n samples per prompt.

Evaluation, SIKeD/FDD self-sampling and CasCoD's two-stage decoding (objectives/build.py) all call
`generate`, so every torch decode of the student stops where its answer is complete (`stopping.py`, the
rule llama.cpp and ONNX Runtime GenAI apply too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from edge_distill.stopping import AnswerStop, cut_answer

logger = logging.getLogger(__name__)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids to stop on: the tokenizer's (what training appends) plus the model's own."""
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return ids


def cut_at_stop(text: str, stop_strings: Sequence[str] | None) -> str:
    """Text up to (not including) the earliest stop string, as OpenAI-style APIs return it."""
    if not stop_strings:
        return text
    cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=len(text))
    return text[:cut]


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    stop_strings: Sequence[str] | None = None,
    progress: bool = True,
    engine: str = "continuous",
    stop_at_answer: bool = True,
) -> list[list[str]]:
    """Generate `n` completions per prompt; returns `out[i]` = the n completions of `prompts[i]`.

    `batch_size` counts prompts per forward (each expands to n sequences when sampling). Prompts are sorted
    by token length so each batch pads little, and the longest batch runs first so an out-of-memory error
    shows up immediately. temperature 0 is greedy: one sequence is decoded and repeated n times.
    Completions exclude the prompt and special tokens and are cut before the first stop string.
    `stop_at_answer` (the student's response format): a sequence also ends once its answer is complete and
    is cut there (`stopping.AnswerStop`); False decodes to EOS or the budget.

    engine "continuous" (default) refills a finished sequence's slot with the next prompt at once
    (batching.py; `batch_size` x n rows decode together); "static" runs each batch until its longest
    answer. Greedy output is the same either way; models whose KV cache cannot be spliced (sliding
    windows) use static batches.
    """
    if engine not in ("continuous", "static"):
        raise ValueError(f"generate: engine={engine!r} is not one of continuous, static")
    if n < 1 or batch_size < 1:
        raise ValueError(f"generate: n={n} and batch_size={batch_size} must be >= 1")
    prompts = list(prompts)
    if not prompts:
        return []
    d = _Decode(
        prompts, n, n if temperature > 0 else 1, batch_size, max_new_tokens, temperature, top_p,
        stop_strings, stop_at_answer, progress,
    )  # fmt: skip
    eos = eos_ids(model, tokenizer)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in prompt_ids]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    if engine == "continuous":
        got = _generate_continuous(model, tokenizer, d, prompt_ids, order, eos)
        if got is not None:
            return got
        logger.info("this model's KV cache cannot be spliced: static batches")
    return _generate_static(model, tokenizer, d, order, eos)


@dataclass(frozen=True)
class _Decode:
    """The settings of one `generate` call, shared by its continuous and static paths."""

    prompts: list[str]
    n: int
    n_seq: int  # sequences decoded per prompt: n when sampling, 1 when greedy (repeated n times)
    batch_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    stop_strings: Sequence[str] | None
    stop_at_answer: bool
    progress: bool

    def completions(self, prompt: str, texts: list[str]) -> list[str]:
        """A prompt's decoded texts, cut (`_cut`) and, when greedy, repeated to n."""
        got = [_cut(t, prompt, self.stop_strings, self.stop_at_answer) for t in texts]
        return got if self.n_seq > 1 else got * self.n

    def bar(self) -> Any:
        return tqdm(
            total=len(self.prompts), desc="generate", unit="prompt", disable=not self.progress, leave=False
        )


def _generate_static(
    model: Any, tokenizer: Any, d: _Decode, order: list[int], eos: list[int]
) -> list[list[str]]:
    """Length-sorted, left-padded batches, each decoded by `model.generate` until its longest answer."""
    from transformers import GenerationConfig

    sample = d.temperature > 0
    config = GenerationConfig(
        max_new_tokens=d.max_new_tokens,
        do_sample=sample,
        temperature=d.temperature if sample else None,
        top_p=d.top_p if sample else None,
        top_k=None,  # the model's default top_k (often 50) would silently change the sampling distribution
        num_return_sequences=d.n_seq,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0],
        eos_token_id=eos,
        stop_strings=list(d.stop_strings) if d.stop_strings else None,
    )
    device = next(model.parameters()).device
    prompts, n_seq = d.prompts, d.n_seq
    results: list[list[str]] = [[] for _ in prompts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # right padding would put pad tokens between prompt and completion
    was_training = model.training
    model.eval()
    try:
        bar = d.bar()
        for start in range(0, len(order), d.batch_size):
            idx = order[start : start + d.batch_size]
            enc = tokenizer(
                [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            width = enc["input_ids"].shape[1]
            rows = [prompts[i] for i in idx for _ in range(n_seq)]
            criteria = _answer_criteria(tokenizer, rows, width) if d.stop_at_answer else None
            out = model.generate(
                **enc, generation_config=config, tokenizer=tokenizer if d.stop_strings else None,
                stopping_criteria=criteria,
            )  # fmt: skip
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for j, i in enumerate(idx):
                results[i] = d.completions(prompts[i], texts[j * n_seq : (j + 1) * n_seq])
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return results


def _cut(text: str, prompt: str, stop_strings: Sequence[str] | None, stop_at_answer: bool) -> str:
    """A completion as returned: before the first stop string, and with `stop_at_answer` up to where its
    answer is complete (the same cut, however the decoding loop stopped)."""
    text = cut_at_stop(text, stop_strings)
    return cut_answer(text, prompt) if stop_at_answer else text


def _answer_criteria(tokenizer: Any, row_prompts: list[str], width: int) -> Any:
    """`model.generate`'s per-row stop for static batches: `stopping.AnswerStop` on each row's text after
    its (left-padded, `width`-wide) prompt."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    rules = [AnswerStop(p) for p in row_prompts]

    class AnswerComplete(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            texts = tokenizer.batch_decode(input_ids[:, width:], skip_special_tokens=True)
            done = [rule(t) is not None for rule, t in zip(rules, texts, strict=True)]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([AnswerComplete()])


def _row_stop(
    tokenizer: Any, prompts: Sequence[str], stop_strings: Sequence[str] | None, stop_at_answer: bool
) -> Any:
    """`stopped(prompt index, sample index, tokens)` for continuous batching, or None: a stop string in
    the row's newest tokens (a tail window: a stop string that appears for the first time ends in the
    newest token), or with `stop_at_answer` its answer complete (`stopping.AnswerStop`, one per row)."""
    strings = [s for s in stop_strings or () if s]
    if not strings and not stop_at_answer:
        return None
    window = 2 * max((len(s) for s in strings), default=0) + 4
    rules: dict[tuple[int, int], AnswerStop] = {}

    def stopped(i: int, j: int, tokens: list[int]) -> bool:
        if strings:
            tail = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
            if any(s in tail for s in strings):
                return True
        if not stop_at_answer:
            return False
        rule = rules.get((i, j))
        if rule is None:
            rule = rules[(i, j)] = AnswerStop(prompts[i])
        return rule(tokenizer.decode(tokens, skip_special_tokens=True)) is not None

    return stopped


def _generate_continuous(
    model: Any, tokenizer: Any, d: _Decode, prompt_ids: list[list[int]], order: list[int], eos: list[int]
) -> list[list[str]] | None:
    from edge_distill.batching import decode_continuous

    was_training = model.training
    model.eval()
    bar = d.bar()
    try:
        ids = decode_continuous(
            model,
            prompt_ids,
            order,
            n_seq=d.n_seq,
            slots=d.batch_size * d.n_seq,
            max_new_tokens=d.max_new_tokens,
            eos_ids=eos,
            temperature=d.temperature,
            top_p=d.top_p,
            stopped=_row_stop(tokenizer, d.prompts, d.stop_strings, d.stop_at_answer),
            on_prompt_done=lambda _i: bar.update(1),
        )
    finally:
        bar.close()
        if was_training:
            model.train()
    if ids is None:
        return None
    return [
        d.completions(prompt, tokenizer.batch_decode(outs, skip_special_tokens=True))
        for prompt, outs in zip(d.prompts, ids, strict=True)
    ]
