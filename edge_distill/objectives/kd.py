"""Logit-level distillation losses (`train.kd`): pure functions of logits and teacher distributions.

    loss = Σ_t w_t · [(1 − λ·m_t)·CE_t + λ·m_t·D_t(teacher ‖ student)]

`w_t` is the objective's weight of predicting token t (SFT, CasCoD and EDIT build them; see losses.py),
`m_t` is 1 where a teacher distribution exists for that position and `w_t > 0` (EDIT's negative,
unlikelihood terms stay plain CE), λ is `train.kd.weight`. D is one of
- `forward_kl`  KL(p_T ‖ p_S) = Σ p_T (log p_T − log p_S)   (mode-covering; Hinton-style KD),
- `reverse_kl`  KL(p_S ‖ p_T) = Σ p_S (log p_S − log p_T)   (mode-seeking; MiniLLM),
- `jsd`         generalized JSD(β) = β·KL(p_T ‖ M) + (1 − β)·KL(p_S ‖ M), M = β·p_T + (1 − β)·p_S
                (GKD, Agarwal et al. 2024; β → 0 approaches forward KL/β, β → 1 reverse KL),
on distributions softened by the temperature τ: softmax(z / τ). No τ² factor (as in GKD/TRL).

Vocabulary: both distributions live on the shared tokenizer's `vocab_size` ids. A model whose embedding
has padding rows (49152 ids in an embedding of 49280) gets its logits sliced to `vocab_size` before the
softmax: the padding ids are never targets and must not hold probability mass. (The CE term keeps the
model's full logits, exactly as `weighted_ce`.)

Teacher top-k (offline, `topk_divergence`): only the teacher's k most likely ids and their log-probs are
known. The rest of the vocabulary is ONE TAIL BUCKET: the divergence is computed between the two
distributions coarse-grained to k + 1 outcomes (the k ids, everything else), with the teacher's tail mass
1 − Σ_k p_T and the student's tail mass its exact probability of every other id. Why a tail bucket and not
renormalising both onto the k ids: (1) it is an exact divergence of two proper distributions (a lower
bound of the full-vocabulary one, by the data-processing inequality, equal when the teacher's mass is all
in its top k); (2) the student's probability outside the teacher's top k is penalised (renormalisation
makes it free: a student could put half its mass on ids the teacher never proposes at zero loss), which
reverse KL and JSD need to mean anything; (3) no temperature or teacher mass is invented. The teacher's
tail is floored at `TAIL_FLOOR` (its top-k log-probs are float16: rounding can make them sum to >= 1),
and all k + 1 teacher masses are renormalised. A row whose top k covers the whole vocabulary has no tail
bucket. With τ ≠ 1 the temperature acts on the k + 1 outcomes of both sides (the only softening
computable from k log-probs; equal to the full-vocabulary one at τ = 1).

Shapes: M rows (positions that predict a response token), V student logits per row, k teacher entries.
Everything is computed in float32 (inputs are upcast row-wise), so bf16 autocast training keeps an fp32
loss, as `weighted_ce` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
TAIL_FLOOR = 1e-6  # the teacher's smallest tail mass (float16 top-k log-probs can sum past 1)


def _check(kind: str, beta: float, temperature: float) -> None:
    if kind not in DIVERGENCES:
        raise ValueError(f"kd divergence {kind!r} is not one of {', '.join(DIVERGENCES)}")
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"kd jsd needs 0 < beta < 1, got {beta}")
    if not temperature > 0:
        raise ValueError(f"kd temperature must be > 0, got {temperature}")


def categorical_divergence(
    logp: torch.Tensor, logq: torch.Tensor, kind: str, beta: float = 0.5, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """D(p ‖ q) per row between two distributions given as log-probabilities.

    Args:
        logp: [M, K] teacher log-probs (−inf for zero mass).
        logq: [M, K] student log-probs.
        kind: forward_kl | reverse_kl | jsd.
        beta: JSD's β (teacher weight of the mixture), 0 < β < 1.
        valid: optional [M, K] bool; False entries are not outcomes (padding) and contribute nothing.

    Returns:
        [M] float tensor. Terms with zero mass on the weighting side are exactly 0 (0·log 0 = 0).
    """
    if logp.shape != logq.shape or logp.dim() != 2:
        raise ValueError(
            f"categorical_divergence: expected two [M,K] tensors, got {tuple(logp.shape)}, {tuple(logq.shape)}"
        )
    keep = torch.ones_like(logp, dtype=torch.bool) if valid is None else valid
    zero = torch.zeros((), dtype=logq.dtype, device=logq.device)

    def kl(loga: torch.Tensor, logb: torch.Tensor) -> torch.Tensor:
        # Σ a (log a − log b) over outcomes where a > 0; log b may be −inf only where a = 0
        live = keep & (loga > -math.inf)
        diff = torch.where(live, loga - logb, zero)
        return torch.where(live, loga.exp() * diff, zero).sum(-1)

    if kind == "forward_kl":
        return kl(logp, logq)
    if kind == "reverse_kl":
        return kl(logq, logp)
    if kind == "jsd":
        logm = torch.logaddexp(logp + math.log(beta), logq + math.log1p(-beta))
        return beta * kl(logp, logm) + (1.0 - beta) * kl(logq, logm)
    raise ValueError(f"kd divergence {kind!r} is not one of {', '.join(DIVERGENCES)}")


def full_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """D(teacher ‖ student) per row over the full (shared) vocabulary.

    Args:
        student_logits: [M, Vs] (any float dtype; upcast to float32).
        teacher_logits: [M, Vt] (no gradient needed).
        vocab_size: the shared tokenizer's size N <= min(Vs, Vt); both are sliced to N (padding rows).
            None: Vs, which must then equal Vt.

    Returns:
        [M] float32.
    """
    _check(kind, beta, temperature)
    n = vocab_size if vocab_size is not None else student_logits.shape[-1]
    if (
        student_logits.dim() != 2
        or teacher_logits.dim() != 2
        or student_logits.shape[0] != teacher_logits.shape[0]
    ):
        raise ValueError(
            f"full_divergence: expected [M,Vs] and [M,Vt], got {tuple(student_logits.shape)}, {tuple(teacher_logits.shape)}"
        )
    if n > student_logits.shape[-1] or n > teacher_logits.shape[-1]:
        raise ValueError(
            f"full_divergence: vocab_size {n} exceeds the logits (student {student_logits.shape[-1]}, "
            f"teacher {teacher_logits.shape[-1]})"
        )
    logq = F.log_softmax(student_logits[:, :n].float() / temperature, dim=-1)
    logp = F.log_softmax(teacher_logits[:, :n].float() / temperature, dim=-1)
    return categorical_divergence(logp, logq, kind, beta)


def topk_buckets(
    student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k + 1 outcomes (teacher's top-k ids, one tail bucket) of both sides, as log-probs at τ = 1.

    Args:
        student_logits: [M, V] student logits (V >= vocab_size; sliced to vocab_size).
        topk_ids: [M, k] teacher ids; −1 (or >= vocab_size, or a repeat within a row) marks no entry.
        topk_logprobs: [M, k] teacher log-probs of those ids (any float dtype).

    Returns:
        (logp [M, k+1], logq [M, k+1], valid [M, k+1]); column k is the tail bucket, invalid where the
        top k already cover the whole vocabulary.
    """
    m, k = topk_ids.shape
    if topk_logprobs.shape != (m, k) or student_logits.dim() != 2 or student_logits.shape[0] != m:
        raise ValueError(
            f"topk_buckets: expected logits [M,V], ids [M,k], logprobs [M,k]; got {tuple(student_logits.shape)}, "
            f"{tuple(topk_ids.shape)}, {tuple(topk_logprobs.shape)}"
        )
    z = student_logits[:, :vocab_size].float()
    ids = topk_ids.long()
    valid = (ids >= 0) & (ids < vocab_size) & torch.isfinite(topk_logprobs)
    # a repeated id in one row (a hostile or sloppy record) counts once: keep its first occurrence
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, None, :]
    earlier = torch.ones(k, k, dtype=torch.bool, device=ids.device).tril(-1)
    valid = valid & ~(same & earlier).any(-1)
    safe = torch.where(valid, ids, torch.zeros_like(ids))
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    logq_top = z.gather(1, safe) - lse
    # the student's tail: every id outside this row's top k, summed exactly (not 1 − Σ, which cancels)
    hidden = torch.zeros_like(z, dtype=torch.bool)
    rows, cols = valid.nonzero(as_tuple=True)
    hidden[rows, ids[rows, cols]] = True
    has_tail = valid.sum(-1, keepdim=True) < vocab_size
    # rows without a tail keep their logits here so logsumexp's backward never sees an all -inf row
    tail_src = torch.where(has_tail, z.masked_fill(hidden, -math.inf), z)
    logq_tail = torch.where(
        has_tail, torch.logsumexp(tail_src, dim=-1, keepdim=True) - lse, torch.full_like(lse, -math.inf)
    )
    p_top = torch.where(valid, topk_logprobs.float().exp(), torch.zeros_like(logq_top))
    mass = p_top.sum(-1, keepdim=True)
    p_tail = torch.where(has_tail, (1.0 - mass).clamp_min(TAIL_FLOOR), torch.zeros_like(mass))
    total = mass + p_tail
    logp_top = torch.where(valid, topk_logprobs.float() - total.log(), torch.full_like(logq_top, -math.inf))
    logp_tail = torch.where(has_tail, p_tail.log() - total.log(), torch.full_like(mass, -math.inf))
    logp = torch.cat([logp_top, logp_tail], dim=1)
    logq = torch.cat([logq_top, logq_tail], dim=1)
    return logp, logq, torch.cat([valid, has_tail], dim=1)


