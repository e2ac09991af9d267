"""Benchmark files read as their authors publish them (issue 23): each layout on a small fixture written in
its exact published field layout (tests/fixtures/published/), recognised by its fields or named as
NAME:PATH, non-numeric golds skipped and counted (one warning per file), and hf:<id> read offline from a
`datasets` cache laid out under HF_HOME the way `datasets` writes it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_distill.data import LAYOUTS, load_problems
from edge_distill.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "published"
NAN = "answer is not a number"

# file, recognised layout, ids (None: content hashes), gold answers, skipped as not a number
CASES = [
    ("gsm8k_test.jsonl", "gsm8k", None, ["18", "3"], 0),
    ("gsm8k_test_socratic.jsonl", "gsm8k", None, ["18", "3"], 0),
    ("SVAMP.json", "svamp", ["chal-1", "chal-2", "chal-3"], ["51", "1", "17"], 0),
    ("ASDiv.xml", "asdiv", ["nluds-0001", "nluds-0002"], ["9", "15"], 1),
    ("MultiArith.json", "mawps", ["1", "2"], ["6", "58"], 0),
    ("AddSub.json", "mawps", ["1"], ["116"], 0),
    ("SingleEq.json", "mawps", ["1"], ["55"], 0),
    ("llm_adapters_mawps_test.json", "llm-adapters", None, ["13", "21"], 0),
    ("llm_adapters_svamp_test.json", "llm-adapters", None, ["51"], 0),
    ("tora_mawps_singleeq.jsonl", "input-target", None, ["55", "3"], 0),
    ("tora_asdiv_test.jsonl", "asdiv-tora", ["0"], ["9"], 1),
    ("gsmhard.jsonl", "gsm-hard", None, ["-9867630", "3"], 0),
    ("math_test.jsonl", "math", None, ["12", "0.5"], 1),
    ("math500_test.jsonl", "math-answer", ["test/algebra/1.json"], ["7"], 1),
    ("tora_qa.jsonl", "gsm8k", None, ["7"], 1),
    ("chilled_multiarith_test.jsonl", "question-final_ans", None, ["58"], 0),
    ("calc_svamp.jsonl", "calc-x", ["chal-1"], ["51"], 0),
]


def test_every_layout_has_a_fixture() -> None:
    assert {layout.name for layout in LAYOUTS} == {c[1] for c in CASES}


@pytest.mark.parametrize(
    ("name", "layout", "ids", "answers", "not_numbers"), CASES, ids=[c[0] for c in CASES]
)
def test_published_file_is_recognised_by_its_fields(
    name: str, layout: str, ids: list[str] | None, answers: list[str], not_numbers: int,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    with caplog.at_level(logging.WARNING):
        problems = load_problems(FIX / name, split="test")
    assert problems.layout == layout
    assert [p.answer for p in problems] == answers
    if ids is not None:
        assert [p.id for p in problems] == ids
    else:
        assert all(p.id.startswith("q-") for p in problems)
    assert problems.skipped_reasons == ({NAN: not_numbers} if not_numbers else {})
    skip_warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skip_warnings) == (1 if not_numbers else 0)  # one warning per file, with the counts
    if not_numbers:
        assert f"{not_numbers} {NAN}" in skip_warnings[0].getMessage()


def test_question_text_as_the_published_layout_composes_it() -> None:
    svamp = load_problems(FIX / "SVAMP.json")
    assert svamp[0].question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    asdiv = load_problems(FIX / "ASDiv.xml")
    assert (
        asdiv[0].question
        == "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    )
    adapters = load_problems(FIX / "llm_adapters_mawps_test.json")  # empty `input`: no trailing blank
    assert adapters[0].question == "Mary had 4 apples. She bought 9 more. How many apples does Mary have now?"
    gsm = load_problems(FIX / "gsm8k_test.jsonl")  # the socratic sibling is attached by question text
    assert gsm.socratic_attached == 2 and gsm[0].socratic.startswith("How many eggs does Janet sell? **")
    assert gsm[0].solution.endswith("#### 18")
    math = load_problems(FIX / "math_test.jsonl")
    assert "\\boxed{12}" in math[0].solution


@pytest.mark.parametrize(
    ("spec", "source", "answers"),
    [
        ("svamp:SVAMP.json", "svamp", ["51", "1", "17"]),
        ("asdiv:ASDiv.xml", "asdiv", ["9", "15"]),
        ("asdiv:tora_asdiv_test.jsonl", "asdiv", ["9"]),
        ("MultiArith:MultiArith.json", "multiarith", ["6", "58"]),
        ("mawps:tora_mawps_singleeq.jsonl", "mawps", ["55", "3"]),
        ("mawps:llm_adapters_mawps_test.json", "mawps", ["13", "21"]),
        ("svamp:llm_adapters_svamp_test.json", "svamp", ["51"]),
        ("gsm-hard:gsmhard.jsonl", "gsm-hard", ["-9867630", "3"]),
        ("gsm8k:gsm8k_test_socratic.jsonl", "gsm8k", ["18", "3"]),
        ("math:math500_test.jsonl", "math", ["7"]),
    ],
)
def test_named_spec_reads_the_datasets_layouts_and_labels_the_source(
    monkeypatch: pytest.MonkeyPatch, spec: str, source: str, answers: list[str]
) -> None:
    monkeypatch.chdir(FIX)
    problems = load_problems(spec)
    assert [p.answer for p in problems] == answers
    assert {p.source for p in problems} == {source}


def test_named_spec_that_does_not_match_says_what_was_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIX)
    with pytest.raises(
        DataError,
        match=r"MultiArith.json: not laid out as svamp is published .*svamp: Answer, Body, Question",
    ):
        load_problems("svamp:MultiArith.json")
    with pytest.raises(DataError, match=r"'nosuch' is not a dataset name .*svamp"):
        load_problems("nosuch:SVAMP.json")
    with pytest.raises(DataError, match="data file not found"):
        load_problems("svamp:missing.json")


def test_unrecognised_layout_needs_field_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"uid": "a1", "text": "Ann has 2 cats and 3 dogs. How many pets?", "gold": "5 pets"})
        + "\n"
    )
    with pytest.raises(DataError, match=r"fields present: gold, text, uid.*--question-field/--answer-field"):
        load_problems(path)
    problems = load_problems(path, question_field="text", answer_field="gold", id_field="uid")
    assert [(p.id, p.answer) for p in problems] == [("a1", "5")] and problems.layout == "fields"
    # a named field replaces that field of the recognised layout only
    svamp = load_problems(FIX / "SVAMP.json", question_field="Question")
    assert svamp.layout == "svamp" and [p.id for p in svamp] == ["chal-1", "chal-2", "chal-3"]
    assert svamp[0].question == "How much do you have to pay to buy each pack?"
    assert svamp.questions_without_digits == 3  # and the loader warns that the numbers are missing


def test_every_gold_not_a_number_is_an_error_naming_the_fields(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"no problems loaded \(3 answer is not a number; layout svamp: .*'Type'"
    ):
        load_problems(FIX / "SVAMP.json", answer_field="Type")


def test_config_data_train_and_test_read_published_files(tmp_path: Path) -> None:
    from edge_distill import stages
    from edge_distill.config import load_config

    cfg = load_config(None, [f"data.train={FIX / 'MultiArith.json'}", f"data.test=asdiv:{FIX / 'ASDiv.xml'}"])
    assert [p.answer for p in stages.load_problems(cfg.data, "train")] == ["6", "58"]
    test = stages.load_test(cfg.data)
    assert [p.id for p in test] == ["nluds-0001", "nluds-0002"] and test[0].source == "asdiv"


# --------------------------------------------------------------------------------------------- hf:<id>
_POPULATE = """
import os, sys, datasets
from datasets.data_files import DataFilesDict
from datasets.packaged_modules.json.json import Json

