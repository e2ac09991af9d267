"""Properties of SIKeD's filter/mix/select/alpha (edge_distill.methods.mixing)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_distill.methods.mixing import (
    alpha,
    build_iteration_data,
    filter_correct,
    mix,
    select_per_question,
    strategy_mix,
)
from edge_distill.types import Sample, Strategy

PRIORITY = [Strategy.COT, Strategy.POT, Strategy.L2M]


def has_sub(rationale: str) -> bool:
    return "?" in rationale


def mk(pid: str, strategy: Strategy, source: str, correct: bool = True, rationale: str = "Q? A.") -> Sample:
    return Sample(pid, f"question {pid}", "1", strategy, rationale, correct=correct, source=source)


sample_st = st.builds(
    mk,
    st.sampled_from(["p0", "p1", "p2", "p3", "p4"]),
    st.sampled_from(list(Strategy)),
    st.sampled_from(["student"]),
    st.booleans(),
    st.sampled_from(["How many? 3.", "no sub questions here"]),
)
teacher_st = st.lists(
    st.builds(
        mk,
        st.sampled_from(["p0", "p1", "p2", "p3", "p4"]),
        st.sampled_from(list(Strategy)),
        st.just("teacher"),
    ),
    max_size=15,
)


def test_filter_keeps_one_correct_per_question_strategy_and_requires_l2m_subquestions():
    raw = [
        mk("a", Strategy.COT, "student", correct=False),
        mk("a", Strategy.COT, "student", rationale="first"),
        mk("a", Strategy.COT, "student", rationale="second"),
        mk("a", Strategy.L2M, "student", rationale="no sub-questions"),
        mk("a", Strategy.L2M, "student", rationale="How many? 2."),
    ]
    kept = filter_correct(raw, l2m_check=has_sub)
    assert [(s.strategy, s.rationale) for s in kept] == [
        (Strategy.COT, "first"),
        (Strategy.L2M, "How many? 2."),
    ]


@settings(max_examples=200, deadline=None)
@given(teacher=teacher_st, student_raw=st.lists(sample_st, max_size=25))
def test_mixing_rules_properties(teacher, student_raw):
    student = filter_correct(student_raw, l2m_check=has_sub)
    assert all(s.correct for s in student)
    assert len({(s.problem_id, s.strategy) for s in student}) == len(student)
    solved = {(s.problem_id, s.strategy) for s in student}

    adaptive = mix(teacher, student, "adaptive")
    assert [s for s in adaptive if s.source == "student"] == student
    assert all((s.problem_id, s.strategy) not in solved for s in adaptive if s.source == "teacher")
    assert len(adaptive) == len(student) + sum((t.problem_id, t.strategy) not in solved for t in teacher)
    assert mix(teacher, student, "all") == list(teacher) + student
    assert mix(teacher, student, "standard") == student
    assert mix(teacher, student, "teacher") == list(teacher)  # the control: no student data

    for rule in ("adaptive", "all", "standard", "teacher"):
        train, rec = build_iteration_data(
            teacher, student_raw, rule=rule, priority=PRIORITY, l2m_check=has_sub
        )
        # one per question, only questions that had data, counts add up, alpha matches the counts
        mixed = mix(teacher, student, rule)
        assert len({s.problem_id for s in train}) == len(train) == len({s.problem_id for s in mixed})
        by_source = rec["composition"]["by_source"]
        assert sum(by_source.values()) == rec["train_size"] == len(train)
        assert sum(rec["composition"]["by_strategy"].values()) == len(train)
        n_llm = by_source.get("teacher", 0)
        expected = n_llm / len(train) if train else None
        assert rec["alpha"] == expected
        if rule == "standard":
            assert rec["alpha"] in (0.0, None)
        if rule == "teacher":
            assert rec["alpha"] in (1.0, None) and rec["student_correct"] == len(student)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(
        st.one_of(sample_st, teacher_st.map(lambda ts: ts[0] if ts else mk("p9", Strategy.L2M, "teacher"))),
        max_size=30,
    )
)
def test_select_picks_highest_priority_strategy(samples):
    chosen = select_per_question(samples, PRIORITY)
    rank = {s: i for i, s in enumerate(PRIORITY)}
    for c in chosen:
        options = [s for s in samples if s.problem_id == c.problem_id]
        assert rank[c.strategy] == min(rank[s.strategy] for s in options)
    # first-appearance order of questions is kept
    order = list(dict.fromkeys(s.problem_id for s in samples))
    assert [c.problem_id for c in chosen] == order


def test_select_prefers_student_on_a_strategy_tie_and_unlisted_strategies_last():
    samples = [
        mk("q", Strategy.COT, "teacher"),
        mk("q", Strategy.COT, "student"),
        mk("r", Strategy.L2M, "teacher"),
    ]
    samples.append(mk("r", Strategy.POT, "student"))
    chosen = select_per_question(samples, [Strategy.COT, Strategy.POT])
    assert [(c.problem_id, c.source, c.strategy) for c in chosen] == [
        ("q", "student", Strategy.COT),
        ("r", "student", Strategy.POT),
    ]


def test_alpha_counts_synthetic_as_llm_data():
    s = [
        mk("a", Strategy.COT, "teacher"),
        mk("b", Strategy.COT, "synthetic"),
        mk("c", Strategy.COT, "student"),
    ]
    assert alpha(s) == pytest.approx(2 / 3)
    assert alpha([]) is None


def test_strategy_mix_counts_unparsed_choices():
    s = [mk("a", Strategy.COT, "student"), mk("b", Strategy.POT, "student"), mk("c", Strategy.COT, "student")]
    s[2].meta["parsed_strategy"] = None
    assert strategy_mix(s) == {"cot": 1 / 3, "none": 1 / 3, "pot": 1 / 3}


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="adaptive"):
        mix([], [], "bogus")  # type: ignore[arg-type]
