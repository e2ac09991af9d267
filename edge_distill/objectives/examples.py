"""Training examples (token ids + per-token loss weights) and their batch collator.

Every objective builds `Example`s; the trainer never needs to know which objective made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass
class Example:
    """One training sequence.

    `weights[t]` is the loss weight of predicting token `input_ids[t]` (0 for prompt and padding);
    per-sample normalization lives in the weights, so the loss of an optimizer step is
    Σ_t w_t · CE_t / (#examples in the step). `group` ties examples that come from one sample
    (CasCoD's rationale/answer pair, EDIT's right/wrong twins) for bookkeeping; `sample` is the index of
    that sample in the list the builder was given (None when the example is not one sample's text).
    `kd` (logit distillation, objectives/kd_train.py): the teacher's top-k distribution of predicting
    token t, as (ids int32 [T, k] with −1 for none, log-probs float16 [T, k]); None = no teacher rows.
    """

    input_ids: list[int]
    weights: list[float]
    group: str = ""
    sample: int | None = None
    kd: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.weights):
            raise ValueError(
                f"Example: {len(self.input_ids)} input_ids but {len(self.weights)} weights (group={self.group!r})"
            )
        if self.kd is not None and (
            len(self.kd[0]) != len(self.input_ids) or self.kd[0].shape != self.kd[1].shape
        ):
            raise ValueError(
                f"Example: kd rows do not match {len(self.input_ids)} tokens (group={self.group!r})"
            )

    def __len__(self) -> int:
        return len(self.input_ids)


class ExampleDataset(Dataset):
    """Examples as the dicts transformers' Trainer expects. Length grouping is Trainer's
    LengthGroupedSampler (`train_sampling_strategy="group_by_length"`), which reads the "input_ids" key:
    shuffled megabatches sorted by length, so batches pad little but the order stays random."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        item = {"input_ids": ex.input_ids, "weights": ex.weights}
        if ex.kd is not None:
            item["kd"] = ex.kd
        return item


def feature_rows(
    features: Sequence[dict[str, Any] | Example], who: str
) -> list[tuple[list[int], list[float]]]:
    """(input_ids, weights) of each Example or dataset dict; an empty batch is an error."""
    rows = [
        (f.input_ids, f.weights) if isinstance(f, Example) else (f["input_ids"], f["weights"])
        for f in features
    ]
    if not rows:
        raise ValueError(f"{who}: empty batch")
    return rows


def kd_rows(features: Sequence[dict[str, Any] | Example]) -> list[tuple[Any, Any] | None]:
    """The teacher top-k rows (`Example.kd`) of each feature, None where it has none."""
    return [f.kd if isinstance(f, Example) else f.get("kd") for f in features]


def kd_tensors(
    rows: Sequence[tuple[Any, Any] | None], lengths: Sequence[int], width: int, packed: bool = False
) -> dict[str, torch.Tensor]:
    """`kd_ids` int32 [B, width, k] (−1 = no teacher entry) and `kd_logprobs` float16 (−inf) for a batch
    whose rows are right-padded to `width`; `packed`: one row, the examples concatenated. {} when no
    example has teacher rows."""
    if all(r is None for r in rows):
        return {}
    k = max(r[0].shape[1] for r in rows if r is not None)
    shape = (1, width, k) if packed else (len(rows), width, k)
    ids = torch.full(shape, -1, dtype=torch.int32)
    lps = torch.full(shape, float("-inf"), dtype=torch.float16)
    start = 0
    for i, (r, n) in enumerate(zip(rows, lengths, strict=True)):
        b, s = (0, start) if packed else (i, 0)
        if r is not None:
            ids[b, s : s + n, : r[0].shape[1]] = torch.as_tensor(r[0], dtype=torch.int32)
            lps[b, s : s + n, : r[1].shape[1]] = torch.as_tensor(r[1], dtype=torch.float16)
        start += n
    return {"kd_ids": ids, "kd_logprobs": lps}


class ExampleCollator:
    """Right-pads a list of examples into tensors: input_ids/attention_mask [B,T] long, weights [B,T] float.

    Padding gets weight 0 and attention 0, so it never contributes to the loss. `pad_to_multiple_of`
    helps tensor cores on GPU; it changes nothing numerically.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any] | Example]) -> dict[str, torch.Tensor]:
        rows = feature_rows(features, "ExampleCollator")
        length = max(len(ids) for ids, _ in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        weights = torch.zeros((len(rows), length), dtype=torch.float32)
        for i, (ids, w) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            attention[i, :n] = 1
            weights[i, :n] = torch.tensor(w, dtype=torch.float32)
        kd = kd_tensors(kd_rows(features), [len(ids) for ids, _ in rows], length)
        return {"input_ids": input_ids, "attention_mask": attention, "weights": weights, **kd}
