"""Logit distillation losses (objectives/kd.py): exact against float64 full-vocabulary references, values and
gradients, on random logits; the tail bucket; padded vocabularies; the (1 − λ)·CE + λ·D mixture.

Tolerances are derived from float32 rounding, not fixed: a float32 log-softmax of logits of magnitude L over
V entries carries an absolute error of a few eps32·(L + log V) per entry (the max-shift, the exp and the log
each round once relative to that magnitude); a divergence is a probability-weighted sum of such entries, so
its error is bounded by a small multiple of the same quantity, and a gradient entry (a difference of two
probabilities, divided by τ) by that quantity / τ. `C = 16` covers the constant factors with room; it does
not depend on the CPU's vector width (AVX2 vs AVX-512 only change summation order, which stays inside it).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edge_distill.objectives.kd import (
    DIVERGENCES,
    TAIL_FLOOR,
    full_divergence,
    kd_mixed_loss,
    topk_divergence,
)
from edge_distill.objectives.losses import weighted_ce

EPS32 = torch.finfo(torch.float32).eps
C = 16


def f32_bound(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """The float32 error scale of a log-softmax of these logits at this temperature (see the module doc)."""
    return C * EPS32 * (float(logits.detach().abs().max()) / temperature + math.log(logits.shape[-1]) + 1.0)


def _logits(m=6, v=37, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(m, v, generator=g, dtype=torch.float64), scale * torch.randn(
        m, v, generator=g, dtype=torch.float64
    )


def ref_divergence(logp: torch.Tensor, logq: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """The textbook formulas in float64 on explicit probabilities (no shared code with kd.py)."""
    p, q = logp.exp(), logq.exp()

    def kl(a, loga, logb):
        return torch.where(a > 0, a * (loga - logb), torch.zeros_like(a)).sum(-1)

    if kind == "forward_kl":
        return kl(p, logp, logq)
    if kind == "reverse_kl":
        return kl(q, logq, logp)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, logp, m.log()) + (1 - beta) * kl(q, logq, m.log())


CASES = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.1), ("jsd", 0.5), ("jsd", 0.9)]


@pytest.mark.parametrize("kind,beta", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.7])
def test_full_divergence_equals_the_float64_reference_in_value_and_gradient(kind, beta, temperature):
    zs64, zt64 = _logits()
    ref = ref_divergence(
        F.log_softmax(zt64 / temperature, -1),
        F.log_softmax(zs64.requires_grad_() / temperature, -1),
        kind,
        beta,
    )
    (g_ref,) = torch.autograd.grad(ref.sum(), zs64)
    zs = zs64.detach().float().requires_grad_()
    got = full_divergence(zs, zt64.float(), kind=kind, beta=beta, temperature=temperature)
    (g_got,) = torch.autograd.grad(got.sum(), zs)
    tol = f32_bound(zs64, temperature)
    assert got.dtype == torch.float32 and got.shape == (6,)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=0, atol=tol)
    torch.testing.assert_close(g_got.double(), g_ref, rtol=0, atol=tol / temperature)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_agrees_with_trl_generalized_jsd(beta):
    """TRL's GKD loss (β = 0: forward KL, β = 1: reverse KL) as an independent implementation."""
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer").GKDTrainer
    zs, zt = (z.float() for z in _logits(seed=3))
    kind = {0.0: "forward_kl", 1.0: "reverse_kl"}.get(beta, "jsd")
    ours = full_divergence(zs, zt, kind=kind, beta=beta if kind == "jsd" else 0.5, temperature=2.0)
    theirs = torch.stack(
        [
            gkd.generalized_jsd_loss(
                zs[i : i + 1], zt[i : i + 1], beta=beta, temperature=2.0, reduction="sum"
            )
            for i in range(len(zs))
        ]
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=f32_bound(zs, 2.0))


# ------------------------------------------------------------------------------------------ top-k + tail bucket
def ref_topk(zs64, ids, lps, kind, beta, temperature, vocab):
    """Float64 reference of the bucketed divergence, from the student's full distribution: the tail is the
    sum of the exact probabilities of every id outside the row's top k."""
    q = torch.softmax(zs64[:, :vocab], -1)
    out = []
    for r in range(len(zs64)):
        seen, keep = set(), []
        for j, i in enumerate(ids[r].tolist()):
            if 0 <= i < vocab and math.isfinite(float(lps[r, j])) and i not in seen:
                seen.add(i)
                keep.append(j)
        p_top = torch.tensor([math.exp(float(lps[r, j])) for j in keep], dtype=torch.float64)
        q_top = torch.stack([q[r, ids[r, j]] for j in keep]) if keep else torch.zeros(0, dtype=torch.float64)
        outside = [i for i in range(vocab) if i not in seen]
        if outside:
            p_tail = max(1.0 - float(p_top.sum()), TAIL_FLOOR)
            p = torch.cat([p_top, torch.tensor([p_tail], dtype=torch.float64)])
            qq = torch.cat([q_top, q[r, outside].sum().reshape(1)])
        else:
            p, qq = p_top, q_top
        p = p / p.sum()
        logp, logq = p.log(), qq.log()
        if temperature != 1.0:
            logp, logq = F.log_softmax(logp / temperature, -1), F.log_softmax(logq / temperature, -1)
        out.append(
            ref_divergence(logp[None], logq[None], kind, beta)[0] if keep else zs64.new_zeros(()) * q.sum()
        )
    return torch.stack(out)


