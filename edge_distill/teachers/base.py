"""The teacher contract: problems in, k completions per problem out, for one strategy at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from edge_distill.types import Problem, Strategy

__all__ = ["FINISH_REASONS", "Completion", "Teacher"]

# Backends map their own reasons onto these; teach() counts "length" as truncated and "error" as failed.
FINISH_REASONS = ("stop", "length", "error")


@dataclass
class Completion:
    """One teacher output. `finish_reason` "length" means truncated; "error" means no text (see `error`).

    `cached` is True when the text came from the teacher cache rather than a fresh call. `topk` is the
    teacher's top-k log-probs per generated token (`teachers.topk.TopK`) when they were asked for
    (offline logit distillation, `train.kd`).
    """

    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    error: str | None = None
    cached: bool = False
    topk: Any = None

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(
                f"Completion.finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}"
            )


@runtime_checkable
class Teacher(Protocol):
    """Anything that writes rationales. `generate` returns, per problem, `k` completions (never fewer:
    a failed call is a Completion with finish_reason="error", so counting failures stays honest)."""

    name: str

    def generate(self, problems: list[Problem], strategy: Strategy, k: int) -> list[list[Completion]]: ...
