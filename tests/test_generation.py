"""Batched generation on the tiny Llama: batching/padding/sorting must not change what is generated."""

from __future__ import annotations

import pytest
import torch

from edge_distill.generation import cut_at_stop, generate

PROMPTS = [
    "Question: What is 2+3?\nSolution: ",
    "Tom has 12 apples. He eats 4 and gives half of the rest to Ann. How many does he keep?\nSolution: ",
    "Half of 9?",
    "Question: A train travels 60 miles per hour for 3 hours. How far does it go?\nSolution: [cot]: ",
]


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from edge_distill.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def test_batched_greedy_equals_one_by_one(model_and_tok):
    model, tok = model_and_tok
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4)
    single = [generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert len({b[0] for b in batched}) > 1  # outputs differ by prompt, so order mix-ups would show


def test_order_preserved_across_batches(model_and_tok):
    model, tok = model_and_tok
    all_at_once = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4)
    in_pairs = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=2)
    assert all_at_once == in_pairs


def test_max_new_tokens_and_padding_side_restored(model_and_tok):
    model, tok = model_and_tok
    tok.padding_side = "right"
    short = generate(model, tok, PROMPTS[:2], max_new_tokens=4, batch_size=2)
    assert tok.padding_side == "right"
    tok.padding_side = "left"
    long = generate(model, tok, PROMPTS[:2], max_new_tokens=12, batch_size=2)
    for a, b in zip(short, long, strict=True):
        # greedy: the 4-token output is a strict prefix of the 12-token one
        assert b[0].startswith(a[0]) and len(a[0]) < len(b[0]), (a, b)


def test_greedy_n_copies_and_sampling_shapes(model_and_tok):
    model, tok = model_and_tok
    greedy = generate(model, tok, PROMPTS[:2], n=3, max_new_tokens=6)
    assert all(len(g) == 3 and len(set(g)) == 1 for g in greedy)
    torch.manual_seed(0)
    sampled = generate(
        model, tok, PROMPTS[:2], n=4, temperature=1.5, top_p=1.0, max_new_tokens=8, batch_size=1
    )
    assert [len(s) for s in sampled] == [4, 4]
    assert any(len(set(s)) > 1 for s in sampled)  # a random model at T=1.5 does not repeat itself 4 times


def test_stop_strings_cut_before_the_stop(model_and_tok):
    model, tok = model_and_tok
    full = generate(model, tok, PROMPTS[:1], max_new_tokens=16)[0][0]
    assert len(full) > 6, full
    stop = full[3:6]
    cut = generate(model, tok, PROMPTS[:1], max_new_tokens=16, stop_strings=[stop])[0][0]
    assert cut == full[: full.find(stop)]


def test_cut_at_stop_earliest_wins():
    assert cut_at_stop("a\nQuestion: b ### c", ["###", "\nQuestion:"]) == "a"
    assert cut_at_stop("abc", None) == "abc"
    assert cut_at_stop("abc", ["", "x"]) == "abc"


def test_empty_prompts_and_bad_args(model_and_tok):
    model, tok = model_and_tok
    assert generate(model, tok, []) == []
    with pytest.raises(ValueError):
        generate(model, tok, ["x"], n=0)
