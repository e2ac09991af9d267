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


SANDBOX_MODES = ("strict", "weak")
DEFAULT_REL_TOL = 1e-4  # the default of `answers.rel_tol`
MAX_REL_TOL = 0.01  # looser than 1 % would call 99 correct for 100: not a comparison any more


@dataclass(frozen=True)
class Judging:
    """How a prediction is judged: the relative tolerance of `answers.answers_match` (config
    `answers.rel_tol`) and the PoT sandbox mode (config `sandbox.mode`; None: $EDGE_DISTILL_SANDBOX_MODE,
    else strict). One value is built from a run's config (`Judging.of(cfg)`) or the CLI's flags and passed
    down to every function that judges: teacher filtering, student sampling, eval and the device bench
    judge alike, and a standalone `eval`/`bench` of a run judges exactly as the run did."""

    rel_tol: float = DEFAULT_REL_TOL
    sandbox_mode: str | None = None

    def __post_init__(self) -> None:
        tol = self.rel_tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol <= MAX_REL_TOL:
            raise ValueError(f"answers.rel_tol must be between 0 and {MAX_REL_TOL}, got {tol!r}")
        if self.sandbox_mode is not None and self.sandbox_mode not in SANDBOX_MODES:
            raise ValueError(
                f"sandbox.mode must be one of {', '.join(SANDBOX_MODES)}, not {self.sandbox_mode!r}"
            )

    @classmethod
    def of(cls, cfg: Any) -> Judging:
        """The judging of a run's config (its `answers` and `sandbox` sections)."""
        return cls(float(cfg.answers.rel_tol), cfg.sandbox.mode)

    def to_dict(self) -> dict[str, Any]:
        return {"rel_tol": self.rel_tol, "sandbox_mode": self.sandbox_mode}


DEFAULT_JUDGING = Judging()  # the config's defaults: rel_tol 1e-4, sandbox mode from the environment/strict
