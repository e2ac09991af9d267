"""The student's plain-text prompt as the chat templates runtimes and apps apply on their own.

The student is trained on `strategies.student_prompt(question)` — plain text, no chat roles. Chat front ends
(llama.cpp's chat mode and `create_chat_completion`, Ollama, LM Studio, ORT GenAI, transformers'
`apply_chat_template`) wrap a user message in the template the package carries, so every package carries
templates that render the question into exactly that text:

- `jinja_template(template)`: GGUF `tokenizer.chat_template`, HF `tokenizer_config.json` /
  `chat_template.jinja` (transformers, ORT GenAI, LM Studio);
- `ollama_template(template)` inside `modelfile(...)`: Ollama's Go-template `TEMPLATE`.

The question is the last user message; system messages and earlier turns are ignored (the student is a
single-turn solver). The template's `strategy` "cot" | "l2m" | "pot" appends the forced tag, as
`eval.strategy` does; "auto" lets the student pick. Each function reads the package's prompt template
(`package.default_prompt_template`: `student_prompt`, `forced_strategy_suffix`, `strategy`). Torch-free.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from edge_distill.errors import EdgeDistillError
from exporters.errors import ExportError

STRATEGY_CHOICES = ("auto", "cot", "l2m", "pot")
MODELFILE = "Modelfile"

_NO_QUESTION = "edge-distill student: put the question in a user message"


# A package's prompt texts are untrusted (a verified package proves integrity, not intent): they are filled by
# `fill_template`, never str.format, and bounded (the student's own prompt is ~200 characters).
MAX_TEMPLATE_CHARS = 4096


def fill_template(text: object, where: str, **values: str) -> str:
    """`text` with each `{name}` replaced by `values[name]` and `{{`/`}}` unescaped — nothing else: a
    format spec (`{question:>1500000000}` asked str.format for 1.5 GB), a conversion, attribute or index
    access, another field name, or a text over MAX_TEMPLATE_CHARS is an ExportError naming `where`."""
    if not isinstance(text, str) or len(text) > MAX_TEMPLATE_CHARS:
        raise ExportError(f"{where}: not a text of at most {MAX_TEMPLATE_CHARS} characters")
    out: list[str] = []
    try:
        for literal, name, spec, conversion in string.Formatter().parse(text):
            out.append(literal)
            if name is None:
                continue
            if name not in values or spec or conversion:
                field = (
                    "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                )
                raise ExportError(
                    f"{where}: {field[:60]!r} is not a plain {', '.join('{' + k + '}' for k in values)} field; "
                    "re-export the package"
                )
            out.append(values[name])
    except ValueError as e:  # a lone brace
        raise ExportError(f"{where}: {e}; re-export the package") from None
    return "".join(out)


def forced_strategy(strategy: str | None) -> str | None:
    """None for "auto"/None, else the strategy name; anything else is an error naming the choices."""
    if strategy is None or strategy == "auto":
        return None
    if strategy not in STRATEGY_CHOICES:
        raise ExportError(f"prompt strategy {strategy!r}: choose one of {', '.join(STRATEGY_CHOICES)}")
    return strategy


# Packages written before the token-exact boundary (prompt "...Solution: ", forced "...Solution: [cot]: ")
# carry no suffix of the current form; a template without `forced_strategy_suffix` is one of those.
LEGACY_FORCED_SUFFIX = "[{strategy}]: "


def forced_suffix(template: dict[str, Any]) -> str:
    """The packaged forced-tag suffix; the legacy one for packages that predate the field."""
    return str(template.get("forced_strategy_suffix", LEGACY_FORCED_SUFFIX))


def render(template: dict[str, Any], question: str) -> str:
    """What every chat template below renders for one user message: the packaged prompt, forced tag included."""
    before, after = _parts(template, ())
    return before + question.strip() + after


def _parts(template: dict[str, Any], forbidden: tuple[str, ...]) -> tuple[str, str]:
    """The literal text before and after the question (the forced tag included)."""
    before, sep, after = str(template["student_prompt"]).partition("{question}")
    forced = forced_strategy(template.get("strategy"))
    if forced:
        after += fill_template(forced_suffix(template), "forced_strategy_suffix", strategy=forced)
    bad = [s for s in forbidden if s in before + after]
    if not sep or "{question}" in after or before[:1].isspace():
        bad.append("not exactly one {question}, at a non-blank start")
    if bad:  # the prompt text would be read as template syntax: refuse rather than render something else
        raise ExportError(f"prompt template student_prompt cannot become a chat template: {bad}")
    return before, after


def student_jinja_template() -> str:
    """The Jinja template of the plain student prompt (strategy auto), for HF model directories a run
    writes (train/final): `apply_chat_template` on them gives the prompt the student is trained on."""
    from edge_distill.strategies import STUDENT_PROMPT

    return jinja_template({"student_prompt": STUDENT_PROMPT, "strategy": "auto"})


class PromptFormatError(EdgeDistillError):
    """A model directory was trained on a prompt format other than the current one."""


_TEMPLATE_MARK = "{#- edge-distill student:"


def check_trained_prompt(model_dir: str | Path) -> None:
    """Refuse to decode/export a run's model trained on another edge-distill prompt format.

    Every model a run trains carries the student's Jinja template in its tokenizer files (training.py), so
    the format it learned is on disk: an edge-distill template that is not today's `student_jinja_template`
    is one from before the token-exact boundary (prompt ending `Solution: `, response `[cot]: …`).
    Decoding it with today's prompt would measure a format it never saw. Model directories without an
    edge-distill template (a base model, a foreign fine-tune) are not checked. Packages are unaffected:
    they carry their own `prompt_template.json`, which the device bench uses.
    """
    path = Path(model_dir) / "tokenizer_config.json"
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return  # no (readable) tokenizer config here: loading the model reports that itself
    if not isinstance(template, str) or not template.startswith(_TEMPLATE_MARK):
        return
    if template != student_jinja_template():
        raise PromptFormatError(
            f"{model_dir}: this student was trained on an older edge-distill prompt format (its "
            f"{path.name} chat_template differs from today's student prompt: the old prompt ended with "
            "'Solution: ' and responses began '[cot]: '). Decoding or exporting it with today's prompt would "
            "measure a format it never saw. Retrain it (edge-distill run ... --overwrite or a new name), or "
            "evaluate its existing packages: they keep their own prompt_template.json"
        )


def jinja_template(template: dict[str, Any]) -> str:
    """A Jinja chat template (HF / llama.cpp / LM Studio / ORT GenAI) rendering the training prompt.

    Written for the environments those runtimes use (trim_blocks + lstrip_blocks): literal text never
    starts a line with a block tag, and no whitespace-control dash touches the prompt's own whitespace.
    `| trim` is Python's str.strip, as in `student_prompt`.
    """
    before, after = _parts(template, ("{{", "{%", "{#", "}}", "%}", "#}"))
    return (
        "{#- edge-distill student: the last user message is the question; the prompt is the plain text the "
        "student was trained on -#}\n"
        "{%- set ns = namespace(question=none) -%}\n"
        # every message's content is read (not rendered): llama.cpp then sees a template that handles system
        # messages itself instead of merging the system prompt into the question
        "{%- for message in messages -%}\n"
        "{%- set content = message['content'] -%}\n"
        "{%- if message['role'] == 'user' -%}{%- set ns.question = content -%}{%- endif -%}\n"
        "{%- endfor -%}\n"
        f"{{%- if ns.question is none -%}}{{{{ raise_exception('{_NO_QUESTION}') }}}}{{%- endif -%}}\n"
        f"{before}{{{{ ns.question | trim }}}}{after}"
    )


def ollama_template(template: dict[str, Any]) -> str:
    """Ollama's TEMPLATE (Go text/template): the same prompt from the last user message.

    Go templates cannot strip whitespace from a value: the app should send the question stripped.
    The trailing `{{ "" }}` keeps the prompt's end away from any trimming of the Modelfile value.
    """
    before, after = _parts(template, ("{{", "}}", '"""'))
    return (
        '{{- $question := "" }}{{- range .Messages }}{{- if eq .Role "user" }}{{- $question = .Content }}'
        "{{- end }}{{- end }}"
        f'{before}{{{{ $question }}}}{after}{{{{ "" }}}}'
    )


def modelfile(model_file: str, template: dict[str, Any], *, stop: list[str], num_predict: int = 320,
              num_ctx: int = 2048) -> str:  # fmt: skip
    """An Ollama Modelfile next to the GGUF: `ollama create <name> -f Modelfile` in the package directory.

    Greedy decoding as in eval and the bench: temperature 0, no repeat penalty (Ollama's default is 1.1).
    """
    if not model_file.endswith(".gguf") or "/" in model_file or '"' in model_file:
        raise ExportError(f"Modelfile: {model_file!r} is not a GGUF file name in the package")
    lines = [
        '# Ollama: `ollama create <name> -f Modelfile` here, then `ollama run <name> "<question>"`.',
        "# The template renders the question into the exact prompt the student was trained on.",
        f"FROM ./{model_file}",
        f'TEMPLATE """{ollama_template(template)}"""',
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_ctx {int(num_ctx)}",
        f"PARAMETER num_predict {int(num_predict)}",
    ]
    for s in stop:
        if '"' in s or "\n" in s or not s:
            raise ExportError(f"Modelfile stop string {s!r}: must be one line without double quotes")
        lines.append(f'PARAMETER stop "{s}"')
    return "\n".join(lines) + "\n"
