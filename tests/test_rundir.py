"""Run directories (issue 10 part 2): one safe name, --overwrite only on a real run inside runs_dir,
a failed first stage does not block a rerun, and one process at a time (a real second process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from edge_distill.config import load_config
from edge_distill.errors import ConfigError, StageError
from edge_distill.rundir import RunDir, is_run_dir
from edge_distill.runlock import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent


def _cfg(runs: Path, name: str = "r", *extra: str):
    return load_config(None, [f"runs_dir={runs}", f"name={name}", *extra])


def _run(runs: Path, name: str = "r", *extra: str, **kw) -> RunDir:
    run = RunDir(_cfg(runs, name, *extra), **kw)
    run.release()
    return run


@pytest.mark.parametrize(
    "name", ["..", ".", "/etc", "a/b", "a\\b", "-rf", ".hidden", "a b", "x\0y", "", "x" * 101, "é"]
)
def test_name_must_be_one_safe_path_component(name):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"name={name}"])
    msg = str(e.value)
    assert msg.splitlines()[1].startswith("  name:") and "one directory name" in msg


@pytest.mark.parametrize("name", ["quickstart", "run-2.v1", "A_b", "7"])
def test_ordinary_names_are_accepted(name):
    assert load_config(None, [f"name={name}"]).name == name


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    runs = tmp_path / "runs"
    (runs / "x").mkdir(parents=True)
    (runs / "x" / "thesis.tex").write_text("years of work")
    with pytest.raises(StageError, match="not an edge-distill run directory"):
        RunDir(_cfg(runs, "x"), overwrite=True)
    assert (runs / "x" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in (runs / "x").iterdir()) == ["thesis.tex"]  # not even a lock file


def test_overwrite_refuses_a_run_that_resolves_outside_runs_dir(tmp_path):
    outside = tmp_path / "elsewhere"
    _run(outside, "x")  # a genuine run directory, but not under the runs_dir we name
    (outside / "x" / "keep.txt").write_text("keep")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "x").symlink_to(outside / "x")
    with pytest.raises(StageError, match="--overwrite refused.*nothing was deleted"):
        RunDir(_cfg(runs, "x"), overwrite=True)
    assert (outside / "x" / "keep.txt").read_text() == "keep" and is_run_dir(outside / "x")


def test_overwrite_empties_a_real_run_and_nothing_beside_it(tmp_path):
    runs = tmp_path / "runs"
    first = _run(runs, "x")
    first.mark_done("data", 1.0, {"train": 3})
    (first.path / "data").mkdir()
    (first.path / "data" / "train.jsonl").write_text("{}\n")
    (runs / "sibling.txt").write_text("keep")
    _run(runs, "other")
    run = RunDir(_cfg(runs, "x"), overwrite=True)
    run.release()
    assert sorted(p.name for p in run.path.iterdir()) == [LOCK_NAME, "config.yaml"]
    assert (runs / "sibling.txt").read_text() == "keep" and is_run_dir(runs / "other")


def test_a_run_with_no_finished_stage_does_not_block_a_rerun(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "x", "data.train=missing.jsonl")  # its first stage failed: nothing recorded
    # the user fixes the config: a plain rerun and --resume both proceed
    _run(runs, "x", "data.limit_train=3")
    run = _run(runs, "x", "data.limit_train=4", resume=True)
    assert (
        run.stages() == {}
        and _cfg(runs, "x", "data.limit_train=4").to_yaml() == (run.path / "config.yaml").read_text()
    )
    # once a stage is finished, the old protections hold
    run.mark_done("data", 1.0)
    with pytest.raises(StageError, match="already exists"):
        _run(runs, "x", "data.limit_train=4")
    with pytest.raises(StageError, match=r"config changed.*data\.limit_train"):
        _run(runs, "x", "data.limit_train=5", resume=True)


def test_resume_reads_keys_added_since_as_what_the_run_did_and_ignores_inert_ones(tmp_path):
    """A run written before train.lora.dropout_draws existed drew nn.Dropout's masks: it resumes with `torch`
    and refuses today's default `fast` (naming both values); a full fine-tune ignores LoRA settings."""
    import yaml

    runs = tmp_path / "runs"
    for name, finetune in (("lora", "lora"), ("full", "full")):
        run = _run(runs, name, f"train.finetune={finetune}")
        run.mark_done("data", 1.0)
        saved = yaml.safe_load((run.path / "config.yaml").read_text())
        del saved["train"]["lora"]["dropout_draws"]  # as an older version wrote it
        (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(StageError, match=r"train\.lora\.dropout_draws: 'torch' -> 'fast'"):
        _run(runs, "lora", "train.finetune=lora", resume=True)
    assert _run(runs, "lora", "train.finetune=lora", "train.lora.dropout_draws=torch", resume=True).done(
        "data"
    )
    assert _run(runs, "full", "train.finetune=full", "train.lora.r=4", resume=True).done("data")
    with pytest.raises(StageError, match=r"train\.finetune: 'full' -> 'lora'"):
        _run(runs, "full", "train.finetune=lora", resume=True)


def test_damaged_stages_file_is_one_message(tmp_path):
    run = _run(tmp_path, "x")
    run._stages_file.write_bytes(b'{"data": {"finished": ')
    with pytest.raises(StageError, match=r"stages\.json.*--overwrite"):
        run.stages()


# ---------------------------------------------------------------------------------------------- lock
_HOLD = """
import sys, time
from edge_distill.config import load_config
from edge_distill.rundir import RunDir
run = RunDir(load_config(None, ["runs_dir=" + sys.argv[1], "name=r"]))
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """A real second process that holds runs/r's lock until killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_second_process_fails_at_once_naming_the_holder(tmp_path, holder):
    t0 = time.monotonic()
    with pytest.raises(StageError) as e:
        RunDir(_cfg(tmp_path / "runs"), resume=True)
    msg = str(e.value)
    assert f"pid {holder.pid}" in msg and "since" in msg and str(tmp_path / "runs" / "r") in msg
    assert time.monotonic() - t0 < 5  # fails at once, does not wait
    # --overwrite of a locked run deletes nothing
    (tmp_path / "runs" / "r" / "work.txt").write_text("in progress")
    with pytest.raises(StageError, match=f"pid {holder.pid}"):
        RunDir(_cfg(tmp_path / "runs"), overwrite=True)
    assert (tmp_path / "runs" / "r" / "work.txt").exists()


@pytest.mark.parametrize("command", ["run", "eval", "teach", "export"])
def test_cli_commands_that_write_the_run_dir_are_refused_while_locked(tmp_path, holder, command):
    run_dir = tmp_path / "runs" / "r"
    args = [command, f"runs_dir={tmp_path / 'runs'}", "name=r", *(["--resume"] if command == "run" else [])]
    if command == "export":  # export writes <run>/export/: a finished run's directory, locked by a run
        (run_dir / "stages.json").write_text('{"train": {"summary": {"model": "m"}}}')
        args = ["export", str(run_dir), "--format", "gguf", "--quant", "q8_0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and f"pid {holder.pid}" in res.output, res.output
    assert "Traceback" not in res.output


def test_stale_lock_of_a_killed_process_does_not_block(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = tmp_path / "runs" / "r" / LOCK_NAME
    assert f'"pid": {holder.pid}' in lock.read_text()  # the file stays; the kernel dropped the flock
    run = RunDir(_cfg(tmp_path / "runs"), resume=True)
    assert f'"pid": {os.getpid()}' in lock.read_text()
    run.release()


def test_failed_first_stage_then_plain_rerun_then_resume_with_a_fixed_config(tmp_path):
    """The reproduction: after a first-stage failure both a plain rerun and --resume used to be refused.
    Also shows the lock is released after each in-process run (the same process runs again)."""
    base = ["run", f"runs_dir={tmp_path}", "name=r", "teacher.cache=null", "data.dev_size=1"]
    bad = [*base, f"data.train={tmp_path / 'none.jsonl'}"]
    for _ in range(2):  # a plain rerun is not refused by the first one's run dir (nor its lock)
        res = CliRunner().invoke(main, bad)
        assert res.exit_code == 2 and "data file not found" in res.output, res.output
    good = tmp_path / "train.jsonl"
    good.write_text("".join(f'{{"question": "q{i}?", "answer": "#### {i}"}}\n' for i in range(3)))
    fixed = [*base, "--resume", f"data.train={good}", f"teacher.model={tmp_path / 'rec.jsonl'}"]
    res = CliRunner().invoke(main, fixed)  # --resume with the fixed config reaches the next stage
    assert res.exit_code == 2 and "recorded teacher file not found" in res.output, res.output
    assert list(RunDir.open(tmp_path / "r").stages()) == ["data"]


def test_stage_summaries_store_paths_relative_to_the_run(tmp_path, monkeypatch):
    from edge_distill.rundir import from_stored, to_stored

    run = _run(tmp_path / "runs")
    (run.path / "train" / "final").mkdir(parents=True)
    outside = tmp_path / "base-model"
    outside.mkdir()
    monkeypatch.chdir(tmp_path)  # a cwd-relative path into the run is recognized too
    rel_into_run = os.path.relpath(run.path / "train" / "final", tmp_path)
    run.mark_done("train", 1.0, {"model": rel_into_run, "base": str(outside), "packages": [
        str(run.path / "train" / "final")], "objective": "sft"})  # fmt: skip
    summary = run.stages()["train"]["summary"]
    assert summary == {"model": "train/final", "base": str(outside),
                       "packages": ["train/final"], "objective": "sft"}  # fmt: skip
    assert run.resolve(summary["model"]) == run.path / "train" / "final"
    assert to_stored(outside, run.path) == str(outside.resolve())
    assert from_stored(str(outside), run.path) == outside
    run.release()


def test_mark_stale_makes_later_stages_not_done(tmp_path):
    run = _run(tmp_path / "runs")
    for name in ("train", "eval", "export"):
        run.mark_done(name, 0.0, {})
    assert run.mark_stale(["export", "bench"], "eval re-ran after it") == ["export"]
    assert run.done("eval") and not run.done("export")
    assert run.stages()["export"]["stale"] == "eval re-ran after it"
    run.mark_done("export", 0.0, {})  # redone: fresh again
    assert run.done("export")
    run.release()


def test_resume_with_changed_eval_keys_is_allowed_and_noted(tmp_path):
    run = _run(tmp_path / "runs")
    run.mark_done("train", 0.0, {})
    run.release()
    again = RunDir(_cfg(tmp_path / "runs", "r", "eval.limit=3", "bench.repetitions=1"), resume=True)
    assert again.changed_sections == {"eval", "bench"}
    again.release()
    with pytest.raises(StageError, match="train.lr"):
        RunDir(_cfg(tmp_path / "runs", "r", "train.lr=0.1"), resume=True)
