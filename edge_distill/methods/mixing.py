"""SIKeD's data rules as pure functions: filter student samples, mix with teacher data, select, measure.

SIKeD (docs/methods.md, "SIKeD" steps 4-5): keep the student's correct samples, one per (question, strategy),
where an L2M sample only counts if it really contains sub-questions; mix with the teacher (LLM) data by a
rule; choose one sample per question by a strategy priority; report the mixing rate
α = |LLM| / (|LLM| + |student|) of the resulting training set. Synthetic FDD samples are written by the
teacher, so they count as LLM data in α.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from edge_distill.types import Sample, Strategy

MixingRule = Literal["adaptive", "all", "standard", "teacher"]
MIXING_RULES: tuple[str, ...] = ("adaptive", "all", "standard", "teacher")
LLM_SOURCES = frozenset({"teacher", "synthetic"})
# On a strategy tie (only possible with mixing="all") the student's own sample wins: it is on-policy.
_SOURCE_RANK = {"student": 0, "teacher": 1, "synthetic": 2}


def _has_subquestions(rationale: str) -> bool:
    from edge_distill.strategies import has_subquestions

    return has_subquestions(rationale)


def filter_correct(
    samples: Iterable[Sample],
    *,
    one_per_strategy: bool = True,
    l2m_check: Callable[[str], bool] | None = None,
) -> list[Sample]:
    """Correct samples; with `one_per_strategy` only the first per (problem_id, strategy).

    An L2M sample whose rationale has no sub-questions is dropped even when its answer is right
    (`l2m_check` defaults to `strategies.has_subquestions`). Input order decides which sample is kept.
    """
    check = l2m_check or _has_subquestions
    seen: set[tuple[str, Strategy]] = set()
    out: list[Sample] = []
    for s in samples:
        if not s.correct:
            continue
        if s.strategy == Strategy.L2M and not check(s.rationale):
            continue
        key = (s.problem_id, s.strategy)
        if one_per_strategy and key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out


def mix(teacher: Sequence[Sample], student: Sequence[Sample], rule: MixingRule) -> list[Sample]:
    """Combine teacher and (filtered) student samples by SIKeD's rule.

    adaptive: all student samples + teacher samples for (question, strategy) pairs the student did not solve;
    all: every teacher and every student sample; standard: student samples only (pure self-training);
    teacher: teacher samples only — not a SIKeD rule but its control: the same round without the student's
    own samples (what self-guidance adds over training again on the teacher data).
    """
    if rule == "teacher":
        return list(teacher)
    if rule == "standard":
        return list(student)
    if rule == "all":
        return list(teacher) + list(student)
    if rule == "adaptive":
        solved = {(s.problem_id, s.strategy) for s in student}
        return list(student) + [t for t in teacher if (t.problem_id, t.strategy) not in solved]
    raise ValueError(f"mixing rule {rule!r}: expected one of {', '.join(MIXING_RULES)}")


def select_per_question(samples: Sequence[Sample], priority: Sequence[Strategy]) -> list[Sample]:
    """One sample per question: the best strategy by `priority` (unlisted strategies last), then
    student before teacher before synthetic, then input order. Output keeps first-appearance order."""
    rank = {s: i for i, s in enumerate(priority)}
    best: dict[str, tuple[tuple[int, int, int], Sample]] = {}
    for i, s in enumerate(samples):
        key = (rank.get(s.strategy, len(rank)), _SOURCE_RANK.get(s.source, len(_SOURCE_RANK)), i)
        cur = best.get(s.problem_id)
        if cur is None or key < cur[0]:
            best[s.problem_id] = (key, s)
    order = {pid: i for i, pid in reversed(list(enumerate(s.problem_id for s in samples)))}
    return [best[pid][1] for pid in sorted(best, key=order.__getitem__)]


def alpha(samples: Iterable[Sample]) -> float | None:
    """Mixing rate α = |LLM| / (|LLM| + |student|); None for an empty set."""
    counts = Counter("llm" if s.source in LLM_SOURCES else "student" for s in samples)
    total = counts["llm"] + counts["student"]
    return counts["llm"] / total if total else None


def composition(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """Counts by source, by strategy and by source×strategy ("teacher/cot")."""
    samples = list(samples)
    return {
        "by_source": dict(Counter(s.source for s in samples)),
        "by_strategy": dict(Counter(s.strategy.value for s in samples)),
        "by_source_strategy": dict(Counter(f"{s.source}/{s.strategy.value}" for s in samples)),
    }


def strategy_mix(samples: Iterable[Sample]) -> dict[str, float]:
    """Share of each strategy the student chose among all its samples (correct or not).

    Samples whose tag could not be parsed carry meta["parsed_strategy"] = None and count as "none"."""
    counts: Counter[str] = Counter()
    for s in samples:
        chosen = s.meta.get("parsed_strategy", s.strategy.value)
        counts[chosen or "none"] += 1
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else {}


def build_iteration_data(
    teacher: Sequence[Sample],
    student_raw: Sequence[Sample],
    *,
    rule: MixingRule,
    priority: Sequence[Strategy],
    one_per_question: bool = True,
    l2m_check: Callable[[str], bool] | None = None,
) -> tuple[list[Sample], dict[str, object]]:
    """The whole SIKeD data step for one iteration: filter → mix → select; returns (train set, record).

    The record's counts add up by construction: sum(by_source) == train_size, and α is computed from
    the same set."""
    student = filter_correct(student_raw, l2m_check=l2m_check)
    mixed = mix(teacher, student, rule)
    train = select_per_question(mixed, priority) if one_per_question else mixed
    record: dict[str, object] = {
        "rule": rule,
        "student_samples": len(student_raw),
        "student_correct": len(student),
        "student_questions_solved": len({s.problem_id for s in student}),
        "mixed": len(mixed),
        "train_size": len(train),
        "alpha": alpha(train),
        "alpha_before_selection": alpha(mixed),
        "composition": composition(train),
        "student_strategy_mix": strategy_mix(student_raw),
    }
    return train, record
