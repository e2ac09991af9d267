"""CasCoD (objectives/cascod.py, objectives/build.py): split, weights, loss properties, two-stage decoding."""

from __future__ import annotations

import random

import pytest
import torch

from edge_distill.objectives.cascod import (
    answer_prompt,
    build_cascod_examples,
    cascod_loss_reference,
    cascod_text,
    split_response,
)
from edge_distill.objectives.examples import Example, ExampleCollator
from edge_distill.objectives.losses import weighted_ce
from edge_distill.objectives.sft import build_sft_examples, encode
from edge_distill.strategies import ANSWER_MARKER, student_prompt
from edge_distill.types import Sample, Strategy
from tests.fp32_tolerance import assert_all_fp32_close, assert_fp32_close, step_terms


def _samples() -> list[Sample]:
    return [
        Sample(
            "p1",
            "Tom has 3 apples and buys 4 more. How many?",
            "7",
            Strategy.COT,
            "Tom has 3 + 4 = 7 apples.",
            correct=True,
        ),
        Sample(
            "p2",
            "A box holds 6 eggs. How many eggs in 5 boxes?",
            "30",
            Strategy.COT,
            "5 * 6 = 30 eggs.",
            correct=True,
        ),
        Sample(
            "p3",
            "Ann had 10 dollars and spent 4. How much is left?",
            "6",
            Strategy.L2M,
            "How much did she spend? ** She spent 4 dollars.\nHow much is left? ** 10 - 4 = 6 dollars.",
            correct=True,
        ),
        Sample("p4", "What is 12 divided by 4?", "3", Strategy.POT, "answer = 12 / 4", correct=True),
    ]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _step_loss(model, tokenizer, batches: list[list[Example]], n_examples: int) -> torch.Tensor:
    """Loss of one optimizer step the way the trainer computes it: Σ over micro-batches of sum / #examples."""
    collate = ExampleCollator(tokenizer.pad_token_id)
    total = torch.zeros(())
    for batch in batches:
        b = collate(batch)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        total = total + weighted_ce(logits, b["input_ids"], b["weights"]) / n_examples
    return total


def _terms(model, examples: list[Example]) -> int:
    """Terms summed into one loss or gradient element of a step over `examples` (tests/fp32_tolerance.py)."""
    return step_terms(model, (len(e.input_ids) for e in examples))


def _grads(model, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_split_at_marker_and_templates_match_inference():
    text = cascod_text(_samples()[0])
    assert text is not None and ANSWER_MARKER not in text.rationale
    assert text.prompt == student_prompt(_samples()[0].question)
    assert text.rationale.startswith(" [cot]:") and text.answer.strip().startswith("7")
    assert (
        answer_prompt(text.prompt, text.rationale + "  \n")
        == text.prompt + text.rationale + "\n" + ANSWER_MARKER
    )
    assert split_response("[cot]: no marker here") is None
    assert cascod_text(_samples()[3]) is None  # PoT has no answer step


def test_answer_example_starts_with_the_stage2_inference_prompt(model_and_tokenizer):
    _, tok = model_and_tokenizer
    examples, _ = build_cascod_examples(tok, _samples()[:1], alpha=0.1)
    rationale_ex, answer_ex = examples
    text = cascod_text(_samples()[0])
    n_prompt = len(encode(tok, text.prompt))
    generated = tok.decode(rationale_ex.input_ids[n_prompt:-1])  # what stage 1 would produce before EOS
    stage2 = encode(tok, answer_prompt(text.prompt, generated))
    assert answer_ex.input_ids[: len(stage2)] == stage2
    assert all(w == 0 for w in answer_ex.weights[: len(stage2)]) and all(
        w > 0 for w in answer_ex.weights[len(stage2) :]
    )


def test_pot_passes_through_unchanged(model_and_tokenizer):
    _, tok = model_and_tokenizer
    pot = _samples()[3:]
    examples, metrics = build_cascod_examples(tok, pot, alpha=0.1)
    sft = build_sft_examples(tok, pot, 1024)
    assert [(e.input_ids, e.weights) for e in examples] == [(e.input_ids, e.weights) for e in sft]
    assert metrics["cascod_samples_passthrough"] == 1 and metrics["cascod_alpha"] == 0.1


def test_alpha_zero_equals_rationale_only_sft_and_ignores_answer_tokens(model_and_tokenizer):
    model, tok = model_and_tokenizer
    cot = _samples()[:3]
    examples, _ = build_cascod_examples(tok, cot, alpha=0.0)
    reference = []
    for s in cot:
        t = cascod_text(s)
        p, r = encode(tok, t.prompt), encode(tok, t.rationale) + [tok.eos_token_id]
        reference.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))
    loss = _step_loss(model, tok, [examples], len(examples))
    ref = _step_loss(model, tok, [reference], len(reference))
    terms = _terms(model, examples)
    assert_fp32_close(loss, ref, terms, msg="loss")
    grads = _grads(model, _step_loss(model, tok, [examples], len(examples)))
    assert_all_fp32_close(grads, _grads(model, ref), terms)
    # the answer tokens get exactly zero gradient
    b = ExampleCollator(tok.pad_token_id)(examples)
    logits = (
        model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.detach().requires_grad_()
    )
    weighted_ce(logits, b["input_ids"], b["weights"]).backward()
    answer_rows = [i for i in range(len(examples)) if i % 2 == 1]
    assert torch.count_nonzero(logits.grad[answer_rows]) == 0
    assert torch.count_nonzero(logits.grad[[i - 1 for i in answer_rows]]) > 0


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_weighted_loss_equals_paper_formula(model_and_tokenizer, alpha):
    model, tok = model_and_tokenizer
    cot = _samples()[:3]
    examples, _ = build_cascod_examples(tok, cot, alpha=alpha)
    expected = []
    with torch.no_grad():
        for k in range(len(cot)):
            parts = []
            for ex in examples[2 * k : 2 * k + 2]:
                ids = torch.tensor([ex.input_ids])
                first = next(i for i, w in enumerate(ex.weights) if w > 0)
                logits = model(input_ids=ids).logits[0]
                parts.append((logits[first - 1 : -1], ids[0, first:]))
            expected.append(cascod_loss_reference(*parts[0], *parts[1], alpha=alpha))
        loss = _step_loss(model, tok, [examples], len(examples))
    assert_fp32_close(loss, torch.stack(expected).mean(), _terms(model, examples), msg="loss")


