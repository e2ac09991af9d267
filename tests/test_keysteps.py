"""Key-step detection (EDIT step 2): edit-distance flags over token ids."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_distill.objectives.keysteps import key_step_fraction, key_steps, levenshtein_reference

ids = st.lists(st.integers(min_value=0, max_value=6), max_size=25)


@given(ids)
def test_identical_sequences_have_no_key_steps(a):
    ks = key_steps(a, a)
    assert ks.distance == 0 and not any(ks.a_diff) and not any(ks.b_diff)


@settings(max_examples=300)
@given(ids, ids)
def test_distance_matches_reference_dp_and_flags_are_consistent(a, b):
    ks = key_steps(a, b)
    assert ks.distance == levenshtein_reference(a, b)
    assert len(ks.a_diff) == len(a) and len(ks.b_diff) == len(b)
    # every edit touches at most one token per side, and a length change needs that many edits
    assert max(ks.n_a, ks.n_b) <= ks.distance <= ks.n_a + ks.n_b
    assert ks.distance >= abs(len(a) - len(b))


@given(ids, ids, ids)
def test_common_prefix_and_suffix_are_never_key_steps(prefix, mid, suffix):
    a = prefix + mid + suffix
    b = prefix + [99] + mid + suffix  # one inserted token
    ks = key_steps(a, b)
    assert ks.distance == 1 and ks.n_a == 0 and ks.n_b == 1
    assert not any(ks.a_diff[: len(prefix)])


def test_single_substitution_marks_one_token_each_side():
    a = [1, 2, 3, 4, 5, 6]
    b = [1, 2, 9, 4, 5, 6]
    ks = key_steps(a, b)
    assert ks.a_diff == [False, False, True, False, False, False]
    assert ks.b_diff == [False, False, True, False, False, False]
    assert key_step_fraction([ks])["key_step_fraction"] == 2 / 12


def test_fraction_of_nothing_is_zero():
    assert key_step_fraction([])["key_step_fraction"] == 0.0
