"""The prompt/response boundary is token-exact: training ids == whole-string tokenization ids.

Training encodes the prompt and the response apart and concatenates the ids (`objectives.sft.encode`);
llama.cpp, Ollama and every chat template tokenize the rendered string in one go. With SmolLM2's byte-level
BPE a prompt ending in a blank (`Solution: `) becomes a lone `Ġ` in training but `Ġ[` in a whole-string
tokenization. Checked on every recorded-teacher sample of the shipped GSM8K train sample (CoT, L2M, PoT),
with the built-in student's HF tokenizer and with llama.cpp on the shipped SmolLM2 GGUF, for free-choice
prompts, forced-strategy prompts, the CasCoD stage-2 prompt and the GGUF chat template's rendering
(llama-cpp-python's own Jinja2ChatFormatter and tokenize call, as `create_chat_completion` does). A
control shows the old trailing-space format fails the same check.
"""

from __future__ import annotations

import pytest

from edge_distill import decoding as dec
from edge_distill.data import load_problems
from edge_distill.models import load_tokenizer, resolve_model, smollm2_gguf_path
from edge_distill.objectives.cascod import answer_prompt, cascod_text
from edge_distill.objectives.sft import build_sft_examples, encode
from edge_distill.strategies import (
    format_response,
    parse_response,
    response_after_tag,
    split_final_answer,
    student_prompt,
)
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Sample, Strategy
from exporters.package import default_prompt_template

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~30 s: ~3,000 samples x 2 tokenizers


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """Every completed recorded-teacher sample of the shipped train sample, all three strategies."""
    problems = load_problems("builtin:gsm8k-sample", split="train")
    out: list[Sample] = []
    for strategy in Strategy:
        for p, comps in zip(problems, RecordedTeacher().generate(problems, strategy, 1), strict=True):
            for c in comps:
                if c.finish_reason != "stop":
                    continue
                rationale = c.text if strategy is Strategy.POT else split_final_answer(c.text)[0]
                out.append(Sample(p.id, p.question, p.answer, strategy, rationale, raw=c.text))
    assert {s.strategy for s in out} == set(Strategy) and len(out) > 1000
    return out


@pytest.fixture(scope="module")
def hf():
    tokenizer = load_tokenizer(resolve_model("builtin:smollm2-135m"))
    return tokenizer, lambda text: encode(tokenizer, text)


@pytest.fixture(scope="module")
def llama():
    llm = llama_cpp.Llama(str(smollm2_gguf_path()), vocab_only=True, verbose=False)
    yield llm, lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    llm.close()


def _response(s: Sample) -> str:
    return format_response(s.strategy, s.rationale, None if s.strategy is Strategy.POT else s.gold)


def _boundary_mismatches(
    enc, samples, prompt_fn=student_prompt, response_fn=_response
) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {"free": [], "forced": [], "cascod": []}
    for s in samples:
        prompt, response = prompt_fn(s.question), response_fn(s)
        whole = enc(prompt + response)
        if enc(prompt) + enc(response) != whole:
            bad["free"].append(s.problem_id)
        forced = prompt_fn(s.question, s.strategy)
        if enc(forced) + enc(response[len(forced) - len(prompt) :]) != whole:
            bad["forced"].append(s.problem_id)
        text = cascod_text(s) if prompt_fn is student_prompt else None
        if text is not None:  # stage 2: stage-2 prompt + " N." tokenized apart == whole
            q = answer_prompt(text.prompt, text.rationale)
            if enc(q) + enc(text.answer) != enc(q + text.answer):
                bad["cascod"].append(s.problem_id)
    return {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("tokenizer", ["hf", "llama"])
def test_training_ids_equal_whole_string_ids(request, samples, tokenizer):
    _, enc = request.getfixturevalue(tokenizer)
    assert _boundary_mismatches(enc, samples) == {}


def test_old_trailing_space_format_fails_the_same_check(samples, llama):
    """Control: the pre-fix format (`Solution: ` + `[cot]: …`) is caught by the check above."""
    _, enc = llama

    def old_prompt(q, strategy=None):
        p = student_prompt(q).rstrip(":") + ": "
        return p if strategy is None else p + f"[{Strategy(strategy).value}]: "

    def old_response(s):
        return _response(s).lstrip()

    bad = _boundary_mismatches(enc, samples[:50], old_prompt, old_response)
    assert len(bad["free"]) == 50


def test_sft_examples_and_forced_prompts_agree_token_for_token(samples, hf, llama):
    """The ids the student trains on (build_sft_examples) are llama.cpp's ids of the whole text, and a
    forced-strategy prompt's ids are a prefix of them: the student continues exactly where it learned to."""
    tokenizer, _ = hf
    llm, lenc = llama
    subset = samples[::25]
    examples = build_sft_examples(tokenizer, subset, max_length=4096)
    assert len(examples) == len(subset)
    for s, ex in zip(subset, examples, strict=True):
        ids = ex.input_ids[:-1]  # EOS appended by the builder
        assert ids == lenc(student_prompt(s.question) + _response(s)), s.problem_id
        forced = lenc(student_prompt(s.question, s.strategy))
        assert ids[: len(forced)] == forced, s.problem_id
        after = response_after_tag(_response(s))
        assert parse_response(after, s.strategy).strategy is s.strategy
        assert llm.detokenize(ids[len(forced) :]).decode("utf-8") == after


@pytest.mark.parametrize("strategy", ["auto", "cot", "l2m", "pot"])
def test_gguf_chat_template_rendering_gives_the_training_ids(samples, llama, strategy):
    """llama-cpp-python's chat machinery (Jinja2ChatFormatter + tokenize as create_chat_completion calls
    it) on the package's GGUF chat template, with SmolLM2's vocabulary: the ids are the training ids'
    prefix — the whole prompt for auto, prompt + forced tag otherwise."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm, lenc = llama
    template = default_prompt_template(strategy=strategy)
    formatter = Jinja2ChatFormatter(
        template["chat_template"], eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    forced = None if strategy == "auto" else Strategy(strategy)
    subset = [s for s in samples if forced in (None, s.strategy)][::40]
    assert subset
    for s in subset:
        result = formatter(messages=[{"role": "user", "content": s.question}])
        ids = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        training = lenc(student_prompt(s.question)) + lenc(_response(s))
        if forced is None:
            assert ids == lenc(student_prompt(s.question)), s.problem_id
        else:
            assert ids == training[: len(ids)] and len(ids) > len(lenc(student_prompt(s.question)))


def test_cascod_two_stage_decoding_prompt_is_the_training_prompt(samples, hf):
    """What staged decoding builds for stage 2 from a stage-1 output equals the CasCoD training prompt."""
    _, enc = hf
    decoding = dec.two_stage()
    for s in [s for s in samples if s.strategy is not Strategy.POT][::50]:
        text = cascod_text(s)
        assert text is not None
        stage1 = text.rationale + "\n"  # generated text may end with blanks; both drop them
        assert dec.answer_prompt(text.prompt, stage1, decoding) == answer_prompt(text.prompt, text.rationale)
        # and from a forced-tag prompt, where the student generated only the text after the tag
        forced = student_prompt(s.question, s.strategy)
        after = text.rationale[len(forced) - len(text.prompt) :]
        assert dec.answer_prompt(forced, after, decoding) == answer_prompt(text.prompt, text.rationale)
