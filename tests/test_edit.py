"""EDIT (objectives/edit.py, objectives/dual_cot.py): twins, AHP/CCP pairs, filter, KRSL weights and loss."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edge_distill.objectives.dual_cot import (
    ahp_prompt,
    ccp_prompt,
    perturb_gsm8k_solution,
    perturb_rationale,
)
from edge_distill.objectives.edit import (
    DualPair,
    build_krsl_examples,
    filter_pairs,
    krsl_weights,
    live_pairs,
    offline_pairs,
    step1_samples,
)
from edge_distill.objectives.examples import ExampleCollator
from edge_distill.objectives.losses import weighted_ce
from edge_distill.strategies import gsm8k_cot
from edge_distill.teachers.base import Completion
from edge_distill.types import Sample, Strategy
from tests.fp32_tolerance import assert_fp32_close, step_terms

GSM8K = Path(__file__).resolve().parents[1] / "edge_distill" / "assets" / "gsm8k" / "train.jsonl"
NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def _gold_samples(n: int = 40) -> list[Sample]:
    out = []
    for i, line in enumerate(GSM8K.read_text(encoding="utf-8").splitlines()[:n]):
        row = json.loads(line)
        gold = row["answer"].rpartition("####")[2].strip().replace(",", "")
        out.append(
            Sample(
                f"t{i}",
                row["question"],
                gold,
                Strategy.COT,
                gsm8k_cot(row["answer"]),
                pred=gold,
                correct=True,
            )
        )
    return out


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


# --------------------------------------------------------------------------- offline twins
def test_perturbation_swaps_one_operation_and_carries_it_to_the_answer():
    p = perturb_gsm8k_solution(NATALIA, seed="x")
    assert p is not None and p.answer != "72"
    assert p.solution.endswith(f"#### {p.answer}")
    assert perturb_gsm8k_solution(NATALIA, seed="x") == p  # deterministic
    src_ops = re.findall(r"<<(\d+)([-+*/])(\d+)=", NATALIA)
    new_ops = re.findall(r"<<(\d+)([-+*/])(\d+)=", p.solution)
    assert sum(a[1] != b[1] for a, b in zip(src_ops, new_ops, strict=True)) == 1
    assert perturb_gsm8k_solution("no calculator steps\n#### 3") is None


def test_plain_rationale_twin_keeps_the_style_and_most_gsm8k_solutions_have_one():
    samples = _gold_samples(200)
    twins = [perturb_rationale(s.rationale, s.gold, seed=s.problem_id) for s in samples]
    assert sum(t is not None for t in twins) / len(twins) > 0.7
    for s, t in zip(samples, twins, strict=True):
        if t is not None:
            assert "<<" not in t[0] and t[1] != s.gold and t[0] != s.rationale


# --------------------------------------------------------------------------- pairs and filter
def test_offline_pairs_pass_the_filter_and_step1_is_the_right_side():
    samples = _gold_samples(30)
    pairs, stats = offline_pairs(samples + [replace(samples[0], strategy=Strategy.POT)])
    kept, fstats = filter_pairs(pairs)
    assert len(kept) == len(pairs) == stats["pairs_built"] > 20
    assert fstats["kept_perturb"] == len(kept) and fstats["dropped"] == 0
    assert all(not p.wrong.correct and p.wrong.source == "synthetic" for p in kept)
    assert step1_samples(samples, kept) == samples  # no AHP pairs: step 1 is plain SFT data


def test_filter_drops_by_reason():
    right = _gold_samples(1)[0]
    wrong = replace(right, rationale="48 * 2 = 96", pred="96", correct=False)
    pairs = [
        DualPair(right, wrong, "ccp"),
        DualPair(replace(right, pred="5", correct=False), wrong, "ahp"),  # AHP did not produce a right CoT
        DualPair(right, replace(wrong, pred=right.gold), "ccp"),  # CCP "wrong" twin is right
        DualPair(right, replace(wrong, pred=None), "ccp"),
        DualPair(right, replace(right, pred="1"), "ccp"),  # same text, only the answer differs
        DualPair(replace(right, rationale=""), wrong, "ahp"),  # AHP only restated the hinted answer
    ]
    kept, stats = filter_pairs(pairs)
    assert kept == pairs[:1]
    assert stats == {
        "kept_ccp": 1,
        "dropped_right_not_correct": 1,
        "dropped_wrong_not_wrong": 1,
        "dropped_wrong_no_answer": 1,
        "dropped_identical": 1,
        "dropped_empty_rationale": 1,
        "kept": 1,
        "dropped": 5,
    }


class RecordedCompletionTeacher:
    """Stands in for a live teacher: returns completions written down in the test (no model is run)."""

    name = "recorded-completions"

    def __init__(self, answers: dict[str, list[Completion]]):
        self.answers = answers
        self.prompts: list[str] = []
        self.samplings: list = []

    def complete(self, prompts, k, sampling):
        self.prompts += list(prompts)
        self.samplings.append(sampling)
        return [self.answers["ahp" if "Hint:" in p.rsplit("Question:", 1)[-1] else "ccp"] for p in prompts]


def test_live_pairs_build_ahp_and_ccp_prompts_and_filter_the_completions():
    right = _gold_samples(1)[0]
    wrong = replace(right, rationale="Natalia sold 48*2 = 96 clips in May.", pred="144", correct=False)
    teacher = RecordedCompletionTeacher(
        {
            "ahp": [
                Completion(
                    "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\nThe answer is 72.\n\nQuestion: next"
                ),
                Completion("She sold 48+48 = 96 clips.\nThe answer is 96."),  # still wrong: dropped
                Completion("The answer is 72."),  # only restates the hint (seen with SmolLM2 via llama.cpp)
                Completion("", finish_reason="error", error="timeout"),
            ],
            "ccp": [
                Completion(
                    "Natalia sold 48*2 = 96 clips in May.\nNatalia sold 48+96 = 144 clips.\nThe answer is 144."
                ),
                Completion(right.rationale + "\nThe answer is 72."),  # not wrong: dropped
            ],
        }
    )
    pairs, stats = live_pairs(teacher, [right, wrong], sampling=None, k=3)
    assert stats["ahp_requests"] == 1 and stats["ccp_requests"] == 1 and stats["ahp_teacher_error"] == 1
    ahp, ccp = teacher.prompts
    assert ahp == ahp_prompt(wrong.question, "72") and ahp.endswith(
        "Hint: the correct answer is 72.\nAnswer:"
    )
    assert ccp == ccp_prompt(right.question, right.rationale, "72") and right.rationale in ccp
    kept, fstats = filter_pairs(pairs)
    assert fstats["kept_ahp"] == 1 and fstats["kept_ccp"] == 1 and fstats["dropped_wrong_not_wrong"] == 1
    assert fstats["dropped_right_not_correct"] == 1 and fstats["dropped_empty_rationale"] == 1
    ahp_pair = next(p for p in kept if p.kind == "ahp")
    assert "Question" not in ahp_pair.right.rationale and ahp_pair.wrong is wrong
    assert step1_samples([right], kept)[-1] is ahp_pair.right


# --------------------------------------------------------------------------- KRSL
def test_identical_right_and_wrong_give_zero_weight_everywhere(model_and_tokenizer):
    _, tok = model_and_tokenizer
    s = _gold_samples(1)[0]
    examples, metrics = build_krsl_examples(tok, [DualPair(s, s, "ccp")], shared_weight=0.0)
    assert len(examples) == 2 and all(w == 0 for e in examples for w in e.weights)
    assert metrics["key_step_fraction"] == 0.0


def test_krsl_signs_and_key_step_fraction(model_and_tokenizer):
    _, tok = model_and_tokenizer
    pairs, _ = offline_pairs(_gold_samples(20))
    examples, m = build_krsl_examples(tok, pairs, right_weight=1.0, wrong_weight=0.025)
    for right, wrong in zip(examples[::2], examples[1::2], strict=True):
        assert min(right.weights) == 0.0 and max(right.weights) > 0
        assert max(wrong.weights) == 0.0 and min(wrong.weights) < 0
    assert 0.0 < m["key_step_fraction"] < 0.3 and m["edit_pairs_used"] == len(pairs)
    with pytest.raises(ValueError, match="magnitudes"):
        build_krsl_examples(tok, pairs, wrong_weight=-0.025)


def test_krsl_with_all_weights_one_on_one_sequence_equals_plain_ce():
    torch.manual_seed(0)
    n_prompt, n_resp, vocab = 5, 9, 17
    ids = torch.randint(0, vocab, (1, n_prompt + n_resp))
    logits = torch.randn(1, n_prompt + n_resp, vocab)
    diff = [i % 3 == 0 for i in range(n_resp)]
    w = torch.tensor([krsl_weights(n_prompt, diff, diff_weight=1.0, shared_weight=1.0, parts=1)])
    plain = F.cross_entropy(logits[0, n_prompt - 1 : -1], ids[0, n_prompt:])
    torch.testing.assert_close(weighted_ce(logits, ids, w), plain)


def _step(model, tok, batches, n, nll_cap):
    collate = ExampleCollator(tok.pad_token_id)
    total = torch.zeros(())
    for batch in batches:
        b = collate(batch)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        total = total + weighted_ce(logits, b["input_ids"], b["weights"], nll_cap) / n
    return total


@pytest.mark.parametrize("nll_cap", [None, 5.0])
def test_krsl_accumulated_equals_unaccumulated(model_and_tokenizer, nll_cap):
    model, tok = model_and_tokenizer
    pairs, _ = offline_pairs(_gold_samples(6))
    examples, _ = build_krsl_examples(tok, pairs, shared_weight=0.1)
    n = len(examples)
    full = _step(model, tok, [examples], n, nll_cap)
    acc = _step(model, tok, [examples[i : i + 3] for i in range(0, n, 3)], n, nll_cap)
    assert_fp32_close(acc, full, step_terms(model, (len(e.input_ids) for e in examples)), msg="loss")


def test_nll_cap_switches_the_negative_term_off(model_and_tokenizer):
    model, tok = model_and_tokenizer
    pairs, _ = offline_pairs(_gold_samples(4))
    examples, _ = build_krsl_examples(tok, pairs)
    right_only = [e if i % 2 == 0 else replace(e, weights=[0.0] * len(e)) for i, e in enumerate(examples)]
    with torch.no_grad():
        capped = _step(model, tok, [examples], len(examples), nll_cap=0.0)  # every CE > 0: all negatives off
        ref = _step(model, tok, [right_only], len(examples), nll_cap=None)
        uncapped = _step(model, tok, [examples], len(examples), nll_cap=None)
    torch.testing.assert_close(capped, ref)
    assert uncapped < capped


def test_end_to_end_edit_step1_then_krsl_step2(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from edge_distill.config import TrainConfig
    from edge_distill.objectives.build import train_with_objective

    cfg = TrainConfig(objective="edit", max_steps=2, batch_size=2, lr=1e-3, save_steps=100, logging_steps=1)
    cfg.edit.step2_lr = 1e-3
    final = train_with_objective(cfg, _gold_samples(6), tiny_model_dir, tmp_path / "train")
    assert final == tmp_path / "train" / "step2" / "final"
    assert (tmp_path / "train" / "step1" / "merged" / "config.json").is_file()
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert (
        Path(adapter["base_model_name_or_path"]).resolve()
        == (tmp_path / "train" / "step1" / "merged").resolve()
    )
    lora_b = [t for k, t in load_file(final / "adapter_model.safetensors").items() if "lora_B" in k]
    assert any(torch.count_nonzero(t) > 0 for t in lora_b)  # step 2 moved the weights (B starts at 0)
    m = json.loads((tmp_path / "train" / "objective.json").read_text())
    assert (
        m["objective"] == "edit"
        and 0 < m["key_step_fraction"] < 0.5
        and m["pairs_kept"] == m["edit_pairs_used"]
    )
    assert m["edit_wrong_weight"] == -0.025 and m["edit_nll_cap"] == 5.0


@pytest.mark.integration
@pytest.mark.slow
def test_live_pairs_with_the_real_llamacpp_teacher(tmp_path):
    """AHP/CCP through a real llama.cpp teacher (SmolLM2-135M GGUF, so most pairs are expected to be filtered)."""
    pytest.importorskip("llama_cpp")
    from edge_distill.models import smollm2_gguf_path
    from edge_distill.teachers.live import Sampling
    from edge_distill.teachers.llamacpp import LlamaCppTeacher

    try:
        gguf = smollm2_gguf_path()
    except Exception as e:  # noqa: BLE001 - any missing-package error means "skip"
        pytest.skip(str(e))
    right = _gold_samples(2)
    wrong = [
        replace(
            right[0], problem_id="w0", rationale="Natalia sold 48 * 2 = 96 clips.", pred="96", correct=False
        )
    ]
    teacher = LlamaCppTeacher(
        str(gguf), n_ctx=2048, n_threads=1, cache=tmp_path / "cache.sqlite", progress=False
    )
    try:
        sampling = Sampling(temperature=0.0, max_tokens=96, seed=0)
        pairs, stats = live_pairs(teacher, right + wrong, sampling, k=1)
    finally:
        teacher.close()
    kept, fstats = filter_pairs(pairs)
    assert stats["ahp_requests"] == 1 and stats["ccp_requests"] == 2
    failed = sum(v for key, v in stats.items() if "_teacher_" in key)
    assert stats["pairs_built"] + failed == 3
    assert fstats["kept"] + fstats["dropped"] == len(pairs)
    for p in pairs:  # completions were cut at our exemplar boundaries and judged
        new = p.right if p.kind == "ahp" else p.wrong
        assert "Question:" not in new.raw and new.meta["edit"] == p.kind


@pytest.mark.slow
def test_pipeline_train_stage_uses_a_live_teacher_for_edit_pairs(tmp_path, tiny_model_dir, monkeypatch):
    """objective=edit with a teacher that can be re-prompted: the train stage asks it for CCP/AHP pairs
    (a stand-in teacher answers: a live model cannot run in a fast test), trains on them, and a rerun of
    the stage reuses the saved pairs instead of calling the teacher again."""
    from edge_distill import pipeline, stages
    from tests.test_siked import tiny_run

    cfg, run = tiny_run(tmp_path, tiny_model_dir, [], train={"objective": "edit"})
    wrong = Completion("She has 2 + 2 = 5 things.\nThe answer is 99999.")
    teacher = RecordedCompletionTeacher({"ahp": [], "ccp": [wrong]})
    monkeypatch.setattr(stages, "build_teacher", lambda teacher_cfg: teacher)
    summary = pipeline.stage_train(cfg, run)
    n_right = sum(
        1
        for s in stages.load_samples(run.path / "teach" / "samples.jsonl")
        if s.correct and s.strategy == Strategy.COT
    )
    assert len(teacher.prompts) == n_right > 0 and all("Hint:" not in p for p in teacher.prompts)
    assert summary["edit_live_pairs"] == n_right and (run.path / "train" / "edit_pairs.jsonl").is_file()
    m = json.loads((run.path / "train" / "objective.json").read_text())
    assert m["pairs_kept_ccp"] == n_right and "pairs_built" not in m  # live pairs, no offline twins
    monkeypatch.setattr(teacher, "complete", lambda *a: pytest.fail("teacher re-prompted on resume"))
    assert pipeline.stage_train(cfg, run)["edit_live_pairs"] == n_right
