"""The runtime modules (`edge_distill/runtimes/`): every llama.cpp user opens its model through
`runtimes.llamacpp.open_llama` with the context, threads and logits its purpose needs (the real llama.cpp on a
tiny GGUF), and a missing runtime library becomes each caller's own message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_distill.runtimes import llamacpp


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    pytest.importorskip("llama_cpp")
    from exporters.gguf_writer import write_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf"
    write_gguf(tiny_model_dir, path, "f16")
    return path


def test_every_llama_cpp_user_opens_it_here(tiny_gguf, tmp_path, monkeypatch):
    from device_profiles.runtimes import LlamaCppSession
    from edge_distill.methods.sampling import LlamaCppSampler
    from edge_distill.teachers.llamacpp import LlamaCppTeacher
    from exporters.parity import LlamaCppRuntime

    opened = []
    real = llamacpp.open_llama

    def spy(path, **kw):
        llm = real(path, **kw)
        opened.append((kw, llm))
        return llm

    monkeypatch.setattr(llamacpp, "open_llama", spy)
    teacher = LlamaCppTeacher(str(tiny_gguf), n_threads=1, cache=None, progress=False)
    teacher._load()
    sampler = LlamaCppSampler(tmp_path, gguf_path=tiny_gguf, n_threads=2, parallel=2)
    parity_rt = LlamaCppRuntime(tiny_gguf, threads=1)
    session = LlamaCppSession(tiny_gguf, 1)
    try:
        got = [(kw["n_ctx"], kw["threads"], kw.get("logits_all", False), kw.get("seed")) for kw, _ in opened]
        assert got == [
            (llamacpp.N_CTX_TEACHER, 1, False, None),  # the teacher (no top-k recording asked)
            (llamacpp.N_CTX_STUDENT, 1, False, None),  # the sampler: two contexts, one thread each
            (llamacpp.N_CTX_STUDENT, 1, False, None),
            (llamacpp.N_CTX_PARITY, 1, True, None),  # parity reads every position's logits
            (llamacpp.N_CTX_STUDENT, 1, False, 0),  # the bench session: llama.cpp's RNG fixed
        ]
        assert sampler.n_threads == 2 and len(sampler.contexts) == 2
        # what llama.cpp was really given
        assert [llm.n_ctx() for _, llm in opened] == [n for n, *_ in got]
        assert opened[0][1].context_params.n_threads == 1 and opened[3][1]._logits_all is True
        # the greedy paths agree: the session's generate and parity's eval loop give the same first tokens
        ids = session.tokenize("Question: 1 + 1?")
        assert session.timed_generate(ids, 4).tokens == parity_rt.greedy(ids, 4, None)
    finally:
        teacher.close()
        parity_rt.close()


def test_a_missing_runtime_is_the_callers_message(monkeypatch, tmp_path):
    from device_profiles.runtimes import LlamaCppSession, OrtGenAISession, RuntimeMissing
    from edge_distill.errors import ConfigError
    from edge_distill.methods.sampling import LlamaCppSampler
    from edge_distill.runtimes.ortgenai import OrtGenAI

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    with pytest.raises(RuntimeMissing, match="GGUF package needs llama-cpp-python"):
        LlamaCppSession(tmp_path / "m.gguf", 1)
    with pytest.raises(ConfigError, match="siked.sampler=llamacpp needs llama-cpp-python"):
        LlamaCppSampler(tmp_path)
    assert not list(tmp_path.iterdir())  # refused before writing a GGUF
    with pytest.raises(RuntimeMissing, match="ONNX package needs onnxruntime-genai"):
        OrtGenAISession(tmp_path, 1)
    with pytest.raises(ImportError):  # no caller message: the ImportError itself
        OrtGenAI(tmp_path)
    with pytest.raises(ImportError):
        llamacpp.open_llama(tmp_path / "m.gguf", threads=1)
