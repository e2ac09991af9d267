"""benchmarks/accuracy_study.py end to end on a tiny random student, `train.reuse_sft`, and McNemar power."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from edge_distill.errors import ConfigError
from edge_distill.stats import mcnemar_exact, mcnemar_power

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


# ---------------------------------------------------------------------------------------------- power
def test_mcnemar_power_matches_a_simulation_of_the_exact_test():
    n, disc, delta = 120, 0.15, 0.08
    rng = random.Random(1)
    trials, hits = 1500, 0
    for _ in range(trials):
        b = c = 0
        for _ in range(n):
            u = rng.random()
            if u < (disc + delta) / 2:
                b += 1
            elif u < disc:
                c += 1
        hits += mcnemar_exact(b, c) < 0.05
    simulated = hits / trials
    assert abs(mcnemar_power(n, disc, delta) - simulated) < 0.04  # MC standard error ~0.013


def test_mcnemar_power_properties():
    assert mcnemar_power(250, 0.1, 0.0) <= 0.05  # no difference: the test's size, exact test is conservative
    assert mcnemar_power(250, 0.1, 0.05) < mcnemar_power(1319, 0.1, 0.05)  # more problems, more power
    assert mcnemar_power(250, 0.2, 0.05) < mcnemar_power(250, 0.1, 0.05)  # more discordance, less power
    assert mcnemar_power(250, 0.01, 0.05) == mcnemar_power(250, 0.05, 0.05)  # discordance >= |delta|
    assert mcnemar_power(0, 0.1, 0.05) == 0.0
    with pytest.raises(ValueError):
        mcnemar_power(10, 1.5, 0.05)


def test_power_near_the_floor_is_not_the_optimistic_bound():
    """Two weak arms can disagree on fewer problems than the 5 points sought; the study's power is then the
    one independent arms at the reference's accuracy would have, not the near-certain one-sided bound."""
    import accuracy_study

    pd = accuracy_study.alternative_discordance(0.04, 0.028)
    assert pd == pytest.approx(0.028 + 0.078 - 2 * 0.028 * 0.078)
    assert accuracy_study.alternative_discordance(0.3, 0.028) == 0.3  # observed, when larger
    assert mcnemar_power(250, 0.04, 0.05) > 0.95 > 0.7 > mcnemar_power(250, pd, 0.05) > 0.55
    rows = [
        {"arm": "sft-cot", "sets": {"test": {"n": 250, "accuracy": 0.028}}},
        {"arm": "fdd", "skipped": "x"},
    ]
    dp = accuracy_study.design_power(rows, "test")
    assert dp["power"] == pytest.approx(mcnemar_power(250, pd, 0.05), abs=1e-3)
    assert 250 < dp["n_for_power_0_8"] <= 400 and mcnemar_power(dp["n_for_power_0_8"], pd, 0.05) >= 0.8
    assert accuracy_study.design_power(rows, "ood_x") is None


# ---------------------------------------------------------------------------------------------- reuse_sft
def test_reuse_sft_is_refused_for_objectives_that_cannot_use_it():
    from edge_distill.config import config_from_dict

    with pytest.raises(ConfigError, match="train.reuse_sft: only EDIT"):
        config_from_dict({"train": {"objective": "cascod", "reuse_sft": "runs/x"}})
    with pytest.raises(ConfigError, match="train.reuse_sft"):
        config_from_dict({"methods": ["fdd", "siked"], "train": {"reuse_sft": "runs/x"}})
    config_from_dict({"methods": ["siked"], "train": {"reuse_sft": "runs/x"}})
    config_from_dict({"train": {"objective": "edit", "reuse_sft": "runs/x"}})


# ---------------------------------------------------------------------------------------------- the study
def test_variant_spec_names_a_new_arm_built_on_a_known_one():
    import accuracy_study as st

    arm = st.parse_variant(["siked-pot=siked", "siked.priority=[pot,cot,l2m]", "siked.mixing=all"], st.ARMS)
    assert arm.name == "siked-pot" and arm.reuse == "sft-all"
    assert arm.keys == {**next(a for a in st.ARMS if a.name == "siked").keys,
                        "siked.priority": ["pot", "cot", "l2m"], "siked.mixing": "all"}  # fmt: skip
    for spec, match in ((["siked-pot=nope", "a=1"], "NAME=ARM"), (["siked-pot=untrained", "a=1"], "NAME=ARM"),
                        (["sft-all=siked", "a=1"], "must be new"), (["Bad Name=siked", "a=1"], "must be new"),
                        (["siked-pot=siked"], "at least one KEY=VALUE"), (["x=siked", "novalue"], "KEY=VALUE")):  # fmt: skip
        with pytest.raises(SystemExit, match=match):
            st.parse_variant(spec, st.ARMS)


