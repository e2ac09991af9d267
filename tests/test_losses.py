"""weighted_ce, the Example collator and SFT example building."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edge_distill.objectives.examples import Example, ExampleCollator, ExampleDataset
from edge_distill.objectives.losses import weighted_ce
from tests.fp32_tolerance import assert_fp32_close, step_terms


def _rand(b: int = 3, t: int = 7, v: int = 11, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, v, generator=g), torch.randint(0, v, (b, t), generator=g)


def test_uniform_weights_equal_cross_entropy():
    logits, ids = _rand()
    b, t, _ = logits.shape
    n = b * (t - 1)
    weights = torch.full((b, t), 1.0 / n)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(weighted_ce(logits, ids, weights), expected)


def test_weight_on_first_token_is_ignored_and_targets_are_shifted():
    logits, ids = _rand(b=1, t=4)
    w = torch.zeros(1, 4)
    w[0, 0] = 5.0  # nothing predicts token 0
    assert weighted_ce(logits, ids, w).item() == 0.0
    w = torch.zeros(1, 4)
    w[0, 2] = 1.0  # token 2 is predicted by position 1
    expected = F.cross_entropy(logits[0, 1:2], ids[0, 2:3])
    torch.testing.assert_close(weighted_ce(logits, ids, w), expected)


def test_all_masked_batch_is_zero_with_finite_zero_grad():
    logits, ids = _rand()
    logits.requires_grad_(True)
    loss = weighted_ce(logits, ids, torch.zeros(ids.shape))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_nll_cap_drops_only_negative_terms_above_cap():
    logits, ids = _rand(b=1, t=6)
    ce = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
    cap = float(ce.median())
    w = torch.tensor([[0.0, -1.0, -1.0, -1.0, 1.0, 1.0]])
    terms = w[0, 1:] * ce
    keep = ~((w[0, 1:] < 0) & (ce > cap))
    expected = (terms * keep).sum()
    torch.testing.assert_close(weighted_ce(logits, ids, w, nll_cap=cap), expected)
    # without a cap every term counts; positive terms above the cap are always kept
    torch.testing.assert_close(weighted_ce(logits, ids, w), terms.sum())
    w_pos = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(weighted_ce(logits, ids, w_pos, nll_cap=0.0), ce.sum())


def test_bf16_logits_give_an_fp32_loss_close_to_fp32():
    logits, ids = _rand(b=2, t=9, v=50)
    w = torch.rand(ids.shape)
    loss16 = weighted_ce(logits.bfloat16(), ids, w)
    assert loss16.dtype == torch.float32
    torch.testing.assert_close(loss16, weighted_ce(logits, ids, w), rtol=2e-2, atol=2e-2)
    assert weighted_ce(logits.bfloat16(), ids, torch.zeros(ids.shape)).dtype == torch.float32


def test_shape_mismatch_is_an_error():
    logits, ids = _rand()
    with pytest.raises(ValueError, match="expected logits"):
        weighted_ce(logits, ids, torch.zeros(ids.shape[0], ids.shape[1] + 1))


def test_collator_right_pads_with_zero_weight_and_attention():
    coll = ExampleCollator(pad_token_id=9)
    batch = coll([Example([1, 2, 3], [0.0, 0.5, 0.5]), Example([4], [0.0])])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["weights"].tolist() == [[0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]
    padded = ExampleCollator(0, pad_to_multiple_of=8)(ExampleDataset([Example([1, 2, 3], [0, 1, 1])]))
    assert padded["input_ids"].shape == (1, 8) and padded["weights"][0, 3:].sum() == 0


def test_padding_does_not_change_the_loss(tiny_model_dir):
    """A sequence's loss is the same alone and right-padded next to a longer one."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    a = Example([5, 6, 7, 8], [0, 0, 0.5, 0.5])
    b = Example([5, 6, 7, 8, 9, 10, 11], [0, 0, 0, 0.25, 0.25, 0.25, 0.25])
    coll = ExampleCollator(pad_token_id=0)

    def loss(batch):
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return weighted_ce(logits, batch["input_ids"], batch["weights"])

    together = loss(coll([a, b]))
    terms = step_terms(model, (len(a.input_ids), len(b.input_ids)))
    assert_fp32_close(together, loss(coll([a])) + loss(coll([b])), terms, msg="loss")


def test_example_length_mismatch_rejected():
    with pytest.raises(ValueError, match="weights"):
        Example([1, 2], [0.0])


# ------------------------------------------------------------------------------------------------- SFT
def _samples():
    from edge_distill.types import Sample, Strategy

    return [
        Sample("p1", "Tom has 3 apples and buys 2. How many?", "5", Strategy.COT, "3 + 2 = 5 apples."),
        Sample("p2", "What is 6 times 7?", "42", Strategy.POT, "answer = 6 * 7"),
    ]


def test_sft_examples_mask_prompt_and_mean_over_response(tiny_model_dir):
    from edge_distill.models import load_tokenizer
    from edge_distill.objectives.sft import build_sft_examples, encode, sample_response
    from edge_distill.strategies import student_prompt

    tok = load_tokenizer(tiny_model_dir)
    samples = _samples()
    examples = build_sft_examples(tok, samples, max_length=512)
    assert len(examples) == 2
    for s, ex in zip(samples, examples, strict=True):
        n_prompt = len(encode(tok, student_prompt(s.question)))
        assert all(w == 0 for w in ex.weights[:n_prompt])
        resp = ex.weights[n_prompt:]
        assert len(set(resp)) == 1 and sum(resp) == pytest.approx(1.0)
        assert ex.input_ids[-1] == tok.eos_token_id
        text = tok.decode(ex.input_ids[n_prompt:], skip_special_tokens=True)
        assert text == sample_response(s)
    assert "The answer is 5." in tok.decode(examples[0].input_ids)
    assert "The answer is" not in tok.decode(examples[1].input_ids)  # PoT: the sandbox computes it


def test_sft_drops_over_long_examples_and_counts_them(tiny_model_dir):
    from edge_distill.models import load_tokenizer
    from edge_distill.objectives.sft import build_sft_examples

    tok = load_tokenizer(tiny_model_dir)
    full = build_sft_examples(tok, _samples(), max_length=10_000)
    limit = min(len(e) for e in full)  # only the shorter one fits
    stats: dict[str, int] = {}
    kept = build_sft_examples(tok, _samples(), max_length=limit, stats=stats)
    assert len(kept) == 1 and len(kept[0]) == limit
    assert stats == {"dropped_too_long": 1, "examples": 1}