def topk_divergence(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    *,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """D(teacher ‖ student) per row on the teacher's top k + one tail bucket (see the module docstring).

    Args:
        student_logits: [M, V]; topk_ids: [M, k] int; topk_logprobs: [M, k] (float16 as stored is fine).
        vocab_size: the shared tokenizer's size (default V).

    Returns:
        [M] float32; a row without any valid teacher entry gives 0.
    """
    _check(kind, beta, temperature)
    n = vocab_size if vocab_size is not None else student_logits.shape[-1]
    logp, logq, valid = topk_buckets(student_logits, topk_ids, topk_logprobs, n)
    if temperature != 1.0:
        logp = _soften(logp, valid, temperature)
        logq = _soften(logq, valid, temperature)
    any_entry = valid[:, :-1].any(-1)
    d = categorical_divergence(logp, logq, kind, beta, valid)
    return torch.where(any_entry, d, torch.zeros_like(d))


def _soften(logp: torch.Tensor, valid: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = torch.where(valid, logp / temperature, torch.full_like(logp, -math.inf))
    out = scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)
    return torch.where(valid, out, torch.full_like(out, -math.inf))


def kd_mixed_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    divergence: torch.Tensor,
    has_teacher: torch.Tensor,
    lam: float,
    nll_cap: float | None = None,
) -> torch.Tensor:
    """Σ_rows w · [(1 − λ·m)·CE + λ·m·D] as a 0-dim float32 tensor.

    Args:
        student_logits: [M, V] logits of the rows that predict a weighted token (full V, as weighted_ce).
        targets: [M] token ids predicted by those rows.
        weights: [M] the objective's weights (non-zero; negative = EDIT's unlikelihood terms).
        divergence: [M] D per row (any value where `has_teacher` is False: it is not used).
        has_teacher: [M] bool; m = has_teacher & (w > 0).
        lam: λ in [0, 1].
        nll_cap: EDIT's cap: a negative-weight row whose CE exceeds it is dropped (as in weighted_ce).

    λ = 0 is exactly `weighted_ce` on these rows; λ = 1 with a teacher everywhere is Σ w·D.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"kd weight (lambda) must be in [0, 1], got {lam}")
    ce = F.cross_entropy(student_logits.float(), targets, reduction="none")
    w = weights.float()
    if nll_cap is not None:
        w = w * ~((w < 0) & (ce.detach() > nll_cap))
    m = (has_teacher & (w > 0)).to(ce.dtype)
    zero = torch.zeros_like(ce)
    d = torch.where(m > 0, divergence.float(), zero)  # an unused inf/NaN must not reach the sum
    return (w * ((1.0 - lam * m) * ce + lam * m * d)).sum()