@pytest.mark.slow
def test_study_runs_every_arm_pairs_them_and_resumes_without_redoing(tmp_path, tiny_model_dir):
    import accuracy_study

    ood = tmp_path / "svamp_like.json"  # another shape the loader reads: a JSON list, Body + Question fields
    ood.write_text(json.dumps([{"question": "What is 2 plus 3?", "answer": "5"},
                               {"question": "What is 10 minus 4?", "answer": "6"}]))  # fmt: skip
    test = tmp_path / "test.jsonl"  # a 12-problem test split keeps the 6 arms' decoding short
    rows = (ln for ln in (ROOT / "edge_distill/assets/gsm8k/test.jsonl").read_text().splitlines()[:12])
    test.write_text("\n".join(rows) + "\n")
    out, js = tmp_path / "study", tmp_path / "res" / "study.json"
    argv = ["--protocol", "tiny", "--out", str(out), "--json", str(js), "--ood", str(ood),
            "--set", f"student.model={tiny_model_dir}", "--set", f"data.test={test}", "--test-limit", "10"]  # fmt: skip
    assert accuracy_study.main(argv) == 0
    result = json.loads(js.read_text())
    rows = {r["arm"]: r for r in result["rows"]}
    assert set(rows) == set(accuracy_study.ARM_NAMES)
    assert "live teacher" in rows["fdd"]["skipped"]
    for arm in ("untrained", "sft-cot", "sft-all", "cascod", "edit", "siked"):
        sets = rows[arm]["sets"]
        assert set(sets) == {"dev", "test", "ood_svamp_like"}, arm
        assert sets["test"]["n"] == 10 and sets["dev"]["n"] == 4 and sets["ood_svamp_like"]["n"] == 2
        lo, hi = sets["test"]["ci95"]
        by_diff = sets["test"]["by_difficulty"]  # GSM8K test: calculator steps of the gold solution
        assert set(by_diff) <= {"1-2", "3-4", "5+"} and sum(b["n"] for b in by_diff.values()) == 10
        assert sum(b["correct"] for b in by_diff.values()) == sets["test"]["correct"]
        assert sets["ood_svamp_like"]["by_difficulty"] == {}  # no gold solution, no bucket
        assert 0 <= lo <= sets["test"]["accuracy"] <= hi <= 1
        if arm != "sft-cot":  # every arm is paired against the reference on the same problems
            v = sets["test"]["vs_reference"]
            assert v["n"] == 10 and 0 <= v["power_5pt"] <= 1 and 0 <= v["mcnemar_p"] <= 1
    runs = out / "runs"
    # EDIT's step 1 and SIKeD's iteration 0 are the SFT arms' models, not retrained
    edit_train = json.loads((runs / "edit-s0" / "stages.json").read_text())["train"]["summary"]
    assert Path(edit_train["reused_sft"]).resolve().is_relative_to((runs / "sft-cot-s0").resolve())
    assert not (runs / "edit-s0" / "train" / "step1" / "final").exists()
    iter0 = json.loads((runs / "siked-s0" / "iter_0" / "record.json").read_text())
    assert "adopted" in iter0 and not (runs / "siked-s0" / "iter_0" / "train").exists()
    # the arms differ only in their own keys: same dev problems for all
    devs = {a: (runs / f"{a}-s0" / "data" / "dev.jsonl").read_text() for a in ("sft-cot", "cascod", "siked")}
    assert len(set(devs.values())) == 1
    assert js.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| sft-all | 0 |" in result["table_md"] and "skipped" in result["table_md"]
    assert "*test by difficulty*" in result["table_md"]

    # a second invocation resumes: nothing is trained or decoded again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("test_predictions.jsonl")}
    assert len(stamps) == 6
    assert accuracy_study.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("test_predictions.jsonl")} == stamps

    # a variant arm joins the finished study: its own run (still built on sft-all), nothing else redone
    variant = ["--arms", "siked", "--variant", "siked-pot=siked", "siked.priority=[pot,cot,l2m]"]
    assert accuracy_study.main(argv + variant) == 0
    new = {p: p.stat().st_mtime_ns for p in out.rglob("test_predictions.jsonl")}
    assert {p: t for p, t in new.items() if p in stamps} == stamps and len(new) == 7
    from edge_distill.config import load_config

    assert [s.value for s in load_config(runs / "siked-pot-s0" / "config.yaml").siked.priority] == [
        "pot",
        "cot",
        "l2m",
    ]
    got = {r["arm"]: r for r in json.loads(js.read_text())["rows"]}
    assert got["siked-pot"]["builds_on"] == "sft-all" and "siked.priority" in got["siked-pot"]["note"]
    assert got["siked-pot"]["sets"]["test"]["vs_reference"]["n"] == 10


