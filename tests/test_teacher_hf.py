"""transformers teacher on the tiny random Llama: batched generate, stop strings, truncation, cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_distill.errors import TeacherError
from edge_distill.teachers.hf import TransformersTeacher, cut_at_stop
from edge_distill.teachers.live import Sampling


def test_cut_at_stop() -> None:
    assert cut_at_stop("a\nQuestion: b", ("\nQuestion:",)) == ("a", True)
    assert cut_at_stop("abc", ("x", "")) == ("abc", False)
    assert cut_at_stop("1;2|3", ("|", ";")) == ("1", True)


def test_batched_generate_matches_one_by_one_and_is_cached(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = ["Question: one plus one", "Question: a much longer question about apples and pears", "Hi"]
    greedy = Sampling(temperature=0.0, max_tokens=12)
    batched = TransformersTeacher(
        str(tiny_model_dir), batch_size=3, cache=tmp_path / "c.sqlite", progress=False
    )
    out = batched.complete(prompts, 2, greedy)
    assert batched.stats.requests == 1  # one generate() for 3 prompts; greedy asks once per prompt
    single = TransformersTeacher(str(tiny_model_dir), batch_size=1, cache=None, progress=False)
    ref = single.complete(prompts, 1, greedy)
    assert [row[0].text for row in out] == [row[0].text for row in ref]
    assert all(row[0].text == row[1].text for row in out)
    # a random model never emits EOS in 12 tokens: every sample is truncated
    assert all(c.finish_reason == "length" for row in out for c in row)

    again = TransformersTeacher(str(tiny_model_dir), cache=tmp_path / "c.sqlite", progress=False)
    cached = again.complete(prompts, 2, greedy)
    assert again.stats.requests == 0 and again._model is None  # never even loaded
    assert [c.text for row in cached for c in row] == [c.text for row in out for c in row]


def test_sampling_gives_k_samples_and_stop_strings_end_them(tiny_model_dir: Path) -> None:
    t = TransformersTeacher(str(tiny_model_dir), batch_size=4, cache=None, progress=False)
    free = t.complete(["Question: count"], 4, Sampling(temperature=1.0, max_tokens=10, seed=3))[0]
    assert len(free) == 4 and len({c.text for c in free}) > 1
    stop = free[0].text[2:4]  # a stop string that sample 0 contains
    cut = t.complete(["Question: count"], 4, Sampling(temperature=1.0, max_tokens=10, seed=3, stop=(stop,)))[
        0
    ]
    assert all(stop not in c.text for c in cut)
    assert cut[0].finish_reason == "stop" and len(cut[0].text) <= 2 + len(free[0].text)


def test_missing_model_is_a_teacher_error(tmp_path: Path) -> None:
    t = TransformersTeacher(str(tmp_path / "nope"), cache=None, progress=False)
    with pytest.raises(TeacherError, match="cannot load"):
        t.complete(["x"], 1, Sampling(temperature=0.0, max_tokens=2))
