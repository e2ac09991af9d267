"""A package's chat templates render a user message into exactly the training prompt, token for token.

Each runtime applies the template with its own machinery: llama-cpp-python's `create_chat_completion`
(its Jinja2ChatFormatter, built from the GGUF's `tokenizer.chat_template`), transformers'
`apply_chat_template` on the package's tokenizer files, and onnxruntime-genai's
`Tokenizer.apply_chat_template` on an ONNX package. The reference is the training side: `encode`
(objectives/sft.py) of `student_prompt(question[, forced strategy])` with the source model's tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_distill.models import load_tokenizer
from edge_distill.objectives.sft import build_sft_examples, encode
from edge_distill.strategies import STUDENT_PROMPT, student_prompt
from edge_distill.types import Sample, Strategy
from exporters import ExportError, export_model
from exporters.chat_template import jinja_template, modelfile, ollama_template, render
from exporters.package import default_prompt_template, model_card

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    # GSM8K's own double spaces, blanks around the question, digits glued to units and symbols
    "James writes a 3-page letter to 2 different friends twice a week.  How many pages does he write a year?",
    "  Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes.\n How much did she earn? \n",
    "A robe takes 2 bolts of blue fiber and half that much white fiber (1.5x?). Total = ?",
]
STRATEGIES = ["auto", "cot", "l2m", "pot"]


def _forced(strategy: str) -> str | None:
    return None if strategy == "auto" else strategy


def _jinja_render(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Jinja2 configured the way transformers and llama-cpp-python configure it (trim/lstrip blocks)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, eos_token="<eos>", bos_token="<bos>"
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jinja_template_renders_the_training_prompt(strategy):
    template = default_prompt_template(strategy=strategy)
    assert template["strategy"] == strategy and template["chat_template"] == jinja_template(template)
    for q in QUESTIONS:
        expected = student_prompt(q, _forced(strategy))
        assert render(template, q) == expected
        assert _jinja_render(template["chat_template"], [{"role": "user", "content": q}]) == expected
        # a system prompt and earlier turns are ignored: the last user message is the question
        history = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "an earlier question"},
            {"role": "assistant", "content": "[cot]: earlier.\nThe answer is 1."},
            {"role": "user", "content": q},
        ]
        assert _jinja_render(template["chat_template"], history, add_generation_prompt=False) == expected


def test_jinja_template_without_a_user_message_raises():
    with pytest.raises(jinja2.exceptions.TemplateError, match="put the question in a user message"):
        _jinja_render(jinja_template(default_prompt_template()), [{"role": "system", "content": "hi"}])


def test_bad_strategy_and_template_syntax_in_the_prompt_are_refused():
    with pytest.raises(ExportError, match="choose one of auto, cot, l2m, pot"):
        default_prompt_template(strategy="tot")
    tpl = default_prompt_template()
    for bad in ("Q {{x}} {question}", "{% if %}{question}", "no placeholder", " {question}"):
        with pytest.raises(ExportError, match="cannot become a chat template"):
            jinja_template({**tpl, "student_prompt": bad})
    with pytest.raises(ExportError, match="cannot become a chat template"):
        ollama_template({**tpl, "student_prompt": 'say """ {question}'})


@pytest.mark.parametrize("strategy", ["auto", "cot"])
def test_modelfile_template_stops_and_greedy_parameters(strategy):
    tpl = default_prompt_template(strategy=strategy)
    text = modelfile("model-q4_k_m.gguf", tpl, stop=["<|im_end|>", "Question:"])
    lines = text.splitlines()
    assert "FROM ./model-q4_k_m.gguf" in lines
    assert {"PARAMETER temperature 0", "PARAMETER repeat_penalty 1", 'PARAMETER stop "<|im_end|>"'} <= set(
        lines
    )
    body = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert body == ollama_template(tpl)
    # the Go template's literal text is the prompt around the question, ending with the forced tag
    before, _, after = STUDENT_PROMPT.partition("{question}")
    assert before + "{{ $question }}" + after + (" [cot]:" if strategy == "cot" else "") + '{{ "" }}' in body
    with pytest.raises(ExportError, match="not a GGUF file name"):
        modelfile("../x.gguf", tpl, stop=[])


