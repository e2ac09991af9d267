"""ONNX Runtime GenAI (onnxruntime-genai): the one place an ONNX package's model is opened.

Who opens one: export-time parity and the export's tokenizer check (`exporters/parity.OrtGenaiRuntime`,
`exporters/api.write_onnx_package`) and the device bench (`device_profiles/runtimes.OrtGenAISession`). Both
drive it through `OrtGenAI.generator`: greedy search (`do_sample=False`) up to a maximum length, optionally
forced to run to it (`min_length`: fixed-length timing).

Torch-free at import; `onnxruntime_genai` is imported inside `OrtGenAI`, so a device install without it still
imports this module (and gets the caller's own "install onnxruntime-genai" error when it opens a model).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


class OrtGenAI:
    """`og.Model` of a package directory (genai_config.json), with `threads` intra-op threads when given (the
    package's own session options otherwise: ORT's default, every core)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        threads: int | None = None,
        on_missing: Callable[[ImportError], Exception] | None = None,
    ):
        try:
            import onnxruntime_genai as og
        except ImportError as e:
            if on_missing is None:
                raise
            raise on_missing(e) from e
        self.og = og
        if threads is None:
            self.model = og.Model(str(model_dir))
        else:
            config = og.Config(str(model_dir))
            session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
            self.model = og.Model(config)

    def tokenizer(self) -> Any:
        """The package's tokenizer as ORT GenAI reads it (tokenizer.json through onnxruntime-extensions)."""
        return self.og.Tokenizer(self.model)

    def generator(self, max_length: int, *, min_length: int | None = None) -> Any:
        """A greedy `og.Generator` that stops at `max_length` tokens (prompt included), or at EOS unless
        `min_length` keeps it going."""
        params = self.og.GeneratorParams(self.model)
        opts: dict[str, object] = {"max_length": max_length, "do_sample": False}
        if min_length is not None:
            opts["min_length"] = min_length
        params.set_search_options(**opts)
        return self.og.Generator(self.model, params)

    def close(self) -> None:
        del self.model
