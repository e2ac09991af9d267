"""The generic loader on the shapes math datasets are published in (SVAMP, MultiArith, AddSub, SingleEq,
ASDiv), from a few rows written here in those shapes (no downloads), in every file format it reads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_distill.config import load_config
from edge_distill.data import BUILTIN_SAMPLE, load_problems
from edge_distill.errors import DataError

# SVAMP (JSON array): the numbers are in Body, Question alone has none
SVAMP = [
    {
        "ID": "chal-1",
        "Body": "Each pack of pencils costs 76 dollars. There is a discount of 25 dollars on each pack",
        "Question": "How much do you have to pay to buy each pack?",
        "Equation": "( 76.0 - 25.0 )",
        "Answer": 51.0,
        "Type": "Subtraction",
    },
    {
        "ID": "chal-2",
        "Body": "Dan had 14 marbles. He gave some to Mary and now has 9 marbles left",
        "Question": "How many marbles did he give to Mary?",
        "Equation": "( 14.0 - 9.0 )",
        "Answer": 5.0,
        "Type": "Subtraction",
    },
    {
        "ID": "chal-3",
        "Body": "A baker made 3 batches of 12.5 kg of dough",
        "Question": "How much dough did the baker make?",
        "Equation": "( 3.0 * 12.5 )",
        "Answer": 37.5,
        "Type": "Multiplication",
    },
]


def _mawps(questions: list[tuple[int, str, str, float]]) -> list[dict[str, object]]:
    """MultiArith / AddSub / SingleEq rows: iIndex, sQuestion, lEquations, lSolutions (a list)."""
    return [
        {"iIndex": i, "sQuestion": q, "lEquations": [eq], "lSolutions": [ans], "lAlignments": [1, 2]}
        for i, q, eq, ans in questions
    ]


MULTIARITH = _mawps(
    [
        (1, " Tom had 32 apples and Ann had 42. If they ate 35, how many do they have left?", "X=((32.0+42.0)-35.0)", 39.0),
        (2, " A shop sold 9 boxes of 6 pens and 4 single pens. How many pens did it sell?", "X=((9.0*6.0)+4.0)", 58.0),
    ]
)  # fmt: skip
ADDSUB = _mawps(
    [(11, "Joan found 70 shells and Sam found 46. How many shells do they have?", "X=(70.0+46.0)", 116.0)]
)
SINGLEEQ = _mawps(
    [(21, "Sara has 31 red and 24 green balloons. How many balloons does she have?", "X=(31.0+24.0)", 55.0)]
)

ASDIV_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Machine-Reading-Corpus-File>
<ProblemSet>
<Problem ID="nluds-0001" Grade="1" Source="http://www.k5learning.com">
<Body>Seven red apples and 2 green apples are in the basket.</Body>
<Question>How many apples are in the basket?</Question>
<Solution-Type>Addition</Solution-Type>
<Answer>9 (apples)</Answer>
<Formula>7+2=9</Formula>
</Problem>
<Problem ID="nluds-0002" Grade="2" Source="http://www.k5learning.com">
<Body>Ellen walked 1.5 km and then 2 km more.</Body>
<Question>How far did she walk?</Question>
<Solution-Type>Addition</Solution-Type>
<Answer>3.5 (km)</Answer>
<Formula>1.5+2=3.5</Formula>
</Problem>
<Problem ID="nluds-0003" Grade="3" Source="http://www.k5learning.com">
<Body>A baker has 12 cakes and 18 pies to share equally among 6 tables.</Body>
<Question>How many cakes and pies does each table get?</Question>
<Solution-Type>Common-Division</Solution-Type>
<Answer>2 (cakes); 3 (pies)</Answer>
<Formula>12/6=2; 18/6=3</Formula>
</Problem>
</ProblemSet>
</Machine-Reading-Corpus-File>
"""


