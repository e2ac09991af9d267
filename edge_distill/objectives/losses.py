"""Token-weighted cross-entropy: the one loss every objective (SFT, CasCoD, EDIT/KRSL) reduces to.

The objectives differ only in the per-token weights they put into their `Example`s:
- SFT: 1/#response tokens on the response, 0 on the prompt (a per-sample token mean);
- CasCoD (Dai et al. 2024, "Improve Student's Reasoning Generalizability through Cascading Decomposed
  CoTs Distillation"): (1-α)/#rationale tokens and α/#answer tokens;
- EDIT/KRSL (Dai et al. 2024, "Beyond Imitation"): +w on the right CoT's key steps, -w on the wrong
  CoT's, with the negative term switched off once its NLL exceeds a cap (`nll_cap`).
The result is a SUM over the batch; the trainer divides by the number of examples in the optimizer step,
which keeps the loss exact under gradient accumulation and data parallelism (see training.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_ce(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    weights: torch.Tensor,
    nll_cap: float | None = None,
) -> torch.Tensor:
    """Σ_{b,t} w[b,t] · CE(logits[b,t-1], input_ids[b,t]) as a scalar.

    Args:
        logits: [B, T, V] next-token logits (position t predicts token t+1).
        input_ids: [B, T] token ids.
        weights: [B, T] loss weight of *predicting token t* (aligned with the targets, not the logits);
            `weights[:, 0]` is ignored because nothing predicts the first token. 0 on prompt and padding.
        nll_cap: when set, a term with w < 0 (unlikelihood push) whose CE already exceeds the cap is
            dropped, so the negative objective cannot run away to infinity (EDIT's KRSL).

    Returns:
        A 0-dim float32 tensor. An all-zero weight matrix gives exactly 0 with a zero (not NaN) gradient.
    """
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2] or weights.shape != input_ids.shape:
        raise ValueError(
            f"weighted_ce: expected logits [B,T,V], input_ids [B,T], weights [B,T]; got "
            f"{tuple(logits.shape)}, {tuple(input_ids.shape)}, {tuple(weights.shape)}"
        )
    # Shift here so callers think in "weight of token t" and never off-by-one the prompt mask.
    shift_logits = logits[:, :-1, :]
    targets = input_ids[:, 1:]
    w = weights[:, 1:].float()
    # Only positions with a non-zero weight need the log-softmax: prompts are often most of the sequence,
    # and for a 49k vocabulary an fp32 copy of all [B,T,V] logits would dominate memory. Selecting first
    # also means only the selected rows are upcast from bf16.
    mask = w != 0
    if not bool(mask.any()):
        return (
            logits.sum().float() * 0.0
        )  # keeps the graph (DDP needs every parameter to get a grad) and is 0
    ce = F.cross_entropy(shift_logits[mask].float(), targets[mask], reduction="none")
    w_sel = w[mask]
    if nll_cap is not None:
        keep = ~((w_sel < 0) & (ce.detach() > nll_cap))
        w_sel = w_sel * keep.to(w_sel.dtype)
    return (w_sel * ce).sum()
