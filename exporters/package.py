"""Export package: model files + tokenizer + prompt template + manifest.json (sha256 of every file) + model card.

Checking a package against its manifest is exporters/verify.py."""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_distill.io import ArtifactKind, atomic_path
from exporters import chat_template
from exporters.errors import ExportError
from exporters.formats import MANIFEST, SIGNATURE, Format, get_format

logger = logging.getLogger(__name__)


def is_package(path: Path) -> bool:
    """Whether `path` is an edge-distill export package: its manifest.json is a regular file (not a
    link) holding a JSON object with the format and files an exporter writes."""
    manifest = path / MANIFEST
    if manifest.is_symlink() or not manifest.is_file() or manifest.stat().st_size > 2**20:
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("files"), dict) and "format" in data


# `export --out DIR` replaces DIR only if it is a package, and only with --overwrite (a run's export stage
# passes overwrite=True for its own export/<format>-<quant>/).
PACKAGE_KIND = ArtifactKind("package", is_package, needs_consent=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_prompt_template(decoding: dict[str, Any] | None = None, strategy: str = "auto") -> dict[str, Any]:
    """The strategy-tag prompt/response formats the student was trained with, and how to decode it.

    `decoding` is the objective's description (`edge_distill.decoding`; CasCoD: two stages); the device
    bench decodes the package from it. Default: a single pass. `strategy` is the run's `eval.strategy`:
    "auto" lets the student pick its strategy, cot/l2m/pot force the tag after the prompt. `chat_template`
    is the Jinja template every chat front end applies (exporters/chat_template.py): it renders a user
    message into exactly `student_prompt` (+ the forced tag).
    """
    from edge_distill import strategies
    from edge_distill.decoding import SINGLE_PASS

    response = {s: strategies.format_response(s, "{rationale}", "{answer}") for s in ("cot", "l2m")}
    response["pot"] = strategies.format_response("pot", "{program}", None)
    template = {
        "student_prompt": strategies.STUDENT_PROMPT,
        "forced_strategy_suffix": strategies.FORCED_TAG,
        "strategy": strategy,
        "strategies": ["cot", "l2m", "pot"],
        "response": response,
        "answer_marker": strategies.ANSWER_MARKER,
        "stop": "eos",
        "decoding": dict(decoding or SINGLE_PASS),
    }
    template["chat_template"] = chat_template.jinja_template(template)  # checks `strategy` too
    return template


def write_prompt_files(
    pkg: Path, template: dict[str, Any], model_file: str, eos_token: str | None, fmt: Format
) -> None:
    """The chat template where HF/ORT GenAI/LM Studio look for it (`chat_template.jinja` and
    `tokenizer_config.json`), and for a format whose row says `ollama` (GGUF) an Ollama `Modelfile`. The GGUF
    itself carries the same template in `tokenizer.chat_template` (exporters/gguf_writer.py)."""
    jinja = template.get("chat_template") or chat_template.jinja_template(template)
    (pkg / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    cfg_path = pkg / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["chat_template"] = jinja
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if fmt.ollama:
        # "Question:" starts the next prompt block: parse_response cuts there too
        stop = [s for s in (eos_token, "Question:") if s]
        (pkg / chat_template.MODELFILE).write_text(
            chat_template.modelfile(model_file, template, stop=stop), encoding="utf-8"
        )


def _files(pkg: Path) -> list[Path]:
    return sorted(
        p
        for p in pkg.rglob("*")
        if p.is_file() and p.relative_to(pkg).as_posix() not in (MANIFEST, SIGNATURE)
    )


def write_manifest(pkg: Path, *, fmt: str, quant: str, source_run: str | None, config_digest: str | None,
                   source_accuracy: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Hash every file in `pkg` and write manifest.json (last, so it covers the model card too)."""
    files = {
        p.relative_to(pkg).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in _files(pkg)
    }
    manifest = {
        "format": fmt,
        "quant": quant,
        "files": files,
        "source_run": source_run,
        "config_digest": config_digest,
        "source_accuracy": source_accuracy,
        "runtime": get_format(fmt).runtime,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    (pkg / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _strategy_text(forced: str | None) -> str:
    """The model card's "Strategy." paragraph for the package's `strategy`."""
    if forced is None:
        return (
            "This package lets the student choose (`strategy: auto`): it answers `[cot]` or `[l2m]` with a last "
            "line `The answer is N.`, or `[pot]` with a Python program that sets `answer`. **A `[pot]` answer "
            "is not a number until the program runs**, so an app without a Python interpreter (a phone app, "
            "say) should use a package exported with `eval.strategy=cot` (or `edge-distill export --strategy "
            "cot`): its template forces `[cot]:` and every answer ends with `The answer is N.`"
        )
    if forced == "pot":
        return (
            "This package forces `[pot]`: every answer is a Python program that sets `answer`; the number "
            "exists only after the program runs (see below). Apps without Python: export with "
            "`eval.strategy=cot` instead."
        )
    return (
        f"This package forces `[{forced}]` (exported with `eval.strategy={forced}`): the prompt ends with "
        f"the tag, the student writes the rationale and a last line `The answer is N.` No Python needed."
    )


POT_TEXT = (
    "the program is model output, so hostile: never `exec` it in the app's process. edge-distill runs it "
    "with `edge_distill.sandbox.run_programs([program])` (a separate interpreter under seccomp/Landlock/"
    "rlimits, no network, 2 s CPU) and reads the variable `answer`; an app needs an equivalent isolated "
    "Python (on a phone: an embedded interpreter in its own sandboxed process) or a cot/l2m package."
)
OLLAMA_TEXT = (
    "\n- **Ollama**: in this directory `ollama create my-solver -f Modelfile` (the same template in Go "
    'syntax, greedy parameters, stop strings), then `ollama run my-solver "<question>"`. Go templates '
    "cannot strip blanks: send the question trimmed."
)


def how_to_prompt(template: dict[str, Any], fmt: Format) -> str:
    """The model card's "How to prompt it" section: the exact prompt, chat front ends, strategies, PoT."""
    example = chat_template.render(template, "<question>")
    two_stage = int((template.get("decoding") or {}).get("stages", 1)) == 2
    strategy = _strategy_text(chat_template.forced_strategy(template.get("strategy")))
    stages = (
        "\n\nThis student decodes in **two stages** (`decoding` in `prompt_template.json`): after the rationale, "
        f"append `{template.get('answer_marker', 'The answer is')}` and generate a few more tokens. A chat front "
        "end runs one stage: the answer line may be missing; `edge_distill.decoding.staged_decode` does both."
        if two_stage
        else ""
    )
    ollama = OLLAMA_TEXT if fmt.ollama else ""
    return f"""## How to prompt it
The student learned one plain-text prompt, no chat roles. For the question `<question>` it is exactly:

```text
{example}
```
(the question stripped of surrounding blanks; the last line ends with no trailing space — the
student's response starts with its own space, ` [cot]: …`, so the prompt must not end in one). Decode greedily
(temperature 0, no repeat penalty) and stop at EOS; the answer is the text after the prompt. The bench also
stops as soon as the answer is complete (`stop_at_answer` in `decoding`; `edge_distill.stopping.AnswerStop`:
the `The answer is N.` line has ended, or a program is followed by a line that cannot continue it); an app
can do the same to save the tokens a student spends after its answer.

- **Completion APIs**: send that text — `student_prompt` in `prompt_template.json` with the question
  (+ `forced_strategy_suffix` when `strategy` is not `auto`).
- **Chat front ends**: the package's chat template ({fmt.chat_frontends}) renders a user message into exactly this
  prompt. Send the question alone as the (last) user message: system messages and earlier turns are
  ignored; the student is a single-turn solver.{ollama}

**Strategy.** {strategy}

**Reading the answer.** `[cot]`/`[l2m]`: the number on the `The answer is N.` line
(`edge_distill.strategies.parse_response`). `[pot]`: {POT_TEXT}{stages}
"""


def model_card(manifest: dict[str, Any], model_file: str, template: dict[str, Any] | None = None) -> str:
    """README.md of the package: what it is, how to prompt and run it (the format row's text), parity numbers."""
    fmt, quant = get_format(manifest["format"]), manifest["quant"]
    template = template or default_prompt_template()
    acc = manifest.get("source_accuracy") or {}
    acc_line = f"{acc.get('dev')} on {acc.get('n')} dev problems" if acc else "not recorded"
    parity = manifest.get("parity") or {}
    par = "\n".join(f"- {k}: {v}" for k, v in parity.items()) or "- not run"
    quant_section = quantization_section(manifest)
    files = "\n".join(
        f"| {n} | {_fmt_bytes(m['bytes'])} | `{m['sha256'][:16]}…` |" for n, m in manifest["files"].items()
    )
    return f"""# edge-distill student — {fmt.name} {quant}

Runtime: {manifest["runtime"]}. Source run: {manifest.get("source_run") or "n/a"};
config digest: {manifest.get("config_digest") or "n/a"}. Accuracy of the source model: {acc_line}
(measured with torch before export; quantized accuracy is measured by the device benchmark).

{how_to_prompt(template, fmt)}
{fmt.card(model_file)}

{quant_section}
## Parity with the torch model
{par}

## Files (sha256 in manifest.json; check with `edge-distill verify <this dir>`)
| file | size | sha256 |
|---|---|---|
{files}
"""


def llamacpp_howto(model_file: str) -> str:
    """The gguf row's "how to run it": llama-cpp-python with the GGUF's own chat template."""
    return (f"```python\nfrom llama_cpp import Llama\nllm = Llama('{model_file}', n_ctx=2048)\n"
            "# the GGUF's chat template renders the question into the training prompt\n"
            "out = llm.create_chat_completion([{'role': 'user', 'content': q}], temperature=0, max_tokens=320)\n"
            "print(out['choices'][0]['message']['content'])\n```")  # fmt: skip


def ortgenai_howto(model_file: str) -> str:
    """The onnx row's "how to run it": ORT GenAI on the package directory, the prompt from prompt_template.json."""
    del model_file  # ORT GenAI opens the directory (genai_config.json)
    return ("```python\nimport json\nimport onnxruntime_genai as og\nmodel = og.Model('.')\ntok = og.Tokenizer(model)\n"
            "tpl = json.load(open('prompt_template.json'))\n"
            "prompt = tpl['student_prompt'].format(question=q.strip())\n"
            "if tpl.get('strategy', 'auto') != 'auto': prompt += tpl['forced_strategy_suffix'].format(strategy=tpl['strategy'])\n"
            "params = og.GeneratorParams(model); params.set_search_options(do_sample=False, max_length=512)\n"
            "gen = og.Generator(model, params); gen.append_tokens(tok.encode(prompt))\n"
            "while not gen.is_done(): gen.generate_next_token()\nprint(tok.decode(gen.get_sequence(0)))\n```")  # fmt: skip


def executorch_howto(model_file: str) -> str:
    """How to run a .pte package: ExecuTorch's Android and iOS LLM runners, and its Python runtime."""
    return f"""`{model_file}` is an ExecuTorch program (XNNPACK delegate, CPU) with a static KV cache: method
`forward(tokens: int64[1, T], input_pos: int64[1]) -> logits: float32[1, T, vocab]` (prefill T prompt tokens at
position 0, then one token per step at its position) and the metadata methods ExecuTorch's LLM runners read
(`get_max_seq_len` = the cache length, `get_vocab_size`, `use_kv_cache`, `enable_dynamic_shape`, `get_eos_ids`).
The tokenizer is `tokenizer.json` (Hugging Face format, which the runners' `HFTokenizer` loads; an `NFC` normalizer
step of the source tokenizer, as Qwen's, is left out of it, because that `HFTokenizer` strips accents there: pass it
NFC text, as keyboards produce). Decode greedily (temperature 0) and add no BOS token: the student was trained
without one.

- **Android**: ExecuTorch's `LlmModule` (Kotlin/Java, `org.pytorch.executorch.extension.llm`, in the
  `executorch-android` AAR): `LlmModule("{model_file}", "tokenizer.json", 0f)`, then `generate(prompt, seqLen,
  callback)` with the prompt text above; the callback receives the text piece by piece. The ExecuTorch LlamaDemo
  Android app loads the same two files (`adb push {model_file} tokenizer.json /data/local/tmp/llama/`).
- **iOS**: ExecuTorch's `TextRunner` (the `ExecuTorchLLM` Swift package): `TextRunner(modelPath:tokenizerPath:)`
  with the two files bundled, then `generate(prompt, config)` with temperature 0; the etLLM demo app loads the
  same two files.
- **Command line** (ExecuTorch built from source): `llama_main --model_path={model_file}
  --tokenizer_path=tokenizer.json --temperature=0 --prompt="<the prompt above>"`.
- **Python** (`pip install executorch`; edge-distill's bench runs it this way):

```python
import executorch.kernels.quantized  # the int8 embedding kernel int8/8da4w programs call
import torch
from executorch.runtime import Runtime
from tokenizers import Tokenizer
tok = Tokenizer.from_file("tokenizer.json")
program = Runtime.get().load_program("{model_file}")
forward, eos = program.load_method("forward"), set(program.load_method("get_eos_ids").execute([]))
ids = tok.encode(prompt).ids
logits = forward.execute([torch.tensor([ids]), torch.tensor([0])])[0]
out, pos = [], len(ids)
while len(out) < 320:
    nxt = int(logits[0, -1].argmax())
    if nxt in eos: break
    out.append(nxt)
    logits = forward.execute([torch.tensor([[nxt]]), torch.tensor([pos])])[0]
    pos += 1
print(tok.decode(out))
```

The app instructions follow ExecuTorch 1.5's runner APIs. edge-distill checks this package in ExecuTorch's Python
runtime (the same program, XNNPACK kernels and KV cache) and its tokenizer against the runners' C++ `HFTokenizer`;
it has not run it on a phone."""


def quantization_section(manifest: dict[str, Any]) -> str:
    """The model card's "Quantization" section: what the weights really are (read back from the model file),
    how faithful they are to the source model, and, for `quant: auto`, every candidate measured."""
    q = manifest.get("quantization")
    if not q:
        return ""
    head, embd = q["lm_head"], q["token_embedding"]
    lines = [
        "## Quantization",
        f"Requested `{q.get('requested', manifest['quant'])}`, packaged `{manifest['quant']}`: "
        f"**{q['bits_per_weight']:.2f} bits per weight** on average ({q['params']:,} parameters, "
        f"{_fmt_bytes(q['weight_bytes'])} of weights, block scales included), read back from the model file.",
        f"LM head: `{head['tensor']}` {head['type']}"
        + (" (tied to the token embedding)" if head["tied_to_embedding"] else "")
        + f"; token embedding: {embd['type'] or 'n/a'}.",
        "",
        "| tensor type | share of parameters | bits/weight |",
        "|---|---|---|",
        *(f"| {t} | {100 * m['share']:.1f} % | {m['bpw']:.2f} |" for t, m in q["type_mix"].items()),
    ]
    fid = manifest.get("fidelity") or {}
    if fid.get("top1_agreement") is not None:
        lines += [
            "",
            f"Fidelity to the source model, teacher-forced over {fid['fidelity_tokens']} held-out tokens (the "
            f"last GSM8K train-sample rows, never test): top-1 agreement {100 * fid['top1_agreement']:.1f} %, "
            f"NLL ratio {fid['nll_ratio']:.4f} (export / source).",
        ]
    auto = manifest.get("quant_auto")
    if auto:
        t = auto["thresholds"]
        lines += [
            "",
            f"`quant: auto` chose `{auto['chosen']}`: the smallest candidate with top-1 agreement >= "
            f"{t['min_top1_agreement']} and NLL ratio <= {t['max_nll_ratio']}.",
            "",
            "| candidate | bits/weight | top-1 agreement | NLL ratio | meets |",
            "|---|---|---|---|---|",
            *(
                f"| {r['quant']} | {r['bits_per_weight']} | {r['top1_agreement']} | {r['nll_ratio']} | "
                f"{'yes' if r['meets_threshold'] else 'no'} |"
                for r in auto["candidates"]
            ),
        ]
    if q.get("fallback"):
        fb = q["fallback"]
        lines += [
            "",
            f"llama.cpp could not give {fb['tensors']} of {fb['of']} tensors the requested type (their rows are "
            "not a multiple of the k-quant block of 256) and used a fallback type: hence the mix above.",
        ]
    if q.get("log"):
        lines += [
            "",
            f"The runtime's own log of the export (quantizer warnings included) is in `{q['log']}`.",
        ]
    return "\n".join(lines) + "\n"


def write_archive(pkg: Path) -> Path:
    """`<pkg>.tar.gz` next to the package, written atomically."""
    archive = pkg.with_name(pkg.name + ".tar.gz")
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(pkg, arcname=pkg.name)
    return archive


def require_empty_or_absent(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path}: exists and is not a directory")
