"""The one table of export formats: what each format writes, which quant types it takes, and which runtime
checks parity at export time and runs the package in the device bench. Torch-free (and free of every
runtime: the classes are named as "module:attr" and imported only when used), so `device_profiles/`
reads it on a device install.

Adding a format = one `Format` row here plus the module its row names (writer, parity runtime, bench
session, model-card text, optional package checks and writer options); no code outside this table compares a
format's name. tests/test_format_table.py adds a fake row and exports, verifies, documents and benches it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters.errors import ExportError
from exporters.executorch_pte import EXECUTORCH_QUANTS
from exporters.onnx_export import ONNX_QUANTS
from exporters.quantize import GGUF_FLOATS, GGUF_QUANTS

MANIFEST = "manifest.json"
PROMPT_TEMPLATE = "prompt_template.json"
SIGNATURE = "manifest.sig"  # detached ed25519 signature of manifest.json (exporters/signing.py)


@dataclass(frozen=True)
class Format:
    """One export format, whole: everything outside this table reads a format through its row."""

    name: str  # export/<name>-<quant>/, manifest "format"
    runtime: str  # manifest "runtime"; what the bench opens the package with
    quants: tuple[str, ...]
    lossless: tuple[str, ...]  # quants whose greedy tokens must match torch exactly (parity)
    model_entry: str  # the manifest file that locates the model: a suffix ("*.gguf") or a file name
    model_is_dir: bool  # the runtime opens the entry's directory (ORT GenAI) rather than the file
    weight_suffixes: tuple[str, ...]  # files a decode step reads (the bench's roofline numerator)
    writer: str  # "module:function" (full_model, pkg, work, quant, model, tokenizer, ref, options) -> (file, numbers)
    needs_torch_model: bool  # the writer reads the loaded torch model (else it is freed before writing)
    check_source: str  # "module:function" (config_dir) -> None, raises ExportError before any work
    parity_runtime: str  # "module:Class" driven with token ids by exporters.parity.compare
    bench_session: str  # "module:Class" (model_path, threads) with tokenize/timed_generate/generate
    runtime_modules: tuple[str, ...]  # Python modules the bench session imports (the remote preflight)
    runtime_dists: tuple[str, ...]  # their distributions, whose versions a remote bench reports
    card_run: str  # "module:function" (model_file) -> the model card's "how to run it" text
    chat_frontends: str  # the model card: where chat front ends find the package's chat template
    essential: tuple[str, ...] = (PROMPT_TEMPLATE,)  # files a package must list (exporters.verify)
    check_package: str = ""  # "module:function" (root, files) -> [problem], verify's format checks
    options: str = ""  # "module:Class" of the writer's own options (WriteOptions.format); "" = none
    ollama: bool = False  # the package carries an Ollama Modelfile (the model is one GGUF file)
    auto_quants: tuple[
        str, ...
    ] = ()  # `quant: auto` candidates (exporters.api.choose_quant); empty = no auto

    def check_quant(self, quant: str) -> None:
        if quant == "auto" and self.auto_quants:
            return
        if quant not in self.quants:
            auto = ["auto"] if self.auto_quants else []
            raise ExportError(f"{self.name} quant {quant!r}: choose one of {list(self.quants) + auto}")

    def model_file(self, files: list[str]) -> str | None:
        """The manifest entry of the model, or None when there is not exactly one."""
        if self.model_entry.startswith("*"):
            found = [n for n in files if n.endswith(self.model_entry[1:])]
        else:
            found = [n for n in files if n == self.model_entry or n.endswith("/" + self.model_entry)]
        return found[0] if len(found) == 1 else None

    def load(self, field: str) -> Any:
        """The callable a "module:attr" field names, imported now."""
        module, _, attr = str(getattr(self, field)).partition(":")
        return getattr(importlib.import_module(module), attr)

    def writer_options(self, given: Mapping[str, Any] | None) -> Any:
        """The writer's own options (`options`' type) from `given` (None: the defaults); a key the type does
        not have is an error naming the ones it has."""
        given = dict(given or {})
        if not self.options:
            if given:
                raise ExportError(f"{self.name} export takes no format options (given: {sorted(given)})")
            return None
        cls = self.load("options")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ExportError(
                f"{self.name} export options {unknown}: not options of {self.name}; known: {known}"
            )
        return cls(**given)

    def card(self, model_file: str) -> str:
        """The model card's "how to run it" text for a package of this format."""
        return str(self.load("card_run")(model_file))

    def package_problems(self, root: Path, files: Mapping[str, Any]) -> list[str]:
        """What verify finds wrong with a package of this format, beyond the hashes: essential files not
        listed, not exactly one top-level model file (for a suffix entry), and the row's own checks."""
        problems = [f"{f}: missing from the manifest ({self.name} essential file)" for f in self.essential
                    if f not in files]  # fmt: skip
        if self.model_entry.startswith("*"):
            suffix = self.model_entry[1:]
            found = [n for n in files if n.endswith(suffix)]
            if len(found) != 1 or "/" in found[0]:
                problems.append(
                    f"expected exactly one top-level {suffix} file in the manifest, found {found[:5]}"
                )
        if self.check_package:
            problems += self.load("check_package")(root, files)
        return problems


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            name="gguf",
            runtime="llama.cpp",
            quants=(*GGUF_FLOATS, *GGUF_QUANTS),
            lossless=GGUF_FLOATS,
            model_entry="*.gguf",
            model_is_dir=False,
            weight_suffixes=(".gguf",),
            writer="exporters.api:write_gguf_package",
            needs_torch_model=True,
            check_source="exporters.gguf_writer:check_architecture",
            parity_runtime="exporters.parity:LlamaCppRuntime",
            bench_session="device_profiles.runtimes:LlamaCppSession",
            runtime_modules=("llama_cpp",),
            runtime_dists=("llama-cpp-python",),
            card_run="exporters.package:llamacpp_howto",
            chat_frontends="the GGUF's `tokenizer.chat_template`, read by `llama-cli -cnv`, `llama-server --jinja`, "
            "LM Studio and llama-cpp-python's `create_chat_completion`; also `chat_template.jinja` for transformers",
            ollama=True,
            auto_quants=("q4_k_m", "q5_k_m", "q6_k", "q8_0"),
        ),
        Format(
            name="onnx",
            runtime="onnxruntime-genai",
            quants=ONNX_QUANTS,
            lossless=("fp32",),
            model_entry="genai_config.json",
            model_is_dir=True,
            weight_suffixes=(".onnx", ".onnx.data", ".data"),
            writer="exporters.api:write_onnx_package",
            needs_torch_model=False,
            check_source="exporters.onnx_export:check_builder_compatible",
            parity_runtime="exporters.parity:OrtGenaiRuntime",
            bench_session="device_profiles.runtimes:OrtGenAISession",
            runtime_modules=("onnxruntime_genai",),
            runtime_dists=("onnxruntime-genai", "onnxruntime"),
            card_run="exporters.package:ortgenai_howto",
            chat_frontends="`chat_template.jinja` and `tokenizer_config.json`, read by ORT GenAI's "
            "`Tokenizer.apply_chat_template` and transformers' `apply_chat_template`",
            essential=(
                "model.onnx",
                "genai_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                PROMPT_TEMPLATE,
            ),
            check_package="exporters.verify:genai_config_problems",
            options="exporters.api:OnnxOptions",
            auto_quants=("int4", "int8"),
        ),
        Format(
            name="executorch",
            runtime="executorch",
            quants=EXECUTORCH_QUANTS,
            lossless=("fp32",),
            model_entry="model.pte",
            model_is_dir=False,
            weight_suffixes=(".pte",),
            writer="exporters.api:write_pte_package",
            needs_torch_model=False,
            check_source="exporters.executorch_pte:check_source",
            parity_runtime="exporters.parity:ExecuTorchRuntime",
            bench_session="device_profiles.runtimes:ExecuTorchSession",
            runtime_modules=("executorch",),
            runtime_dists=("executorch",),
            card_run="exporters.package:executorch_howto",
            chat_frontends="`chat_template.jinja` and `tokenizer_config.json`, for transformers' "
            "`apply_chat_template`; ExecuTorch's LLM runners take the prompt text itself, so send them the "
            "completion text above",
            essential=("model.pte", "tokenizer.json", "tokenizer_config.json", PROMPT_TEMPLATE),
            auto_quants=("8da4w", "int8"),
        ),
    )
}


def get_format(name: str) -> Format:
    """The row of `name`; an unknown format is an error that lists the known ones (never a silent default)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportError(f"export format {name!r}: choose one of {list(FORMATS)}") from None


def format_for_runtime(runtime: str) -> Format:
    for f in FORMATS.values():
        if f.runtime == runtime:
            return f
    raise ExportError(f"runtime {runtime!r}: choose one of {[f.runtime for f in FORMATS.values()]}")
