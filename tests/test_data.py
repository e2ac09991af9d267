"""Problem loading: builtin sample, GSM8K files with socratic attach, generic JSONL/JSON, errors, dev split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_distill.data import load_problems, split_dev
from edge_distill.errors import DataError
from edge_distill.types import Problem


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_builtin_sample_train_and_test() -> None:
    train = load_problems("builtin:gsm8k-sample")
    assert len(train) == 1000 and train.skipped == 0 and train.layout == "gsm8k"
    assert train[12].id == "gsm8k-train-00012"
    first = train[0]
    assert first.question.startswith("Natalia sold clips")
    assert first.answer == "72"
    assert first.solution is not None and "<<48/2=24>>" in first.solution
    assert first.socratic is not None and first.socratic.startswith(
        "How many clips did Natalia sell in May? **"
    )
    assert train.socratic_attached == 1000
    test = load_problems("builtin:gsm8k-sample", split="test")
    assert len(test) == 250 and test[0].id == "gsm8k-test-00000"
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.id for p in train}) == 1000


def test_builtin_errors() -> None:
    with pytest.raises(DataError, match="available: builtin:gsm8k-sample"):
        load_problems("builtin:nope")
    with pytest.raises(DataError, match="splits train, test"):
        load_problems("builtin:gsm8k-sample", split="dev")
    with pytest.raises(DataError, match="not found"):
        load_problems("/no/such/file.jsonl")
    with pytest.raises(DataError, match="data.format"):
        load_problems("builtin:gsm8k-sample", fmt="tsv")


def test_gsm8k_file_with_socratic_sibling(tmp_path: Path) -> None:
    _write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"question": "Q one?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"},
            {"question": "Q two?", "answer": "So\n#### 1,000"},
        ],
    )
    _write_jsonl(
        tmp_path / "mine_socratic.jsonl", [{"question": "Q two?", "answer": "How many? ** 1000\n#### 1,000"}]
    )
    problems = load_problems(tmp_path / "mine.jsonl")
    assert [p.answer for p in problems] == ["2", "1000"]
    assert problems[0].socratic is None and problems[1].socratic.startswith("How many?")
    assert problems.socratic_attached == 1
    assert all(p.id.startswith("q-") for p in problems)
    # the same question gets the same id wherever it is in the file
    _write_jsonl(tmp_path / "other.jsonl", [{"question": "Q two?", "answer": "#### 1000"}])
    assert load_problems(tmp_path / "other.jsonl")[0].id == problems[1].id
    assert load_problems(tmp_path / "mine.jsonl", socratic=None)[1].socratic is None


def test_generic_jsonl_fields_and_answer_forms(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"Body": "A?", "Answer": 3},
            {"Body": "B?", "Answer": "4.50"},
            {"Body": "C?", "Answer": "work\n#### 12"},
            {"Body": "D?", "Answer": "$1,200", "id": "my-7", "source": "svamp"},
            "",  # blank lines are not rows
        ],
    )
    problems = load_problems(path, fmt="jsonl", question_field="Body", answer_field="Answer")
    assert [p.answer for p in problems] == ["3", "4.5", "12", "1200"]
    assert problems[2].solution == "work\n#### 12" and problems[0].solution is None
    assert problems[3].id == "my-7" and problems[3].source == "svamp" and problems[0].source == "d"


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"question": "A?", "answer": "7"}, {"question": "B?", "answer": 8}]))
    assert [p.answer for p in load_problems(path, fmt="jsonl")] == ["7", "8"]
    path.write_text(json.dumps({"question": "A?"}))
    with pytest.raises(DataError, match="array"):
        load_problems(path, fmt="jsonl")


@pytest.mark.parametrize(
    ("bad_line", "what"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"answer": "#### 3"}', "missing field 'question'"),
        ('{"question": "Q?"}', "missing field 'answer'"),
        ('{"question": "", "answer": "#### 3"}', "non-empty string"),
        ('{"question": "Q?", "answer": null}', "must be a number"),
    ],
)
def test_malformed_row_names_file_line_and_fix(tmp_path: Path, bad_line: str, what: str) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "ok?", "answer": "#### 1"}, "", bad_line])
    with pytest.raises(DataError) as err:
        load_problems(path)
    msg = str(err.value)
    assert f"{path}:3:" in msg and what in msg and "data.skip_malformed=true" in msg


@pytest.mark.parametrize(
    ("bad_line", "what"),
    [('{"question": "Q 2?", "answer": "#### lots"}', "no number after '####'"),
     ('{"question": "Q 2?", "answer": "many"}', "not a number")],
)  # fmt: skip
def test_gold_that_is_not_a_number_is_skipped_and_counted_never_a_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad_line: str, what: str
) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "ok 1?", "answer": "#### 1"}, "", bad_line])
    with caplog.at_level(logging.WARNING):
        problems = load_problems(path)
    assert [p.answer for p in problems] == ["1"]
    assert problems.skipped_reasons == {"answer is not a number": 1}
    assert f"{path}:3:" in problems.skipped_lines[0] and what in problems.skipped_lines[0]
    assert len([r for r in caplog.records if "skipped 1 of 2 rows" in r.getMessage()]) == 1


def test_skip_malformed_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"question": "a?", "answer": "#### 1"},
            "{oops",
            {"question": "b?"},
            {"question": "c?", "answer": "#### 3"},
        ],
    )
    with caplog.at_level(logging.WARNING):
        problems = load_problems(path, skip_malformed=True)
    assert [p.answer for p in problems] == ["1", "3"]
    assert (
        problems.stats()["skipped"] == 2 and problems.stats()["rows"] == 4 and problems.stats()["loaded"] == 2
    )
    assert problems.stats()["skipped_lines"][0].startswith(f"{path}:2:")
    assert "skipped 2 of 4 rows" in caplog.text
    assert problems.stats()["skipped_reasons"] == {"invalid JSON": 1, "missing field 'answer'": 1}


def test_all_malformed_is_an_error(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", ["{oops"])
    with pytest.raises(DataError, match="no problems loaded"):
        load_problems(path, skip_malformed=True)


def test_duplicate_questions_get_distinct_ids(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"question": "Same?", "answer": "#### 1"}] * 3)
    ids = [p.id for p in load_problems(path)]
    assert len(set(ids)) == 3 and ids[1] == ids[0] + "-2"


def _problems(n: int) -> list[Problem]:
    return [Problem(f"p{i}", f"q{i}?", str(i)) for i in range(n)]


def test_split_dev_deterministic_disjoint_complete() -> None:
    problems = _problems(200)
    train, dev = split_dev(problems, 30, seed=0)
    assert len(dev) == 30 and len(train) == 170
    assert not {p.id for p in train} & {p.id for p in dev}
    assert {p.id for p in train} | {p.id for p in dev} == {p.id for p in problems}
    assert split_dev(problems, 30, seed=0) == (train, dev)
    assert split_dev(list(reversed(problems)), 30, seed=0)[1] == list(reversed(dev))  # order-independent
    assert {p.id for p in split_dev(problems, 30, seed=1)[1]} != {p.id for p in dev}
    # input order is kept inside each part
    assert [int(p.id[1:]) for p in train] == sorted(int(p.id[1:]) for p in train)
    # growing the pool keeps most of the old dev set (membership is per id, not per position)
    grown_dev = {p.id for p in split_dev(_problems(220), 33, seed=0)[1]}
    assert len(grown_dev & {p.id for p in dev}) >= 25


def test_split_dev_errors() -> None:
    with pytest.raises(DataError, match="lower data.dev_size"):
        split_dev(_problems(5), 5, seed=0)
    with pytest.raises(DataError, match="not unique"):
        split_dev(_problems(3) + _problems(3), 1, seed=0)


def test_line_separator_inside_a_json_string_is_not_a_line_break(tmp_path):
    """JSON strings may hold U+2028 raw (json.dumps(ensure_ascii=False) writes it so); str.splitlines
    used to cut such a row in two and call both halves invalid JSON."""
    path = tmp_path / "u2028.jsonl"
    path.write_text(
        json.dumps({"question": "Two\u2028lines?", "answer": "#### 2"}, ensure_ascii=False) + "\n"
    )
    assert [p.question for p in load_problems(path, socratic=None)] == ["Two\u2028lines?"]
