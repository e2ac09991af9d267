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


# --------------------------------------------------------------------------- memory-lean variant
DEFAULT_CHUNK = 1024  # rows of [chunk, V] fp32 logits alive at once: 1024 x 151k x 4 B = 0.6 GB at most


class _ChunkedLinearCE(torch.autograd.Function):
    """Σ w·CE(h @ Wᵀ + b, y) over rows, one chunk of rows at a time, gradients computed in the forward.

    The loss is linear in its upstream gradient (a scalar), so d/dh and d/dW can be computed while the
    chunk's logits exist and scaled in backward: no [M, V] tensor is ever kept, and nothing is recomputed
    (3 matmuls per chunk, like a plain forward + backward). Autocast is off inside; the caller passes the
    matmul dtype so bf16 autocast training keeps bf16 matmuls with an fp32 softmax, as weighted_ce does.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,  # [M, H]
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        targets: torch.Tensor,  # [M] long
        w: torch.Tensor,  # [M] float32, all non-zero
        nll_cap: float | None,
        chunk_size: int,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        wt = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        for s in range(0, hidden.shape[0], chunk_size):
            h = hidden[s : s + chunk_size].to(compute_dtype)
            y = targets[s : s + chunk_size]
            logits = (h @ wt.T).float()  # [c, V]
            if bias is not None:
                logits = logits + bias.float()
            # logsumexp by hand, in place: torch.logsumexp allocates and passes over [c, V] about four
            # times; max, one exp pass and a sum do it, and the exp pass is the softmax the gradient
            # needs (measured: 576 -> 533 ms for a [563, 49152] chunk on a 2-core EPYC, same values
            # within fp32 rounding).
            picked = logits.gather(1, y[:, None]).squeeze(1)
            top = logits.amax(dim=-1)
            exps = logits.sub_(top[:, None]).exp_()  # the logits buffer, now exp(logit - max)
            norm = exps.sum(dim=-1)
            ce = top + norm.log() - picked
            ww = w[s : s + chunk_size]
            if nll_cap is not None:
                ww = ww * ~((ww < 0) & (ce > nll_cap))
            total += (ww * ce).sum()
            if need_h or need_w or need_b:
                # d(w·CE)/dlogits = w·(softmax - onehot), built in place in the same buffer
                g = exps.mul_((ww / norm)[:, None])
                g[torch.arange(len(y), device=g.device), y] -= ww
                if need_b:
                    grad_b += g.sum(0)
                g = g.to(compute_dtype)
                if need_h:
                    grad_h[s : s + chunk_size] = (g @ wt).to(hidden.dtype)
                if need_w:
                    grad_w += (g.T @ h).float()
        ctx.save_for_backward(*(t if t is not None else torch.empty(0) for t in (grad_h, grad_w, grad_b)))
        ctx.has = (need_h, need_w, need_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        need_h, need_w, need_b = ctx.has
        return (
            grad_h * grad_out.to(grad_h.dtype) if need_h else None,
            (grad_w * grad_out).to(ctx.dtypes[0]) if need_w else None,
            (grad_b * grad_out).to(ctx.dtypes[1]) if need_b else None,
            None, None, None, None, None,
        )  # fmt: skip


def chunked_weighted_ce(
    hidden: torch.Tensor,
    lm_weight: torch.Tensor,
    input_ids: torch.Tensor,
    weights: torch.Tensor,
    nll_cap: float | None = None,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """`weighted_ce(hidden @ lm_weightᵀ + bias, input_ids, weights, nll_cap)` without full logits.

    Args:
        hidden: [B, T, H] final hidden states (after the last norm), i.e. the LM head's input.
        lm_weight: [V, H] LM head weight (tied embeddings are fine: the gradient flows into it).
        input_ids: [B, T] token ids; weights: [B, T] as in `weighted_ce` (weight of predicting token t).
        nll_cap: EDIT's cap on negative-weight terms, exactly as in `weighted_ce`.
        bias: optional [V] LM head bias.
        chunk_size: rows of logits computed at once; peak extra memory is ~3 x chunk_size x V x 4 bytes.

    Returns:
        A 0-dim float32 tensor equal to `weighted_ce` on the materialized logits (same value and
        gradients up to float rounding); all-zero weights give 0 with zero gradients.
    """
    if hidden.dim() != 3 or input_ids.shape != hidden.shape[:2] or weights.shape != input_ids.shape:
        raise ValueError(
            f"chunked_weighted_ce: expected hidden [B,T,H], input_ids [B,T], weights [B,T]; got "
            f"{tuple(hidden.shape)}, {tuple(input_ids.shape)}, {tuple(weights.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunked_weighted_ce: chunk_size must be >= 1, got {chunk_size}")
    w = weights[:, 1:].float()
    mask = w != 0
    h = hidden[:, :-1][mask]  # [M, H]: prompt and padding rows never reach the LM head
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    with torch.autocast(device_type, enabled=False):
        return _ChunkedLinearCE.apply(
            h, lm_weight, bias, input_ids[:, 1:][mask], w[mask], nll_cap, chunk_size, dtype
        )
