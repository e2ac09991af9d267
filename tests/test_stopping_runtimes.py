"""torch, llama.cpp and ONNX Runtime GenAI stop a student's response at the same point, by the one rule of
edge_distill/stopping.py, and return the same text.

Real model, real runtimes: a tiny Llama trained in the test (tests/tiny_models.build_answering_llama) until
its greedy continuation of two student prompts is known — a finished CoT answer line and a finished PoT
program, each followed by what a student that misses EOS writes (a repeated answer, another tag) for longer
than the token budget. Without the rule every runtime decodes to the budget; with it, every runtime stops
at the token that completes the answer, and the packages (GGUF f16, ONNX fp32) are decoded through the
bench's own path (`run_accuracy`: worker process, the package's prompt_template.json decoding).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_distill.strategies import student_prompt
from edge_distill.types import Problem

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BUDGET = 96  # tokens; the tiny tokenizer spends ~1.8 characters a token
COT_Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
POT_Q = "Weng earns 12 dollars an hour. How much does she earn in 5 hours?"
COT_DONE = " [cot]: Natalia sold 48/2 = 24 clips in May.\nThe answer is 72."
POT_DONE = " [pot]: pay = 12\nanswer = pay * 5"
# what follows the finished answers: more than BUDGET tokens, so only the rule (or the budget) ends them
COT_RUN_ON = (
    "\nThe answer is 72.\nThe answer is 72.\n[pot]: [cot]: [l2m]: The answer is 72.\nThe answer is 72.\n" * 2
)
POT_RUN_ON = "\nThe answer is 60.\n[cot]: 12 * 5 = 60.\nThe answer is 60.\n[pot]: [cot]: [l2m]:\n" * 2
PROBLEMS = [Problem("cot-1", COT_Q, "72"), Problem("pot-1", POT_Q, "60")]
PROMPTS = [student_prompt(p.question) for p in PROBLEMS]
DONE = [COT_DONE, POT_DONE]


@pytest.fixture(scope="module")
def answering(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime_genai")
    from exporters.api import export_model
    from tests.tiny_models import build_answering_llama

    root = tmp_path_factory.mktemp("answering")
    src = build_answering_llama(
        root / "student", [(PROMPTS[0], COT_DONE + COT_RUN_ON), (PROMPTS[1], POT_DONE + POT_RUN_ON)]
    )
    out = {"model": src}
    for fmt, quant in [("gguf", "f16"), ("onnx", "fp32")]:
        out[fmt] = export_model(src, root / f"{fmt}-{quant}", fmt, quant, parity_prompts=1, threads=1,
                                check_transformers=False)  # fmt: skip
    return out


def _torch(model_dir: Path, stop: bool, engine: str) -> tuple[list[str], int]:
    """(texts, decode steps) of generation.generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge_distill.generation import generate

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    texts = [o[0] for o in generate(model, tok, PROMPTS, max_new_tokens=BUDGET, batch_size=1, stop_at_answer=stop,
                                    engine=engine, progress=False)]  # fmt: skip
    return texts, len(calls)


def test_the_model_runs_on_without_the_rule(answering):
    texts, _ = _torch(answering["model"], False, "continuous")
    for text, done in zip(texts, DONE, strict=True):
        assert text.startswith(done + "\nThe answer is") and len(text) > len(done) + 40


@pytest.mark.parametrize("engine", ["continuous", "static"])
def test_torch_stops_at_the_answer(answering, engine):
    texts, steps = _torch(answering["model"], True, engine)
    assert texts == DONE
    _, steps_off = _torch(answering["model"], False, engine)
    assert steps < steps_off  # it stopped decoding, not just cut the text


def _recording(session, name: str, drawn: list[int]):
    """Wrap the session's token source so the test sees every token its loop draws."""
    inner = getattr(session, name)

    if name == "_greedy":  # llama.cpp: a generator of tokens

        def greedy(ids):
            for tok in inner(ids):
                drawn.append(int(tok))
                yield tok

        return greedy

    def generator(*args, **kwargs):  # ORT GenAI: get_next_tokens once per generated token
        gen = inner(*args, **kwargs)

        class Recorded:
            def __getattr__(self, attr):
                return getattr(gen, attr)

            def get_next_tokens(self):
                tokens = gen.get_next_tokens()
                drawn.append(int(tokens[0]))
                return tokens

        return Recorded()

    return generator


def _decode(session, ids: list[int]) -> str:
    if hasattr(session, "_llm"):
        return session._llm.detokenize(ids).decode("utf-8", errors="replace")
    return str(session._tok.decode(ids))


@pytest.mark.parametrize("fmt, hook", [("gguf", "_greedy"), ("onnx", "_generator")])
def test_device_sessions_stop_at_the_token_that_completes_the_answer(answering, fmt, hook):
    from device_profiles.package import read_package
    from device_profiles.runtimes import open_session
    from edge_distill.stopping import answer_end

    pkg = read_package(answering[fmt])
    session = open_session(pkg.runtime, pkg.model_path, 1)
    for prompt, done in zip(PROMPTS, DONE, strict=True):
        runs = {}
        for stop in (False, True):
            drawn: list[int] = []
            setattr(session, hook, _recording(session, hook, drawn))
            runs[stop] = (session.generate(prompt, BUDGET, stop), drawn)
            delattr(session, hook)
        (long, ids), (short, drawn) = runs[False], runs[True]
        assert long.startswith(done) and len(long) > len(done) + 40 and len(ids) >= BUDGET
        assert short == done
        # the first token after which the rule holds on the decoded text: the loop drew exactly that many
        n = next(
            k for k in range(1, len(ids) + 1) if answer_end(_decode(session, ids[:k]), prompt) is not None
        )
        assert drawn == ids[:n] and n < BUDGET


def test_packages_decode_as_eval_through_the_bench(answering):
    """The bench's accuracy pass (worker process, the package's decoding) returns eval's texts."""
    from device_profiles.accuracy import run_accuracy
    from device_profiles.package import read_package
    from edge_distill.eval import evaluate

    ev = evaluate(answering["model"], PROBLEMS, max_new_tokens=BUDGET, batch_size=2)
    assert [r["raw"] for r in ev.predictions] == DONE
    for fmt in ("gguf", "onnx"):
        pkg = read_package(answering[fmt])
        assert pkg.decoding["stop_at_answer"] is True
        acc = run_accuracy(pkg, 1, PROBLEMS, max_new_tokens=BUDGET)
        assert [r["raw"] for r in acc.predictions] == DONE, fmt
        assert [r["correct"] for r in acc.predictions] == [r["correct"] for r in ev.predictions]


def test_llama_cpp_sampler_stops_at_the_answer(answering):
    from edge_distill.methods.sampling import LlamaCppSampler, SamplingParams

    pkg = answering["gguf"]
    sampler = LlamaCppSampler(answering["model"], gguf_path=next(pkg.glob("*.gguf")), n_threads=1)
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=BUDGET)
    assert sampler.sample(PROMPTS, params) == [[d, d] for d in DONE]
    r = sampler.llm.create_completion(PROMPTS[0], max_tokens=BUDGET, temperature=0.0)  # no criterion
    assert r["usage"]["completion_tokens"] == BUDGET
