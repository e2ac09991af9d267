"""Plain data records that flow between stages. Torch-free, JSON-serializable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Strategy(str, Enum):
    """Reasoning strategies (SIKeD's set): chain-of-thought, least-to-most, program-of-thought."""

    COT = "cot"
    L2M = "l2m"
    POT = "pot"

    def __str__(self) -> str:  # so f"{s}" gives "cot"
        return self.value


@dataclass(frozen=True)
class Problem:
    """One math word problem.

    `answer` is the gold final answer as a normalized number string ("72", "-3", "0.5"), or "" for
    synthetic problems whose answer is not known yet. `solution` is the reference rationale
    (GSM8K's with calculator annotations), `socratic` the sub-question version when available.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    socratic: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        return cls(**d)


@dataclass
class Sample:
    """A rationale for one problem under one strategy, from the teacher or the student.

    `rationale` is the body the student is trained on / produced (without the strategy tag and
    without the final-answer line — see `strategies.format_response`); `raw` is the full text as
    generated. `pred` is the extracted answer (None if none could be extracted), `correct` whether it
    matches the problem's gold answer. `source` is "teacher", "student" or "synthetic".
    """

    problem_id: str
    question: str
    gold: str
    strategy: Strategy
    rationale: str
    raw: str = ""
    pred: str | None = None
    correct: bool = False
    source: str = "teacher"
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["strategy"] = self.strategy.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        d = dict(d)
        d["strategy"] = Strategy(d["strategy"])
        return cls(**d)
