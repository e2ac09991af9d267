"""Continuous batching (batching.py): finished rows leave the batch and waiting prompts take their slots,
and greedy output is what static batches (and one-by-one decoding) give."""

from __future__ import annotations

import pytest
import torch

from edge_distill.batching import choose_tokens
from edge_distill.generation import generate

PROMPTS = [
    "Question: What is 2+3?\nSolution: ",
    "Tom has 12 apples. He eats 4 and gives half of the rest to Ann. How many does he keep?\nSolution: ",
    "Half of 9?",
    "Question: A train travels 60 miles per hour for 3 hours. How far does it go?\nSolution: ",
    "Sara reads 7 pages a day.",
    "What is 10 times 10?",
    "A shop sells pens at $2 each. How much do 8 pens cost?",
]


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from edge_distill.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def _stop_for(texts):
    """A stop string that ends the greedy outputs at different lengths, so slots free up mid-batch."""
    for ch in "eaotn s":
        cuts = {t.find(ch) for t in texts}
        if len(cuts - {-1}) >= 3:
            return ch
    pytest.skip("the tiny model's outputs have no usable stop character")


def test_continuous_greedy_equals_static_and_one_by_one_with_rows_finishing_early(model_and_tok):
    model, tok = model_and_tok
    full = generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=7, engine="static")
    stop = _stop_for([f[0] for f in full])
    static = generate(
        model, tok, PROMPTS, max_new_tokens=20, batch_size=2, stop_strings=[stop], engine="static"
    )
    cont = generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=2, stop_strings=[stop])
    single = [
        generate(model, tok, [p], max_new_tokens=20, stop_strings=[stop], engine="static")[0] for p in PROMPTS
    ]
    assert cont == static == single
    assert len({len(c[0]) for c in cont}) >= 3  # rows really finished at different steps


def test_slots_are_refilled_as_rows_finish(model_and_tok):
    """Decode row-steps (rows x steps over all forwards): continuous batching pays ~Σ len_i, static
    batches pay Σ_batches size x longest; never more rows than slots."""
    model, tok = model_and_tok
    full = generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=7, engine="static")
    stop = _stop_for([f[0] for f in full])
    shapes = []
    handle = model.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    cost = {}
    try:
        for engine in ("static", "continuous"):
            shapes.clear()
            generate(model, tok, PROMPTS, max_new_tokens=20, batch_size=2, stop_strings=[stop], engine=engine)
            cost[engine] = (sum(b for b, t in shapes if t == 1), max(b for b, _ in shapes))
    finally:
        handle.remove()
    assert cost["continuous"][1] <= 2
    assert cost["continuous"][0] < cost["static"][0], cost


def test_n_samples_share_the_prompt_and_sampling_follows_top_p(model_and_tok):
    model, tok = model_and_tok
    torch.manual_seed(0)
    out = generate(model, tok, PROMPTS[:3], n=4, temperature=1.0, top_p=0.9, max_new_tokens=8, batch_size=2)
    assert [len(o) for o in out] == [4, 4, 4]
    assert any(len(set(o)) > 1 for o in out)
    logits = torch.tensor([[0.0, 5.0, 4.9, -3.0]])
    picks = {int(choose_tokens(logits, 1.0, 0.5)) for _ in range(50)}
    assert picks == {1}  # token 1 alone holds >= 50 % of the mass
    assert {int(choose_tokens(logits, 1.0, 0.99)) for _ in range(200)} >= {1, 2}
    assert int(choose_tokens(logits, 0.0, 1.0)) == 1
