"""Errors raised by the exporters. Parity failures carry the numbers that failed."""

from __future__ import annotations

from typing import Any

from edge_distill.errors import EdgeDistillError


class ExportError(EdgeDistillError):
    """An export cannot run: unsupported architecture, missing tokenizer, LoRA base absent, bad quant..."""


class ParityError(ExportError):
    """The exported model disagrees with the torch model beyond tolerance.

    `numbers` holds what was measured (token agreement, perplexities, deltas) so the CLI and reports can
    show them without parsing the message.
    """

    def __init__(self, message: str, numbers: dict[str, Any]):
        super().__init__(f"{message}: {numbers}")
        self.numbers = numbers
