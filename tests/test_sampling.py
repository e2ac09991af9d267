"""Student sampling engine (edge_distill.methods.sampling): parsing/judging, n per prompt, backends."""

from __future__ import annotations

import importlib.util

import pytest

from edge_distill.errors import ConfigError
from edge_distill.methods.sampling import (
    SamplingParams,
    make_sampler,
    responses_to_samples,
    sample_student,
)
from edge_distill.types import Problem, Strategy

P = [
    Problem("a", "Tom has 2 apples and buys 3 more. How many apples?", "5"),
    Problem("b", "What is 6 times 7?", "42"),
]


def test_free_choice_responses_are_parsed_judged_and_tagged():
    responses = [
        [
            "[cot]: 2 + 3 = 5\nThe answer is 5.",
            "[l2m]: Sub-question 1: how many? Answer 1: 5.\nThe answer is 5.",
            "no tag. The answer is 5.",
        ],
        ["[pot]: answer = 6 * 7", "[cot]: 6*7\nThe answer is 41."],
    ]
    s = responses_to_samples(P, responses, None)
    assert [(x.problem_id, x.strategy.value, x.correct) for x in s] == [
        ("a", "cot", True),
        ("a", "l2m", True),
        ("a", "cot", False),
        ("b", "pot", True),
        ("b", "cot", False),
    ]
    assert (
        s[2].meta["parsed_strategy"] is None and s[2].pred == "5"
    )  # right number, no tag: not a usable sample
    assert s[0].rationale == "2 + 3 = 5" and s[0].source == "student" and s[0].gold == "5"


def test_forced_strategy_has_no_tag_in_the_response():
    s = responses_to_samples(
        P[:1], [["Sub-question 1: how many? Answer 1: 5.\nThe answer is 5."]], Strategy.L2M
    )
    assert (
        s[0].strategy is Strategy.L2M
        and s[0].correct
        and s[0].meta == {"parsed_strategy": "l2m", "forced": True}
    )


def test_vllm_is_import_guarded():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ConfigError, match="vLLM"):
        make_sampler("vllm", "/nonexistent")
    with pytest.raises(ConfigError, match="transformers, llamacpp or vllm"):
        make_sampler("onnx", "/nonexistent")  # type: ignore[arg-type]


@pytest.mark.slow
def test_transformers_sampler_returns_n_samples_per_problem(tiny_model_dir):
    sampler = make_sampler("transformers", tiny_model_dir, batch_size=8)
    samples, stats = sample_student(
        sampler, P, SamplingParams(n=3, temperature=0.7, max_new_tokens=8, seed=1)
    )
    assert [s.problem_id for s in samples] == ["a"] * 3 + ["b"] * 3
    assert (
        stats.samples == 6 and stats.prompts == 2 and stats.new_tokens > 0
    )  # re-tokenized text: approximate
    assert stats.to_dict()["samples_per_s"] > 0
    forced, _ = sample_student(
        sampler, P[:1], SamplingParams(n=2, temperature=0.0, max_new_tokens=8), strategy=Strategy.POT
    )
    assert all(s.strategy is Strategy.POT and s.meta["forced"] for s in forced)
    assert forced[0].raw == forced[1].raw  # greedy: the n samples are the same


@pytest.mark.slow
@pytest.mark.integration
def test_llamacpp_sampler_on_an_f16_gguf_matches_transformers_greedy(tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=8)
    gguf = tmp_path / "student-f16.gguf"
    cpp = make_sampler("llamacpp", tiny_model_dir, gguf_path=gguf, n_threads=1)
    assert gguf.is_file()
    hf = make_sampler("transformers", tiny_model_dir, batch_size=4)
    prompts = ["Question: What is 6 times 7?\nSolution: "]
    got, want = cpp.sample(prompts, params), hf.sample(prompts, params)
    assert len(got[0]) == 2
    # same greedy tokens through llama.cpp f16 and torch (the two decoders treat broken UTF-8 differently)
    assert got[0][0].replace("\ufffd", "") == want[0][0].replace("\ufffd", "")
    sampled = cpp.sample(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=3))
    assert len(sampled[0]) == 3
