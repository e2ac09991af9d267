"""benchmarks/gsm8k_first_step.py: the easier set of the CPU study v2, derived from GSM8K's socratic files."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gsm8k_first_step import derive, first_step, step_ops  # noqa: E402

JANET_Q = (
    "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
    "egg. How much in dollars does she make every day at the farmers' market?"
)
JANET_A = (
    "How many eggs does Janet sell? ** Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "How much does Janet make at the farmers' market? ** She makes 9 * 2 = $<<9*2=18>>18 every day at the "
    "farmer’s market.\n#### 18"
)


def test_first_step_asks_the_first_sub_question_after_the_statements():
    d = first_step(JANET_Q, JANET_A)
    assert d is not None
    assert d["question"].endswith("$2 per fresh duck egg. How many eggs does Janet sell?")
    assert "How much in dollars" not in d["question"]
    assert d["answer"] == "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 9"
    assert d["socratic"].startswith("How many eggs does Janet sell? ** Janet sells")
    assert d["socratic"].endswith("\n#### 9")


def test_first_step_refuses_what_would_drop_a_given_or_is_ambiguous():
    # the final question carries a given ("if ... 20 chickens"): removing it would lose the 20
    q = "Wendi feeds each chicken 3 cups a day. How many cups does she need if the flock is 20 chickens?"
    a = "How many cups a day? ** 3*20=<<3*20=60>>60 cups\nHow many more? ** 60-40=<<60-40=20>>20\n#### 20"
    assert first_step(q, a) is None
    q2 = "Tom has 3 apples. Ann has 4. How many apples do they have if Tom eats none?"
    assert first_step(q2, "How many? ** 3+4=<<3+4=7>>7\nAnd? ** 7*1=<<7*1=7>>7\n#### 7") is None
    q3 = "Tom has 3 apples. Ann has 4. How many apples do they have?"
    two_calcs = "How many? ** 3+4=<<3+4=7>>7 and 7*2=<<7*2=14>>14\nAnd? ** 14-1=<<14-1=13>>13\n#### 13"
    assert first_step(q3, two_calcs) is None  # a step of two calculations is two steps
    assert first_step(q3, "How many? ** seven apples\nAnd? ** 7*2=<<7*2=14>>14\n#### 14") is None
    assert first_step(q3, "How many? ** 3+4=<<3+4=7>>7\n#### 7") is None  # one step: nothing easier
    assert (
        first_step("Tom has 3 apples and Ann has 4, how many?", "x ** <<3+4=7>>7\ny ** <<7=7>>7\n#### 7")
        is None
    )
    decimal = first_step(
        q3, "How much? ** 3/4=<<3/4=0.750>>0.750\nAnd? ** 1-0.75=<<1-0.75=0.25>>0.25\n#### 0.25"
    )
    assert decimal is not None and decimal["answer"].endswith("#### 0.75")


def test_step_ops_counts_the_operators_of_the_one_calculation():
    assert step_ops("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.") == "2 ops"
    assert step_ops("It takes 2/2=<<2/2=1>>1 bolt") == "1 op"
    assert step_ops("<<80000*1.5=120000>>") == "1 op"
    assert step_ops("<<-3+5=2>>") == "1 op"  # a sign is not an operation
    assert step_ops("<<(3+4)*2-1=13>>") == "3+ ops"
    assert step_ops("no calculation") is None and step_ops(None) is None
    assert step_ops("<<1+1=2>> and <<2+2=4>>") is None


def test_derived_files_load_and_the_recorded_teacher_replays_them(tmp_path):
    """The shipped GSM8K sample through the derivation: GSM8K's layout (train/test + *_socratic), read by
    the loader with their socratic solutions attached, and the recorded teacher's PoT program (built from
    the step's annotation) evaluates to the derived answer."""
    from edge_distill.data import load_problems
    from edge_distill.teachers.recorded import pot_from_annotations

    kept = derive(ROOT / "edge_distill" / "assets" / "gsm8k", tmp_path)
    assert set(kept) == {"train", "test"} and all(n > 20 for n in kept.values())
    assert {p.name for p in tmp_path.iterdir()} == {
        "train.jsonl",
        "test.jsonl",
        "train_socratic.jsonl",
        "test_socratic.jsonl",
    }
    for split in ("train", "test"):
        problems = load_problems(str(tmp_path / f"{split}.jsonl"), split=split)
        assert len(problems) == kept[split]
        assert all(p.socratic and p.solution and step_ops(p.solution) for p in problems)
        for p in problems[:10]:
            program = pot_from_annotations(p.solution, p.answer)
            assert program is not None, p.solution
            env: dict = {}
            exec(program, {}, env)  # trusted: built by our own code from the GSM8K annotation
            assert Fraction(str(env["answer"])) == Fraction(p.answer), (program, p.answer)
    rows = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert all(r["answer"].count("<<") == 1 for r in rows)
