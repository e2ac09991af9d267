"""The one table of export formats: what each format writes, which quant types it takes, and which runtime
checks parity at export time and runs the package in the device bench. Torch-free (and free of every
runtime: the classes are named as "module:attr" and imported only when used), so `device_profiles/`
reads it on a device install.

Adding a format = one `Format` row here plus the module its row names (writer, parity runtime, bench
session); see docs/ARCHITECTURE.md, "A new export format".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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
    name: str  # export/<name>-<quant>/, manifest "format"
    runtime: str  # manifest "runtime"; what the bench opens the package with
    quants: tuple[str, ...]
    lossless: tuple[str, ...]  # quants whose greedy tokens must match torch exactly (parity)
    model_entry: str  # the manifest file that locates the model: a suffix ("*.gguf") or a file name
    model_is_dir: bool  # the runtime opens the entry's directory (ORT GenAI) rather than the file
    weight_suffixes: tuple[str, ...]  # files a decode step reads (the bench's roofline numerator)
    writer: str  # "module:function" (full_model, pkg, work, quant, model, tokenizer, ref, options) -> (file, numbers)
    needs_torch_model: bool  # the writer reads the loaded torch model (else it is freed before writing)
    check_source: str  # "module:function" (config_dir, source) -> None, raises ExportError before any work
    parity_runtime: str  # "module:Class" driven with token ids by exporters.parity.compare
    bench_session: str  # "module:Class" (model_path, threads) with tokenize/timed_generate/generate
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