def _json(path: Path, rows: object) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_svamp_body_and_question_joined_by_a_template(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _json(tmp_path / "svamp.json", SVAMP)
    with caplog.at_level(logging.WARNING):
        problems = load_problems(
            path, question_field="{Body} {Question}", answer_field="Answer", id_field="ID"
        )
    assert [p.id for p in problems] == ["chal-1", "chal-2", "chal-3"]
    assert [p.answer for p in problems] == ["51", "5", "37.5"]
    assert problems[0].question == (
        "Each pack of pencils costs 76 dollars. There is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert problems.stats()["questions_without_digits"] == 0 and "no digits" not in caplog.text


def test_svamp_question_alone_warns_that_the_numbers_are_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _json(tmp_path / "svamp.json", SVAMP)
    with caplog.at_level(logging.WARNING):
        problems = load_problems(path, question_field="Question", answer_field="Answer")
    assert len(problems) == 3 and problems.stats()["questions_without_digits"] == 3
    warning = [r for r in caplog.records if "no digits" in r.getMessage()]
    assert len(warning) == 1 and "{Body} {Question}" in warning[0].getMessage()


@pytest.mark.parametrize(
    ("name", "rows", "ids", "answers"),
    [
        ("MultiArith", MULTIARITH, ["1", "2"], ["39", "58"]),
        ("AddSub", ADDSUB, ["11"], ["116"]),
        ("SingleEq", SINGLEEQ, ["21"], ["55"]),
    ],
)
def test_mawps_family_list_answers_and_integer_ids(
    tmp_path: Path, name: str, rows: list[dict[str, object]], ids: list[str], answers: list[str]
) -> None:
    path = _json(tmp_path / f"{name}.json", rows)
    problems = load_problems(path, question_field="sQuestion", answer_field="lSolutions", id_field="iIndex")
    assert [p.id for p in problems] == ids
    assert [p.answer for p in problems] == answers
    assert all(p.source == name and not p.question.startswith(" ") for p in problems)


def test_asdiv_xml_units_in_brackets_and_one_skip_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ASDiv.xml"
    path.write_text(ASDIV_XML)
    kwargs = {"question_field": "{Body} {Question}", "answer_field": "Answer", "id_field": "ID"}
    with caplog.at_level(logging.WARNING):  # a gold that is not a number is skipped, never a stop
        problems = load_problems(path, **kwargs)
    assert r"ASDiv.xml:Problem 3 (ID=nluds-0003): field 'Answer' is not a number" in problems.skipped_lines[0]
    assert len([r for r in caplog.records if "skipped 1 of 3 rows" in r.getMessage()]) == 1
    assert [(p.id, p.answer) for p in problems] == [("nluds-0001", "9"), ("nluds-0002", "3.5")]
    assert problems[0].question.startswith("Seven red apples and 2 green apples")
    assert problems.stats()["skipped"] == 1 and problems.stats()["skipped_reasons"] == {
        "answer is not a number": 1
    }
    assert problems.stats()["format"] == "xml"


def test_skip_malformed_prints_one_summary_with_counts_per_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{"question": f"q{i} has 2?", "answer": i} for i in range(5)]
    rows += (
        [{"question": "no answer?"}] * 40
        + [{"question": "words?", "answer": "lots"}] * 30
        + ["{bad json"] * 7
    )
    path = tmp_path / "d.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        problems = load_problems(path, skip_malformed=True)
    assert len(problems) == 5 and problems.stats()["skipped"] == 77
    assert problems.stats()["skipped_reasons"] == {
        "missing field 'answer'": 40,
        "answer is not a number": 30,
        "invalid JSON": 7,
    }
    skip_records = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skip_records) == 1
    msg = skip_records[0].getMessage()
    assert "skipped 77 of 82 rows" in msg and "40 missing field 'answer'" in msg
    assert f"{path}:6:" in msg and "and 74 more" in msg
    assert len(problems.stats()["skipped_lines"]) == 20


def test_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "svamp.csv"
    path.write_text(
        'ID,Body,Question,Answer\nchal-1,"Dan had 14 marbles, then 9",How many did he give away?,5.0\n'
        'chal-2,"A note\nover two lines with 3 cats",How many cats?,3\n'
    )
    problems = load_problems(path, question_field="{Body} {Question}", answer_field="Answer", id_field="ID")
    assert [(p.id, p.answer) for p in problems] == [("chal-1", "5"), ("chal-2", "3")]
    assert problems[1].question == "A note over two lines with 3 cats How many cats?"
    path.write_text("ID,Answer\nx,1,extra\n")
    with pytest.raises(DataError, match=r"svamp.csv:2: more cells than header columns"):
        load_problems(path, question_field="ID", answer_field="Answer")


def test_parquet_and_arrow_files(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(MULTIARITH)
    pq.write_table(table, tmp_path / "multiarith.parquet")
    with pa.ipc.new_stream(str(tmp_path / "multiarith.arrow"), table.schema) as w:
        w.write_table(table)
    for name in ("multiarith.parquet", "multiarith.arrow"):
        problems = load_problems(
            tmp_path / name, question_field="sQuestion", answer_field="lSolutions", id_field="iIndex"
        )
        assert [(p.id, p.answer) for p in problems] == [("1", "39"), ("2", "58")], name
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="broken.parquet: not a readable parquet file"):
        load_problems(tmp_path / "broken.parquet")