def test_accumulated_loss_equals_unaccumulated(model_and_tokenizer):
    """Rationale and answer parts split over micro-batches (and mixed with PoT) give the same step."""
    model, tok = model_and_tokenizer
    examples, _ = build_cascod_examples(tok, _samples(), alpha=0.3)
    full = _step_loss(model, tok, [examples], len(examples))
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    shuffled = [examples[i] for i in order]
    micro = [shuffled[0:1], shuffled[1:4], shuffled[4:]]
    acc = _step_loss(model, tok, micro, len(examples))
    terms = _terms(model, examples)
    assert_fp32_close(acc, full, terms, msg="loss")
    assert_all_fp32_close(
        _grads(model, _step_loss(model, tok, micro, len(examples))), _grads(model, full), terms
    )


def test_the_fp32_bound_still_catches_one_dropped_token(model_and_tokenizer):
    """The tolerance above is not so wide that a real bug passes: the same step with one answer token's
    weight lost in one micro-batch fails it, on the loss and on the gradient (by 5-600x the bound on the
    machines measured)."""
    model, tok = model_and_tokenizer
    examples, _ = build_cascod_examples(tok, _samples(), alpha=0.3)
    full = _step_loss(model, tok, [examples], len(examples))
    e = max(
        examples, key=lambda x: sum(w > 0 for w in x.weights)
    )  # the most weighted tokens: smallest effect
    w = list(e.weights)
    w[max(i for i, x in enumerate(w) if x > 0)] = 0.0
    bad = [Example(x.input_ids, w, x.group) if x is e else x for x in examples]
    micro = [bad[0:1], bad[1:4], bad[4:]]
    terms = _terms(model, examples)
    with pytest.raises(AssertionError, match="fp32 bound"):
        assert_fp32_close(_step_loss(model, tok, micro, len(examples)), full, terms, msg="loss")
    with pytest.raises(AssertionError, match="fp32 bound"):
        assert_all_fp32_close(
            _grads(model, _step_loss(model, tok, micro, len(examples))), _grads(model, full), terms
        )


def test_alpha_out_of_range_is_an_error(model_and_tokenizer):
    with pytest.raises(ValueError, match="alpha"):
        build_cascod_examples(model_and_tokenizer[1], _samples(), alpha=1.5)


def _cascod_decode(fake_generate, prompts, **kwargs):
    """The CasCoD record's decoding, run by the one interpreter over a fake `generate(prompts, n, **kw)`."""
    from edge_distill.config import TrainConfig
    from edge_distill.decoding import staged_decode
    from edge_distill.objectives.build import objective

    decoding = objective("cascod").decoding(TrainConfig(objective="cascod"))
    return staged_decode(lambda ps, **kw: fake_generate(None, None, ps, **kw), prompts, decoding, **kwargs)


