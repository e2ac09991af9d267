"""vLLM in-process teacher.

vLLM is CUDA-only and is not installed on the development machines nor on the lent GPU box (no network
there), so the real backend cannot run in this project's CI. These tests drive the thin adapter with a
stand-in `vllm` module that records what it is given; the real-vLLM test runs only where vllm imports.
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from edge_distill.errors import TeacherError
from edge_distill.teachers.live import Sampling
from edge_distill.teachers.vllm import VllmTeacher


@dataclass
class _Out:
    text: str
    finish_reason: str
    token_ids: list[int] = field(default_factory=lambda: [1, 2, 3])


class _LLM:
    instances: list[_LLM] = []

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.calls: list[tuple[list[str], list[Any]]] = []
        _LLM.instances.append(self)

    def generate(self, prompts: list[str], params: list[Any], use_tqdm: bool = True) -> list[Any]:
        self.calls.append((prompts, params))
        return [
            types.SimpleNamespace(
                outputs=[_Out(f"{p}/{sp.seed + j}", "length" if p == "long" else "stop") for j in range(sp.n)]
            )
            for p, sp in zip(prompts, params, strict=True)
        ]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("vllm")
    mod.LLM = _LLM  # type: ignore[attr-defined]
    mod.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", mod)
    _LLM.instances.clear()
    return mod


def test_adapter_sends_n_seed_and_tensor_parallel(fake_vllm: types.ModuleType, tmp_path: Any) -> None:
    t = VllmTeacher(
        "some/model", tensor_parallel_size=4, chunk_size=2, cache=tmp_path / "c.sqlite", progress=False
    )
    s = Sampling(temperature=0.8, top_p=0.9, max_tokens=64, stop=("\nQuestion:",), seed=5)
    out = t.complete(["a", "b", "long"], 3, s)
    (llm,) = _LLM.instances
    assert llm.kwargs["tensor_parallel_size"] == 4 and llm.kwargs["model"] == "some/model"
    assert [c[0] for c in llm.calls] == [["a", "b"], ["long"]]  # chunked: cached after each generate
    sp = llm.calls[0][1][0]
    assert (sp.n, sp.seed, sp.temperature, sp.top_p, sp.max_tokens, sp.stop) == (
        3,
        5,
        0.8,
        0.9,
        64,
        ["\nQuestion:"],
    )
    assert [c.text for c in out[0]] == ["a/5", "a/6", "a/7"]
    assert all(c.finish_reason == "length" for c in out[2]) and t.report()["completion_tokens"] == 27

    again = VllmTeacher("some/model", cache=tmp_path / "c.sqlite", progress=False)
    assert [c.text for c in again.complete(["a"], 3, s)[0]] == ["a/5", "a/6", "a/7"]
    assert len(_LLM.instances) == 1  # all cached: vLLM is never started


def test_missing_vllm_is_a_clear_teacher_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    t = VllmTeacher("m", cache=None, progress=False)
    with pytest.raises(TeacherError, match="needs vLLM.*teacher.backend=http"):
        t.complete(["x"], 1, Sampling())


@pytest.mark.gpu
def test_real_vllm_generates() -> None:
    pytest.importorskip("vllm", reason="vLLM is CUDA-only and not installed here")
    model = os.environ.get("EDGE_DISTILL_VLLM_MODEL")  # a local HF directory: tests never download
    if not model:
        pytest.skip("set EDGE_DISTILL_VLLM_MODEL to a local HF model directory")
    t = VllmTeacher(model, cache=None, progress=False)
    out = t.complete(["Question: 2+2?\nSolution:\n"], 2, Sampling(max_tokens=16))
    assert len(out[0]) == 2 and all(c.finish_reason != "error" for c in out[0])