@pytest.mark.slow
def test_reuse_sft_refuses_a_run_trained_on_other_samples_or_settings(tmp_path, tiny_model_dir):
    import accuracy_study

    from edge_distill.pipeline import run_pipeline

    out = tmp_path / "study"
    argv = ["--protocol", "tiny", "--out", str(out), "--json", str(tmp_path / "r.json"), "--phase", "train",
            "--arms", "sft-cot", "--set", f"student.model={tiny_model_dir}"]  # fmt: skip
    assert accuracy_study.main(argv) == 0
    edit = next(a for a in accuracy_study.ARMS if a.name == "edit")

    def edit_run(**keys):
        user = {"student.model": str(tiny_model_dir), **keys}
        return run_pipeline(
            accuracy_study.arm_config(accuracy_study.TINY, edit, 0, out / "runs", user), overwrite=True
        )

    # EDIT on all three strategies: its teacher samples are not the ones sft-cot trained on
    with pytest.raises(ConfigError, match="filter/train.jsonl differs"):
        edit_run(**{"teacher.strategies": ["cot", "l2m", "pot"]})
    with pytest.raises(ConfigError, match=r"train settings differ .*lr"):
        edit_run(**{"train.lr": 0.01})
    assert not (out / "runs" / "edit-s0" / "train" / "final").exists()


# ---------------------------------------------------------------------------------------------- GPU payload
def test_payload_travels_in_calls_and_is_verified_before_use(tmp_path):
    import shutil

    import study_payload as sp

    gguf = tmp_path / "student.gguf"
    gguf.write_bytes(random.Random(0).randbytes(5 * sp.MIB + 123))
    gsm = tmp_path / "gsm8k"
    gsm.mkdir()
    for f in sp.GSM8K_FILES:
        (gsm / f).write_text(f"{f}\n" * 1000)
    out = tmp_path / "payload"
    budget_mib = (sp.tree_bytes() + 2 * sp.MIB) / sp.MIB + 3.5  # 3.5 MiB of payload per call: the last,
    # small part of the weights then lands in call 1, before parts 03-04 (file order != call order)
    m = sp.make(out, gguf=gguf, gsm8k=gsm, wheels=False, call_mib=budget_mib, part_mib=1)
    assert [p.rsplit("-", 1)[1] for p in m["model"]["parts"]] == ["00", "01", "02", "03", "04", "05"]
    assert len({p.split("/")[0] for p in m["model"]["parts"]}) >= 2  # the weights are spread over calls
    for call in m["calls"]:  # every call fits its budget
        assert sum(p.stat().st_size for p in (out / call).rglob("*") if p.is_file()) <= 3.5 * sp.MIB
    got = sp.assemble(out)
    assert got["gguf"].read_bytes() == gguf.read_bytes()
    assert (got["gsm8k"] / "test.jsonl").read_text() == (gsm / "test.jsonl").read_text()

    first_part = out / m["model"]["parts"][0]
    good = first_part.read_bytes()
    first_part.write_bytes(b"x" + good[1:])  # altered in transit
    with pytest.raises(sp.PayloadError, match="sha256 differs"):
        sp.assemble(out)
    first_part.write_bytes(good)
    shutil.rmtree(out / m["calls"][-1])  # the machine went back between calls
    with pytest.raises(sp.PayloadError, match=f"travels in {m['calls'][-1]} of {len(m['calls'])}"):
        sp.assemble(out)
    with pytest.raises(sp.PayloadError, match="exists"):
        sp.make(out, gguf=gguf, gsm8k=gsm, wheels=False, call_mib=budget_mib, part_mib=1)


def test_cpu_v2_protocol_needs_gsm8k_to_derive_its_problems(tmp_path):
    import accuracy_study

    with pytest.raises(SystemExit, match="--gsm8k DIR"):
        accuracy_study.main(["--protocol", "cpu-v2", "--out", str(tmp_path / "s")])
    assert accuracy_study.TEST_LIMIT["cpu-v2"] is None  # all derived test problems
    assert accuracy_study.CPU_V2["train"]["precision"] == "fp32"  # the curve it was sized from ran fp32
