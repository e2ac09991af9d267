"""Eval engines and dtypes: `eval.engine=vllm` and the llama.cpp sampler's threads.

vLLM is CUDA-only and not installed here (nor on the lent GPU box), so it cannot run in this project's CI:
the vLLM test drives the eval path with a stand-in `vllm` module that answers like vLLM would and records
what it was asked. It proves the wiring (prompts, greedy params, stop strings, LoRA merge, CasCoD's two
stages), not vLLM itself.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch

from edge_distill.types import Problem


class _LLM:
    instances: list[_LLM] = []

    def __init__(self, model: str, tensor_parallel_size: int = 1):
        self.model = model
        self.calls: list[tuple[list[str], Any]] = []
        _LLM.instances.append(self)

    def generate(self, prompts: list[str], sp: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append((prompts, sp))
        text = " 3 + 4 = 7.\nThe answer is 7." if "3 + 4" in prompts[0] else " no idea"
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)] * sp.n) for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("vllm")
    mod.LLM = _LLM  # type: ignore[attr-defined]
    mod.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", mod)
    _LLM.instances.clear()
    return mod


def test_eval_on_vllm_stand_in(fake_vllm, tiny_model_dir):
    from edge_distill.eval import evaluate

    problems = [
        Problem(id="a", question="What is 3 + 4?", answer="7"),
        Problem(id="b", question="Hm?", answer="1"),
    ]
    r = evaluate(tiny_model_dir, problems, strategy="cot", max_new_tokens=33, engine="vllm")
    assert (r.correct, r.n, r.meta["engine"]) == (1, 2, "vllm")
    (llm,) = _LLM.instances
    prompts, sp = llm.calls[0]
    assert len(prompts) == 2 and sp.temperature == 0.0 and sp.max_tokens == 33 and sp.n == 1


def test_eval_vllm_two_stage_cascod_and_missing_vllm(fake_vllm, tiny_model_dir, monkeypatch):
    from edge_distill.config import TrainConfig
    from edge_distill.errors import ConfigError
    from edge_distill.eval import evaluate
    from edge_distill.objectives.build import generate_fn_for

    problems = [Problem(id="b", question="Hm?", answer="1")]
    gen = generate_fn_for(TrainConfig(objective="cascod"))
    evaluate(tiny_model_dir, problems, strategy="cot", engine="vllm", generate_fn=gen)
    (llm,) = _LLM.instances
    assert len(llm.calls) == 2  # rationale, then the answer step, both on vLLM
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match="eval.engine=vllm"):
        evaluate(tiny_model_dir, problems, engine="vllm")


def test_eval_loads_the_configured_dtype(tiny_model_dir, monkeypatch):
    import edge_distill.models as models
    from edge_distill.eval import evaluate

    seen = []
    real = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **kw: seen.append(kw.get("dtype")) or real(*a, **kw))
    problems = [Problem(id="a", question="What is 3 + 4?", answer="7")]
    r = evaluate(tiny_model_dir, problems, max_new_tokens=4, dtype=torch.bfloat16)
    assert seen == [torch.bfloat16] and r.n == 1


@pytest.mark.slow
@pytest.mark.integration
def test_llamacpp_sampler_uses_every_core_and_parallel_contexts_agree(tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from edge_distill.methods.sampling import SamplingParams, available_cores, make_sampler

    gguf = tmp_path / "student-f16.gguf"
    one = make_sampler("llamacpp", tiny_model_dir, gguf_path=gguf)
    assert one.n_threads == available_cores()
    two = make_sampler("llamacpp", tiny_model_dir, gguf_path=gguf, n_threads=2, parallel=2)
    assert len(two.contexts) == 2
    prompts = ["Question: What is 6 times 7?\nSolution: ", "Half of 9?", "Ten times ten?"]
    for params in (
        SamplingParams(n=2, temperature=0.0, max_new_tokens=8),
        SamplingParams(n=2, max_new_tokens=8, seed=5),
    ):
        assert one.sample(prompts, params) == two.sample(
            prompts, params
        )  # seeds depend on (prompt, sample) only
