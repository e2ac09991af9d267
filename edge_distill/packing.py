"""Padding-free batches: the examples of a micro-batch concatenated into one row, positions restarting at
0 for each example (`train.packing`).

No pad token is computed on, whatever the length spread. Attention never crosses an example boundary:
with `position_ids` and no attention mask, transformers finds the packed sequences — flash-attention
uses its varlen kernels, sdpa/eager (CPU) get a block-diagonal causal mask — so each example sees
exactly what it would see alone, and its loss is the unpacked loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from edge_distill.objectives.examples import Example, feature_rows, kd_rows, kd_tensors


class PackedCollator:
    """Examples -> input_ids/position_ids/weights [1, Σ len] plus `n_examples` (for loss normalization).

    Each example's first weight is set to 0: in a packed row its "previous position" is the last token of
    the preceding example, and nothing may be learned across that boundary (weighted_ce already ignores
    the first token of an unpacked row, so the per-example loss is unchanged).
    """

    def __call__(self, features: Sequence[dict[str, Any] | Example]) -> dict[str, torch.Tensor]:
        rows = feature_rows(features, "PackedCollator")
        ids: list[int] = []
        pos: list[int] = []
        weights: list[float] = []
        for row_ids, row_w in rows:
            if not row_ids:
                raise ValueError("PackedCollator: an example has no tokens")
            ids.extend(row_ids)
            pos.extend(range(len(row_ids)))
            weights.append(0.0)
            weights.extend(row_w[1:])
        kd = kd_tensors(kd_rows(features), [len(r) for r, _ in rows], len(ids), packed=True)
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "weights": torch.tensor([weights], dtype=torch.float32),
            "n_examples": torch.tensor(len(rows), dtype=torch.long),
            **kd,
        }


def example_spans(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) of each packed example in a [1, N] position_ids row (positions restart at 0)."""
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    ends = starts[1:] + [position_ids.shape[1]]
    return list(zip(starts, ends, strict=True))


def count_examples(batch: dict[str, Any]) -> int:
    """Examples in a collated batch, packed or padded."""
    n = batch.get("n_examples")
    return int(n) if n is not None else int(batch["input_ids"].shape[0])