# What `load_dataset("openai/gsm8k", "main")` leaves in the datasets cache after an online load:
# <HF_DATASETS_CACHE>/openai___gsm8k/main/0.0.0/<hash>/{dataset_info.json, gsm8k-test.arrow}, written by
# datasets' own builder (the hub path builds it the same way, from the repo's parquet files).
root = str(datasets.config.HF_DATASETS_CACHE)
files = DataFilesDict.from_patterns({"test": [sys.argv[1]]}, base_path="/")
Json(cache_dir=root, dataset_name="gsm8k", config_name="main", config_id="main", data_files=files,
     hash="0123456789abcdef").download_and_prepare()
os.rename(os.path.join(root, "gsm8k"), os.path.join(root, "openai___gsm8k"))
"""

_LOAD = """
import json, sys
from edge_distill.data import load_problems
from edge_distill.errors import DataError
out = []
for spec in sys.argv[1:]:
    try:
        p = load_problems(spec, split="test")
        out.append({"layout": p.layout, "answers": [x.answer for x in p], "source": p[0].source})
    except DataError as e:
        out.append({"error": str(e)})
print(json.dumps(out))
"""


def test_hf_spec_reads_the_datasets_cache_offline(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run([sys.executable, "-c", _POPULATE, str(FIX / "gsm8k_test.jsonl")], env=env, check=True,
                   capture_output=True)  # fmt: skip
    cached = tmp_path / "hf" / "datasets" / "openai___gsm8k" / "main" / "0.0.0" / "0123456789abcdef"
    assert (cached / "dataset_info.json").is_file() and (cached / "gsm8k-test.arrow").is_file()
    specs = ["hf:openai/gsm8k:main", "gsm8k:hf:openai/gsm8k:main@test", "hf:openai/gsm8k:socratic",
             "hf:someone/not-cached", "hf:openai/gsm8k:main@train"]  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-c", _LOAD, *specs], env=env, check=True, capture_output=True, text=True
    )
    main, named, socratic, missing, split = json.loads(res.stdout.strip().splitlines()[-1])
    assert main == {"layout": "gsm8k", "answers": ["18", "3"], "source": "gsm8k"}
    assert named["answers"] == ["18", "3"] and named["source"] == "gsm8k"
    assert (
        "cannot load as a hub dataset" in socratic["error"]
        and "Available configs in the cache: ['main']" in socratic["error"]
    )
    assert (
        "hf:someone/not-cached" not in missing["error"]
        and "someone/not-cached: cannot load" in missing["error"]
    )
    assert "train" in split["error"]


def test_hf_spec_syntax_errors() -> None:
    with pytest.raises(DataError, match=r"<id>\[:<config>\]\[@<split>\]"):
        load_problems("hf:a/b/c")
    with pytest.raises(DataError, match="name the hub dataset"):
        load_problems("hf:")
