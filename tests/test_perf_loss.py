"""The memory-lean loss (chunked CE over hidden states x LM head) and padding-free packing are exact:
same values and gradients as `weighted_ce` on full logits / as unpacked batches."""

from __future__ import annotations

import pytest
import torch

from edge_distill.objectives.examples import Example, ExampleCollator
from edge_distill.objectives.losses import chunked_weighted_ce, weighted_ce
from edge_distill.packing import PackedCollator, count_examples, example_spans
from tests.fp32_tolerance import assert_all_fp32_close, assert_fp32_close, n_terms, step_terms


def _case(b=3, t=9, h=16, v=37, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g, dtype=torch.float64).float().requires_grad_(True)
    weight = (0.3 * torch.randn(v, h, generator=g)).requires_grad_(True)
    b_ = (0.1 * torch.randn(v, generator=g)).requires_grad_(True) if bias else None
    ids = torch.randint(0, v, (b, t), generator=g)
    w = torch.randn(b, t, generator=g)
    w[:, :3] = 0.0  # a "prompt"
    w[0, 5] = 0.0
    return hidden, weight, b_, ids, w


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("chunk", [1, 4, 1024])
@pytest.mark.parametrize("cap", [None, 3.5])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_equals_weighted_ce_values_and_gradients(chunk, cap, bias):
    hidden, weight, b, ids, w = _case(bias=bias)
    logits = hidden @ weight.T + (b if b is not None else 0)
    ref = weighted_ce(logits, ids, w, cap)
    got = chunked_weighted_ce(hidden, weight, ids, w, cap, bias=b, chunk_size=chunk)
    terms = n_terms(ids.numel(), max(weight.shape))  # every token's logsumexp over the vocabulary
    assert_fp32_close(got, ref, terms, msg="loss")
    assert_all_fp32_close(_grads(got, hidden, weight, b), _grads(ref, hidden, weight, b), terms)


def test_nll_cap_actually_drops_terms_in_the_case_above():
    hidden, weight, _, ids, w = _case()
    logits = hidden @ weight.T
    assert weighted_ce(logits, ids, w, 3.5).item() != pytest.approx(weighted_ce(logits, ids, w).item())


def test_chunked_all_zero_weights_is_zero_with_zero_gradients():
    hidden, weight, _, ids, w = _case()
    loss = chunked_weighted_ce(hidden, weight, ids, torch.zeros_like(w))
    gh, gw = _grads(loss, hidden, weight)
    assert loss.item() == 0.0 and gh.abs().sum() == 0 and gw.abs().sum() == 0


def test_chunked_frozen_head_gives_only_hidden_gradient_and_scales_with_upstream_grad():
    hidden, weight, _, ids, w = _case()
    weight.requires_grad_(False)
    (g1,) = _grads(chunked_weighted_ce(hidden, weight, ids, w), hidden)
    (g3,) = _grads(3.0 * chunked_weighted_ce(hidden, weight, ids, w), hidden)
    torch.testing.assert_close(g3, 3.0 * g1)


def test_chunked_under_bf16_autocast_is_close_to_fp32():
    hidden, weight, _, ids, w = _case(v=64)
    ref = chunked_weighted_ce(hidden, weight, ids, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_weighted_ce(hidden, weight, ids, w, chunk_size=5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=3e-2, atol=3e-2)


def test_chunked_rejects_bad_shapes_and_chunk():
    hidden, weight, _, ids, w = _case()
    with pytest.raises(ValueError, match="expected hidden"):
        chunked_weighted_ce(hidden[0], weight, ids, w)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_weighted_ce(hidden, weight, ids, w, chunk_size=0)


def test_packed_collator_layout():
    batch = PackedCollator()([Example([5, 6, 7], [0.0, 0.5, 0.5]), Example([8, 9], [9.0, 1.0])])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # the second example's first token is never predicted across the boundary
    assert batch["weights"].tolist() == [[0.0, 0.5, 0.5, 0.0, 1.0]]
    assert "attention_mask" not in batch and count_examples(batch) == 2
    assert example_spans(batch["position_ids"]) == [(0, 3), (3, 5)]
    assert count_examples(ExampleCollator(0)([Example([1], [0.0])] * 3)) == 3


def _objective_examples(tok):
    """Examples with each objective's weight pattern: SFT mean, CasCoD two-level, EDIT signed."""

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    out = []
    p, r = ids("Q: What is 2+3?\nA:"), ids(" 2+3=5. The answer is 5.") + [tok.eos_token_id]
    out.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))  # sft
    p, r, a = ids("Q: Tom has 12 apples, eats 4.\nA:"), ids(" 12-4=8."), ids(" The answer is 8.")
    out.append(
        Example(p + r + a, [0.0] * len(p) + [0.9 / len(r)] * len(r) + [0.1 / len(a)] * len(a))
    )  # cascod
    p, r = ids("Q: Half of 9?\nA:"), ids(" 9/2=4.5 so 5")
    out.append(Example(p + r, [0.0] * len(p) + [-0.025] * (len(r) - 2) + [1.0, 1.0]))  # edit (signed)
    return out


def test_packed_forward_gives_unpacked_per_example_losses_and_gradient(tiny_model_dir, tok):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    examples = _objective_examples(tok)
    cap = 6.0

    def per_example_unpacked():
        losses = []
        for ex in examples:
            b = ExampleCollator(tok.pad_token_id)([ex])
            logits = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False
            ).logits
            losses.append(weighted_ce(logits, b["input_ids"], b["weights"], cap))
        return losses

    def per_example_packed():
        b = PackedCollator()(examples)
        # use_cache=False as in training: with a KV cache transformers does not look for packed rows
        logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
        return [
            weighted_ce(logits[:, s:e], b["input_ids"][:, s:e], b["weights"][:, s:e], cap)
            for s, e in example_spans(b["position_ids"])
        ]

    ref = per_example_unpacked()
    got = per_example_packed()
    terms = step_terms(model, (len(e.input_ids) for e in examples))
    assert_all_fp32_close(got, ref, terms)
    params = [p for p in model.parameters()]
    g_ref = torch.autograd.grad(sum(ref), params)
    g_got = torch.autograd.grad(sum(per_example_packed()), params)
    assert_all_fp32_close(g_got, g_ref, terms)  # fp32 summation order differs
    # and the boundary matters: without position ids the packed row attends across examples
    b = PackedCollator()(examples)
    leaky = model(input_ids=b["input_ids"], use_cache=False).logits
    s, e = example_spans(b["position_ids"])[1]
    assert not torch.allclose(
        weighted_ce(leaky[:, s:e], b["input_ids"][:, s:e], b["weights"][:, s:e]), ref[1]
    )


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from edge_distill.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)
