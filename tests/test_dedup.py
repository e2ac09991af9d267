"""Near-duplicate and contamination checks (edge_distill.methods.dedup)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_distill.methods.dedup import check_candidates, jaccard, ngrams, similarity_matrix

EVAL_Q = "Janet has 3 apples and buys 5 more. How many apples does she have now?"
TRAIN_Q = "A baker makes 12 cakes a day for 7 days. How many cakes does he make?"


def test_identical_texts_score_one_and_unrelated_texts_score_low():
    for method in ("token_set", "token_sort", "jaccard"):
        m = similarity_matrix([EVAL_Q, TRAIN_Q], [EVAL_Q, TRAIN_Q], method)
        assert np.allclose(np.diag(m), 1.0)
        assert m[0, 1] < 0.7, method  # shared "how many ... does" words lift token_set


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abc 123", min_size=1, max_size=30), min_size=1, max_size=5))
def test_similarities_are_in_unit_interval_and_symmetric(texts):
    for method in ("token_set", "token_sort", "jaccard"):
        m = similarity_matrix(texts, texts, method)
        assert ((m >= 0) & (m <= 1.0 + 1e-6)).all()
        assert np.allclose(m, m.T, atol=1e-5)


def test_contamination_catches_a_reworded_eval_question_and_says_so():
    candidates = [
        "Janet has 3 apples and buys 5 more apples. How many apples does Janet have now?",
        "A train travels 60 miles per hour for 4 hours, then 30 miles per hour for 2 hours. How far did it go?",
    ]
    v = check_candidates(candidates, eval_questions=[EVAL_Q], contamination_threshold=0.8)
    assert [x.reason for x in v] == ["contaminated", None]
    assert v[0].match == EVAL_Q and v[0].eval_score >= 0.8
    assert v[1].keep and v[1].eval_score < 0.8


def test_near_duplicates_of_train_and_of_each_other_are_dropped_first_kept():
    a = "A shop sells 4 pens for 2 dollars each and 3 books for 5 dollars each. What is the total cost?"
    a2 = "A shop sells 4 pens for 2 dollars each and 3 books for 5 dollars each. What is the total?"
    b = "A baker makes 12 cakes a day for 7 days. How many cakes does he make in total?"
    v = check_candidates([a, a2, b], existing=[TRAIN_Q], dedup_threshold=0.9)
    assert [x.reason for x in v] == [None, "near_duplicate", "near_duplicate"]
    assert v[1].match == a and v[2].match == TRAIN_Q


def test_a_harder_variant_that_extends_its_source_is_not_a_near_duplicate():
    harder = TRAIN_Q.replace(
        "How many", "He sells half of them at 3 dollars each. How much money does he get, and how many"
    )
    assert check_candidates([harder], existing=[TRAIN_Q], dedup_threshold=0.9)[0].keep


def test_thresholds_are_monotone():
    cands = ["Tom has 5 apples and buys 3 more. How many apples now?", TRAIN_Q + " Explain."]
    kept_at = [
        sum(
            v.keep
            for v in check_candidates(
                cands,
                existing=[TRAIN_Q],
                eval_questions=[EVAL_Q],
                dedup_threshold=t,
                contamination_threshold=t,
            )
        )
        for t in (0.3, 0.6, 0.9, 1.0)
    ]
    assert kept_at == sorted(kept_at)


def test_ngrams_and_jaccard_edge_cases():
    assert ngrams("") == frozenset()
    assert ngrams("one two") == frozenset({("one", "two")})
    assert jaccard(frozenset(), frozenset()) == 1.0
