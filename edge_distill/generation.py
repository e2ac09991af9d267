"""Batched text generation with transformers: left padding, length-sorted batches, n samples per prompt.

Generic on purpose: evaluation, SIKeD self-sampling and CasCoD's two-stage decoding (objectives/build.py)
all call `generate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
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
) -> list[list[str]]:
    """Generate `n` completions per prompt; returns `out[i]` = the n completions of `prompts[i]`.

    `batch_size` counts prompts per forward (each expands to n sequences when sampling). Prompts are sorted
    by token length so each batch pads little, and the longest batch runs first so an out-of-memory error
    shows up immediately. temperature 0 is greedy: one sequence is decoded and repeated n times.
    Completions exclude the prompt and special tokens and are cut before the first stop string.
    """
    from transformers import GenerationConfig

    if n < 1 or batch_size < 1:
        raise ValueError(f"generate: n={n} and batch_size={batch_size} must be >= 1")
    prompts = list(prompts)
    if not prompts:
        return []
    sample = temperature > 0
    n_seq = n if sample else 1
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        top_k=None,  # the model's default top_k (often 50) would silently change the sampling distribution
        num_return_sequences=n_seq,
        pad_token_id=pad_id,
        eos_token_id=eos,
        stop_strings=list(stop_strings) if stop_strings else None,
    )
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    device = next(model.parameters()).device
    results: list[list[str]] = [[] for _ in prompts]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # right padding would put pad tokens between prompt and completion
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            out = model.generate(
                **enc, generation_config=config, tokenizer=tokenizer if stop_strings else None
            )
            new = out[:, enc["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(idx):
                got = [cut_at_stop(t, stop_strings) for t in texts[j * n_seq : (j + 1) * n_seq]]
                results[i] = got if sample else got * n
            bar.update(len(idx))
        bar.close()
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return results