def test_two_stage_generate_uses_training_templates():
    from edge_distill.config import TrainConfig
    from edge_distill.objectives.build import objective

    calls: list[list[str]] = []

    def fake_generate(model, tokenizer, prompts, n=1, **kw):
        calls.append(list(prompts))
        if len(calls) == 1:
            return [
                ["[cot]: 3 + 4 = 7 apples.\n"],
                ["[pot]: answer = 12 / 4"],
                ["[cot]: 2 * 2 = 4.\nThe answer is 4."],
            ]
        return [[" 7."]]

    prompts = [student_prompt(q) for q in ("a", "b", "c")]
    out = [o[0] for o in _cascod_decode(fake_generate, prompts, max_new_tokens=100)]
    assert calls[1] == [
        answer_prompt(prompts[0], "[cot]: 3 + 4 = 7 apples.")
    ]  # only the CoT without an answer
    assert out[0] == "[cot]: 3 + 4 = 7 apples.\nThe answer is 7."
    assert out[1] == "[pot]: answer = 12 / 4" and out[2].endswith("The answer is 4.")
    t = objective("cascod").decoding(TrainConfig(objective="cascod"))
    assert t["stages"] == 2 and t["answer_join"] + t["answer_marker"] == "\n" + ANSWER_MARKER
    assert objective("sft").decoding(TrainConfig())["stages"] == 1


def test_the_config_validates_objective_names_against_the_table():
    from edge_distill.config import OBJECTIVE_NAMES, check_table_names
    from edge_distill.objectives.build import OBJECTIVES

    assert tuple(OBJECTIVES) == OBJECTIVE_NAMES
    with pytest.raises(RuntimeError, match="OBJECTIVE_NAMES lists sft, cascod, edit"):
        check_table_names(
            {**OBJECTIVES, "dpo": OBJECTIVES["sft"]}, OBJECTIVE_NAMES, "OBJECTIVES", "OBJECTIVE_NAMES"
        )


def test_end_to_end_cascod_trains_and_eval_decodes_in_two_stages(tiny_model_dir, tmp_path):
    """objective=cascod through the real trainer, then eval with the pipeline's decoding hook."""
    import json

    from edge_distill.config import TrainConfig
    from edge_distill.eval import evaluate
    from edge_distill.objectives.build import generate_fn_for, train_with_objective
    from edge_distill.types import Problem

    cfg = TrainConfig(objective="cascod", max_steps=3, batch_size=2, lr=1e-3, save_steps=100, logging_steps=1)
    cfg.cascod.alpha = 0.25
    final = train_with_objective(cfg, _samples(), tiny_model_dir, tmp_path / "train")
    assert (final / "adapter_config.json").is_file()
    metrics = json.loads((tmp_path / "train" / "objective.json").read_text())
    assert metrics["cascod_alpha"] == 0.25 and metrics["cascod_samples_split"] == 3
    assert json.loads((tmp_path / "train" / "train_result.json").read_text())["steps"] == 3
    problems = [Problem(s.problem_id, s.question, s.gold) for s in _samples()]
    fn = generate_fn_for(cfg)
    assert fn is not None and generate_fn_for(TrainConfig()) is None
    result = evaluate(final, problems, strategy="cot", max_new_tokens=8, batch_size=4, generate_fn=fn)
    assert result.meta["decoding"] == "custom" and result.n == 4
    # every forced-CoT response went through stage 2: rationale + "\nThe answer is" + generated answer
    assert all(f"\n{ANSWER_MARKER}" in p["raw"] for p in result.predictions)


def test_two_stage_sampling_gives_each_sampled_rationale_its_own_answer():
    def fake_generate(model, tokenizer, prompts, n=1, **kw):
        if n == 2:
            return [["[cot]: a", "[pot]: answer = 1"], ["[l2m]: b", "[cot]: c"]]
        return [[f" {len(p)}."] for p in prompts]

    out = _cascod_decode(fake_generate, ["P1", "P2"], n=2, temperature=0.7)
    assert [len(o) for o in out] == [2, 2] and out[0][1] == "[pot]: answer = 1"
    assert out[0][0] == f"[cot]: a\n{ANSWER_MARKER} {len(answer_prompt('P1', '[cot]: a'))}."
    assert out[1][1].startswith("[cot]: c\nThe answer is")