def test_datasets_saved_directory_with_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [{k: v for k, v in r.items() if k != "Equation"} for r in SVAMP]
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:2]), test=datasets.Dataset.from_list(rows[2:])
    )
    dd.save_to_disk(str(tmp_path / "svamp_hf"))
    kwargs = {"question_field": "{Body} {Question}", "answer_field": "Answer", "id_field": "ID"}
    train = load_problems(tmp_path / "svamp_hf", **kwargs)
    test = load_problems(tmp_path / "svamp_hf", split="test", **kwargs)
    assert [p.id for p in train] == ["chal-1", "chal-2"] and [p.answer for p in test] == ["37.5"]
    with pytest.raises(DataError, match="has splits train, test, not 'dev'"):
        load_problems(tmp_path / "svamp_hf", split="dev", **kwargs)
    with pytest.raises(DataError, match="cannot load as a `datasets` saved directory"):
        load_problems(tmp_path, **kwargs)  # a directory that is not a dataset


def test_per_split_formats_from_the_config(tmp_path: Path) -> None:
    """data.format=jsonl on the quickstart used to drop the socratic file: every L2M sample failed."""
    xml = tmp_path / "asdiv.data"  # a suffix auto cannot place, so test_format must say it
    xml.write_text(ASDIV_XML)
    cfg = load_config(
        None,
        [
            "data.format=jsonl",
            f"data.test={xml}",
            "data.test_format=xml",
            "data.skip_malformed=true",
            "data.question_field={Body} {Question}",
        ],
    )
    train_kwargs, test_kwargs = cfg.data.loader_kwargs("train"), cfg.data.loader_kwargs("test")
    assert train_kwargs["fmt"] == "jsonl" and test_kwargs["fmt"] == "xml"
    train = load_problems(BUILTIN_SAMPLE, **train_kwargs)
    assert len(train) == 1000 and all(p.socratic for p in train)  # the builtin stays GSM8K
    test = load_problems(cfg.data.test, **{**test_kwargs, "answer_field": "Answer", "id_field": "ID"})
    assert [p.answer for p in test] == ["9", "3.5"]
    xml.write_text("<a>")
    with pytest.raises(DataError, match="not valid XML"):
        load_problems(xml, **test_kwargs)


def test_hostile_and_unusable_inputs_are_clear_errors(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><r>&b;</r>')
    with pytest.raises(DataError, match="entity declarations"):
        load_problems(bomb)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="header row"):
        load_problems(tmp_path / "empty.csv")
    path = _json(tmp_path / "svamp.json", SVAMP)
    with pytest.raises(DataError, match=r"svamp.json:item 1: missing field 'Bdy'"):
        load_problems(path, question_field="{Bdy} {Question}", answer_field="Answer")
    with pytest.raises(DataError, match="data.format: 'tsv' is not one of"):
        load_problems(path, fmt="tsv")
    with pytest.raises(DataError, match="format hf reads a `datasets` directory"):
        load_problems(path, fmt="hf")
    with pytest.raises(DataError, match="name the hub dataset"):
        load_problems("hf:")
    _json(tmp_path / "empty_list.json", [{"q": "a 1?", "a": []}])
    with pytest.raises(DataError, match="empty list"):
        load_problems(tmp_path / "empty_list.json", question_field="q", answer_field="a")


def test_svamp_file_through_the_cli_data_stage(tmp_path: Path) -> None:
    """Acceptance: a user-supplied SVAMP-shaped file, mapped with key=value overrides, lands in the run's
    data split with its numbers (ids and answers as published)."""
    from click.testing import CliRunner

    from edge_distill.cli import main

    rows = [{**SVAMP[i % 3], "ID": f"chal-{i}", "Answer": float(i)} for i in range(12)]
    path = _json(tmp_path / "SVAMP.json", rows)
    args = ["teach", "name=svamp", f"runs_dir={tmp_path / 'runs'}", f"data.train={path}", "data.dev_size=2"]
    args += ["data.question_field={Body} {Question}", "data.answer_field=Answer", "data.id_field=ID"]
    args += ["teacher.strategies=[cot]"]
    res = CliRunner().invoke(main, args)
    out = tmp_path / "runs" / "svamp" / "data"
    written = [
        json.loads(line) for f in ("train.jsonl", "dev.jsonl") for line in (out / f).read_text().splitlines()
    ]
    assert sorted(int(p["id"].split("-")[1]) for p in written) == list(range(12)), res.output
    assert all(any(c.isdigit() for c in p["question"]) for p in written)
    assert {p["id"]: p["answer"] for p in written}["chal-7"] == "7"