def _topk_case(k=5, seed=1, vocab=37):
    zs64, zt64 = _logits(seed=seed, v=vocab)
    lp = F.log_softmax(zt64, -1)
    top = lp.topk(k, -1)
    ids, lps = top.indices.clone(), top.values.half()  # stored as float16, as recorded
    ids[1, 2] = -1  # a server returned fewer entries
    ids[2, 3] = ids[2, 1]  # a repeated id counts once
    ids[3, 4] = vocab + 5  # an id past the shared vocabulary (padding row) is no entry
    ids[4] = -1  # a row without any entry gives 0
    return zs64, ids, lps


@pytest.mark.parametrize("kind,beta", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_divergence_equals_the_float64_tail_bucket_reference(kind, beta, temperature):
    zs64, ids, lps = _topk_case()
    ref = ref_topk(zs64.requires_grad_(), ids, lps, kind, beta, temperature, zs64.shape[1])
    (g_ref,) = torch.autograd.grad(ref.sum(), zs64)
    zs = zs64.detach().float().requires_grad_()
    got = topk_divergence(zs, ids, lps, kind=kind, beta=beta, temperature=temperature)
    (g_got,) = torch.autograd.grad(got.sum(), zs)
    tol = f32_bound(zs64, temperature)
    assert got[4] == 0 and torch.isfinite(g_got).all()
    torch.testing.assert_close(got.double(), ref.detach(), rtol=0, atol=tol)
    torch.testing.assert_close(g_got.double(), g_ref, rtol=0, atol=tol / temperature)


@pytest.mark.parametrize("kind,beta", CASES)
def test_topk_covering_the_whole_vocabulary_is_the_full_divergence(kind, beta):
    zs64, zt64 = _logits(v=23)
    lp = F.log_softmax(zt64, -1)
    order = lp.argsort(-1, descending=True)
    zs = zs64.float().requires_grad_()
    got = topk_divergence(zs, order, lp.gather(1, order).float(), kind=kind, beta=beta)
    full = full_divergence(zs, zt64.float(), kind=kind, beta=beta)
    tol = f32_bound(zs64)
    torch.testing.assert_close(got, full, rtol=0, atol=tol)
    g1, g2 = (torch.autograd.grad(x.sum(), zs)[0] for x in (got, full))
    torch.testing.assert_close(g1, g2, rtol=0, atol=tol)


def test_the_tail_bucket_charges_the_student_for_mass_outside_the_teachers_top_k():
    """Why a tail bucket and not renormalising onto the k ids: a student that moves mass to ids the teacher
    never proposed must pay for it; renormalised onto the top k the two students below look identical."""
    v, k = 30, 4
    teacher = torch.full((1, v), -8.0)
    teacher[0, :k] = torch.tensor([3.0, 2.0, 1.0, 0.5])
    lp = F.log_softmax(teacher, -1)
    ids, lps = lp.topk(k, -1)[1], lp.topk(k, -1)[0]
    close = teacher.clone()
    off = teacher.clone()
    off[0, k:] += 9.0  # the same ratios on the top k, most of the mass elsewhere
    d_close, d_off = (topk_divergence(s, ids, lps) for s in (close, off))
    assert float(d_off) > float(d_close) + 1.0
    renorm = [F.log_softmax(s[0, ids[0]], -1) for s in (close, off)]
    torch.testing.assert_close(renorm[0], renorm[1])  # renormalised: no difference at all


def test_teacher_top_k_that_rounds_past_one_keeps_a_floored_tail():
    ids = torch.tensor([[0, 1]])
    lps = torch.tensor([[math.log(0.7), math.log(0.31)]]).half()  # 1.01 in total
    zs = torch.tensor([[2.0, 1.0, -1.0, -2.0]], requires_grad=True)
    for kind in DIVERGENCES:
        d = topk_divergence(zs, ids, lps, kind=kind)
        (g,) = torch.autograd.grad(d.sum(), zs)
        assert torch.isfinite(d).all() and torch.isfinite(g).all(), kind
        ref = ref_topk(zs.detach().double(), ids, lps, kind, 0.5, 1.0, 4)  # tail = TAIL_FLOOR, renormalised
        torch.testing.assert_close(d.double(), ref, rtol=0, atol=f32_bound(zs))
    assert float(topk_divergence(zs, ids, lps, kind="reverse_kl")) > 0


def test_padding_rows_are_sliced_off_both_vocabularies():
    """49152 tokens in a 49280-row embedding: rows past the tokenizer never hold probability mass."""
    zs64, zt64 = _logits(v=29)
    n = 29
    junk_s = torch.cat([zs64, 50.0 * torch.ones(6, 3, dtype=torch.float64)], 1).float()  # student: 32 rows
    junk_t = torch.cat([zt64, -40.0 * torch.ones(6, 7, dtype=torch.float64)], 1).float()  # teacher: 36 rows
    for kind in DIVERGENCES:
        ref = full_divergence(zs64.float(), zt64.float(), kind=kind)
        torch.testing.assert_close(
            full_divergence(junk_s, junk_t, kind=kind, vocab_size=n), ref, rtol=0, atol=f32_bound(zs64)
        )
    with pytest.raises(ValueError, match="vocab_size"):
        full_divergence(zs64.float(), zt64.float(), vocab_size=n + 1)
    lp = F.log_softmax(zt64, -1).topk(4, -1)
    ref = topk_divergence(zs64.float(), lp.indices, lp.values)
    torch.testing.assert_close(
        topk_divergence(junk_s, lp.indices, lp.values, vocab_size=n), ref, rtol=0, atol=f32_bound(zs64)
    )


# ------------------------------------------------------------------------------------------ the mixture
def _mixture_case(seed=5):
    g = torch.Generator().manual_seed(seed)
    b, t, v = 3, 8, 31
    logits = (2.0 * torch.randn(b, t, v, generator=g)).requires_grad_()
    ids = torch.randint(0, v, (b, t), generator=g)
    w = torch.rand(b, t, generator=g)
    w[:, :3] = 0.0
    w[1, 6] = -0.4  # an EDIT unlikelihood term
    teacher = 2.0 * torch.randn(b, t, v, generator=g)
    return logits, ids, w, teacher


def _rows(logits, ids, w, teacher):
    rows = w[:, 1:] != 0
    return logits[:, :-1][rows], ids[:, 1:][rows], w[:, 1:][rows], teacher[:, :-1][rows]


@pytest.mark.parametrize("cap", [None, 0.5])
def test_lambda_zero_is_weighted_ce_and_lambda_one_is_the_weighted_divergence(cap):
    logits, ids, w, teacher = _mixture_case()
    s, y, ww, t = _rows(logits, ids, w, teacher)
    d = full_divergence(s, t)
    has = torch.ones_like(ww, dtype=torch.bool)
    ref_ce = weighted_ce(logits, ids, w, cap)
    got0 = kd_mixed_loss(s, y, ww, d, has, 0.0, cap)
    tol = f32_bound(logits) * float(ww.abs().sum())
    torch.testing.assert_close(got0, ref_ce, rtol=0, atol=tol)
    g0, gr = (torch.autograd.grad(x, logits, retain_graph=True)[0] for x in (got0, ref_ce))
    torch.testing.assert_close(g0, gr, rtol=0, atol=f32_bound(logits) * float(ww.abs().max()))
    # λ = 1: the positive-weight rows are pure divergence; the negative one stays CE (never distilled)
    got1 = kd_mixed_loss(s, y, ww, d, has, 1.0, cap)
    ce = F.cross_entropy(s.float(), y, reduction="none")
    neg = ww < 0
    keep_neg = neg & ~((ce > cap) if cap is not None else torch.zeros_like(neg))
    ref1 = (ww * d)[~neg].sum() + (ww * ce)[keep_neg].sum()
    torch.testing.assert_close(got1, ref1, rtol=0, atol=tol)
    # and in between, linear in λ
    got_half = kd_mixed_loss(s, y, ww, d, has, 0.3, cap)
    ref_half = (ww * ((0.7 * ce + 0.3 * d) * (~neg) + ce * keep_neg)).sum()
    torch.testing.assert_close(got_half, ref_half, rtol=0, atol=tol)


def test_rows_without_a_teacher_are_plain_ce_and_an_unused_divergence_never_leaks():
    logits, ids, w, teacher = _mixture_case()
    s, y, ww, _ = _rows(logits, ids, w, teacher)
    has = torch.zeros_like(ww, dtype=torch.bool)
    has[:3] = True
    d = torch.full_like(ww, float("inf"))  # garbage where there is no teacher
    d[:3] = 0.25
    got = kd_mixed_loss(s, y, ww, d, has, 0.6)
    ce = F.cross_entropy(s.float(), y, reduction="none")
    m = (has & (ww > 0)).float()
    ref = (ww * ((1 - 0.6 * m) * ce + 0.6 * m * 0.25)).sum()
    torch.testing.assert_close(got, ref)
    (g,) = torch.autograd.grad(got, logits)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="lambda"):
        kd_mixed_loss(s, y, ww, d, has, 1.5)


def test_bad_arguments_are_errors():
    zs, zt = (z.float() for z in _logits())
    with pytest.raises(ValueError, match="not one of"):
        full_divergence(zs, zt, kind="kl")
    with pytest.raises(ValueError, match="beta"):
        full_divergence(zs, zt, kind="jsd", beta=1.0)
    with pytest.raises(ValueError, match="temperature"):
        topk_divergence(zs, torch.zeros(6, 2, dtype=torch.long), torch.zeros(6, 2), temperature=0.0)
    with pytest.raises(ValueError, match="expected"):
        topk_divergence(zs, torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 2))