def test_model_card_says_how_to_prompt_and_how_pot_runs():
    manifest = {"format": "gguf", "quant": "q8_0", "runtime": "llama.cpp", "files": {}}
    auto = model_card(manifest, "model-q8_0.gguf", default_prompt_template())
    assert "## How to prompt it" in auto and render(default_prompt_template(), "<question>") in auto
    assert "eval.strategy=cot" in auto and "run_programs" in auto and "Modelfile" in auto
    cot = model_card(manifest, "model-q8_0.gguf", default_prompt_template(strategy="cot"))
    assert "forces `[cot]`" in cot and "Solution: [cot]:\n" in cot


def _training_ids(tokenizer, question: str, strategy: str) -> list[int]:
    """The prompt tokens the student saw: training/eval encode the prompt string on its own."""
    return encode(tokenizer, student_prompt(question, _forced(strategy)))


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["auto", "cot"])
def test_gguf_package_chat_completion_feeds_the_training_tokens(tiny_model_dir, tmp_path, strategy):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    pkg = export_model(tiny_model_dir, tmp_path / "gguf-f16", "gguf", "f16", source_run="runs/my-run",
                       strategy=strategy, threads=1, check_transformers=False, parity_prompts=1)  # fmt: skip
    gguf_file = pkg / "model-f16.gguf"
    template = json.loads((pkg / "prompt_template.json").read_text())
    assert template["strategy"] == strategy
    reader = GGUFReader(gguf_file)
    meta = {k: reader.get_field(k).contents() for k in ("general.name", "general.basename")}
    assert meta == {"general.name": "my-run", "general.basename": "my-run"}
    assert reader.get_field("tokenizer.chat_template").contents() == template["chat_template"]

    source_tok = load_tokenizer(tiny_model_dir)
    llm = llama_cpp.Llama(str(gguf_file), n_ctx=512, verbose=False)
    # llama-cpp-python builds its chat handler from the GGUF metadata (no chat_format given)
    assert llm.chat_format == "chat_template.default"
    fed: list[list[int]] = []
    complete = llm.create_completion

    def recording(*args, **kwargs):  # the real completion runs; we only keep the ids it was given
        fed.append(list(kwargs["prompt"]))
        return complete(*args, **kwargs)

    llm.create_completion = recording
    pkg_tok = AutoTokenizer.from_pretrained(pkg)  # the HF tokenizer files shipped in the package
    for q in QUESTIONS:
        expected = _training_ids(source_tok, q, strategy)
        out = llm.create_chat_completion([{"role": "user", "content": q}], temperature=0, max_tokens=2)
        assert fed[-1] == expected, q
        if strategy != "auto":  # a forced tag: the ids are where the training example's response begins
            sample = Sample("q", q, "5", Strategy(strategy), "2 + 3 = 5.")
            trained = build_sft_examples(source_tok, [sample], max_length=4096)[0].input_ids
            assert trained[: len(expected)] == expected and len(trained) > len(expected) + 1, q
        assert out["usage"]["prompt_tokens"] == len(expected)
        hf = pkg_tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)  # fmt: skip
        assert list(hf) == expected, q
    llm.close()

    text = (pkg / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in text and f'PARAMETER stop "{source_tok.eos_token}"' in text
    card = (pkg / "README.md").read_text()
    assert "## How to prompt it" in card and render(template, "<question>") in card
    assert (
        json.loads((pkg / "tokenizer_config.json").read_text())["chat_template"] == template["chat_template"]
    )


@pytest.mark.integration
@pytest.mark.slow
def test_onnx_package_ort_genai_chat_template_feeds_the_training_tokens(tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    from transformers import AutoTokenizer

    from tests.tiny_models import build_tiny_llama

    # vocab 384: 512 equals the MLP width, which the builder mistakes for the LM head (test_export_onnx.py)
    source = build_tiny_llama(tmp_path / "tiny-384", vocab_size=384)
    pkg = export_model(
        source, tmp_path / "onnx-fp32", "onnx", "fp32", strategy="l2m", threads=1, parity_prompts=1
    )
    source_tok = load_tokenizer(source)
    tokenizer = og.Tokenizer(og.Model(str(pkg)))
    pkg_tok = AutoTokenizer.from_pretrained(pkg)
    for q in QUESTIONS:
        expected = _training_ids(source_tok, q, "l2m")
        messages = [{"role": "user", "content": q}]
        # ORT GenAI reads the package's tokenizer_config.json / chat_template.jinja itself
        text = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        assert list(tokenizer.encode(text)) == expected, q
        hf = pkg_tok.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert list(hf) == expected, q


# Ollama renders TEMPLATE with Go's text/template over its messages (api.Message: Role, Content, ...).
_GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Values struct {
	Messages []Message `json:"messages"`
	System   string
	Prompt   string
	Response string
}

func main() {
	var in struct {
		Template string    `json:"template"`
		Messages []Message `json:"messages"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(in.Template))
	if err := tmpl.Execute(os.Stdout, Values{Messages: in.Messages}); err != nil {
		panic(err)
	}
}
"""


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["auto", "pot"])
def test_ollama_template_renders_the_training_prompt_in_go(tmp_path, strategy):
    """Go's text/template (what Ollama executes) renders the Modelfile's TEMPLATE into the training prompt.
    Needs a Go toolchain (Debian: golang-go); Ollama itself is not installed here."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (apt-get install golang-go) to execute the Ollama template")
    (tmp_path / "main.go").write_text(_GO_RENDER)
    template = default_prompt_template(strategy=strategy)
    text = modelfile("model-q8_0.gguf", template, stop=["<|im_end|>"])
    go_template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    subprocess.run([go, "build", "-o", str(tmp_path / "render"), str(tmp_path / "main.go")], check=True,
                   cwd=tmp_path, env={**os.environ, "GOCACHE": str(tmp_path / "gocache")},
                   capture_output=True, timeout=300)  # fmt: skip
    for q in [q.strip() for q in QUESTIONS]:  # Go templates cannot strip: apps send the question trimmed
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "an earlier question"},
            {"role": "assistant", "content": "[cot]: earlier.\nThe answer is 1."},
            {"role": "user", "content": q},
        ]
        out = subprocess.run([str(tmp_path / "render")], input=json.dumps({"template": go_template, "messages": messages}),
                             capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
        assert out == student_prompt(q, _forced(strategy)), q


@pytest.mark.integration
def test_cli_export_strategy_option_forces_the_tag(tiny_model_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")
    from click.testing import CliRunner

    from edge_distill.cli import main

    bad = CliRunner().invoke(main, ["export", str(tiny_model_dir), "--format", "gguf", "--quant", "f16",
                                    "--strategy", "tot"])  # fmt: skip
    assert bad.exit_code == 2 and "'tot' is not one of" in bad.output
    out = tmp_path / "pkg"
    res = CliRunner().invoke(main, ["export", str(tiny_model_dir), "--format", "gguf", "--quant", "f16",
                                    "--strategy", "cot", "--parity-prompts", "1", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    template = json.loads((out / "prompt_template.json").read_text())
    assert template["strategy"] == "cot"
    assert render(template, "What is 2 + 3?") == student_prompt("What is 2 + 3?", "cot")
    assert "forces `[cot]`" in (out / "README.md").read_text()


@pytest.mark.integration
def test_set_prompt_metadata_rewrites_a_gguf_from_another_writer(tiny_model_dir, tmp_path):
    """For GGUFs written by llama.cpp's converter: name and chat template replaced, tensors kept."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")
    from gguf import GGUFReader

    from exporters.gguf_writer import set_prompt_metadata, write_gguf

    path = tmp_path / "m.gguf"
    write_gguf(tiny_model_dir, path, "f16")  # the tiny model's own ChatML template and directory name
    before = GGUFReader(path)
    assert "<|im_start|>" in before.get_field("tokenizer.chat_template").contents()
    tensors = {t.name: bytes(t.data.tobytes()) for t in before.tensors}
    del before
    template = default_prompt_template(strategy="cot")
    set_prompt_metadata(path, name="my-run", chat_template=template["chat_template"])
    after = GGUFReader(path)
    assert (
        after.get_field("general.name").contents()
        == after.get_field("general.basename").contents()
        == "my-run"
    )
    assert after.get_field("tokenizer.chat_template").contents() == template["chat_template"]
    assert {t.name: bytes(t.data.tobytes()) for t in after.tensors} == tensors
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # replaced atomically, no leftovers
    llm = llama_cpp.Llama(str(path), n_ctx=256, verbose=False)
    q = QUESTIONS[0]
    text = llm.create_chat_completion([{"role": "user", "content": q}], max_tokens=1)
    assert text["usage"]["prompt_tokens"] == len(_training_ids(load_tokenizer(tiny_model_dir), q, "cot"))
    llm.close()


def test_a_model_trained_on_the_old_prompt_format_is_refused_with_a_clear_message(tmp_path):
    """Old runs' models carry the pre-token-exact template (prompt ending 'Solution: '): eval and export
    refuse them instead of decoding a prompt they never saw; base models and today's models pass."""
    from edge_distill.config import EvalConfig, TrainConfig
    from edge_distill.stages import decode_student
    from edge_distill.types import Judging
    from exporters.chat_template import PromptFormatError, check_trained_prompt, student_jinja_template

    old_prompt = STUDENT_PROMPT + " "  # the old contract text ended with a blank
    old = jinja_template({"student_prompt": old_prompt, "strategy": "auto"})
    for name, template in (
        ("old", old),
        ("new", student_jinja_template()),
        ("chatml", "{{ '<|im_start|>' }}"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    check_trained_prompt(tmp_path / "new")
    check_trained_prompt(tmp_path / "chatml")
    check_trained_prompt(tmp_path / "missing")
    with pytest.raises(PromptFormatError, match="older edge-distill prompt format.*Retrain it"):
        check_trained_prompt(tmp_path / "old")
    with pytest.raises(PromptFormatError, match="older edge-distill prompt format"):
        decode_student(EvalConfig(), TrainConfig(), tmp_path / "old", [], Judging())


def test_an_old_package_prompts_with_its_own_packaged_format(tmp_path):
    """Packages keep the template they were exported with: the device bench prompts an old package (prompt
    ending 'Solution: ', suffix '[cot]: ') with that text, and its chat template renders it too."""
    from device_profiles.package import Package

    old = {**default_prompt_template(strategy="cot"), "student_prompt": STUDENT_PROMPT + " "}
    old["forced_strategy_suffix"] = "[{strategy}]: "
    pkg = Package(tmp_path, {}, old, tmp_path / "model.gguf")
    assert pkg.prompt("Q?", "cot").endswith("\nSolution: [cot]: ")
    assert render(old, "Q?") == pkg.prompt("Q?", "cot")
    legacy = {k: v for k, v in old.items() if k != "forced_strategy_suffix"}  # a template without the field
    assert render(legacy, "Q?") == pkg.prompt("Q?", "cot")
    new = Package(tmp_path, {}, default_prompt_template(strategy="cot"), tmp_path / "model.gguf")
    assert new.prompt("Q?", "cot") == student_prompt("Q?", "cot")
