"""`edge-distill run` end to end on the tiny model: artifacts, resume after a kill, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_distill.cli import main

pytestmark = pytest.mark.slow


def _overrides(tmp_path: Path, model: Path, **extra: object) -> list[str]:
    base = {
        "name": "tiny",
        "runs_dir": str(tmp_path / "runs"),
        "student.model": str(model),
        "data.limit_train": 10,
        "data.dev_size": 4,
        "teacher.cache": "null",
        "train.max_steps": 4,
        "train.batch_size": 4,
        "train.save_steps": 2,
        "train.lr": 3e-3,
        "eval.max_new_tokens": 12,
        "eval.batch_size": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _invoke(args: list[str]):
    res = CliRunner().invoke(main, args)
    return res


def test_run_end_to_end_writes_every_artifact_and_changes_the_student(tmp_path, tiny_model_dir):
    res = _invoke(["run", *_overrides(tmp_path, tiny_model_dir)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "tiny"
    for rel in [
        "config.yaml",
        "data/train.jsonl",
        "data/dev.jsonl",
        "teach/samples.jsonl",
        "teach/stats.json",
        "filter/train.jsonl",
        "train/final/adapter_config.json",
        "eval/dev.json",
        "eval/dev_predictions.jsonl",
        "report.md",
        "stages.json",
        "metrics.jsonl",
    ]:
        assert (run / rel).exists(), rel
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["data", "teach", "filter", "train", "eval", "report"]
    dev = json.loads((run / "eval" / "dev.json").read_text())
    assert dev["n"] == 4
    assert not (run / "data" / "test.jsonl").exists()  # test is never materialized for selection
    # paths the run records into itself are relative to it (a moved or copied run stays whole)
    assert dev["model"] == "../train/final"
    assert json.loads((run / "train" / "train_result.json").read_text())["final_dir"] == "final"
    for f in [*run.glob("*.json"), *run.glob("*/*.json"), *run.glob("*.jsonl")]:
        assert str(run) not in f.read_text() and "runs/tiny" not in f.read_text(), f

    # the trained adapter really moved the weights: LoRA B matrices start at zero
    from safetensors.torch import load_file

    weights = load_file(str(run / "train" / "final" / "adapter_model.safetensors"))
    assert any(float(t.abs().max()) > 0 for k, t in weights.items() if "lora_B" in k)

    # a second plain `run` refuses to clobber; --resume skips everything but the report
    res = _invoke(["run", *_overrides(tmp_path, tiny_model_dir)])
    assert res.exit_code == 2 and "--resume" in res.output
    before = (run / "teach" / "samples.jsonl").stat().st_mtime_ns
    res = _invoke(["run", "--resume", *_overrides(tmp_path, tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert (run / "teach" / "samples.jsonl").stat().st_mtime_ns == before
    assert json.loads((run / "stages.json").read_text())["train"] == stages["train"]

    # resuming under a changed config is refused and names the key
    res = _invoke(["run", "--resume", *_overrides(tmp_path, tiny_model_dir, **{"train.lr": 1e-3})])
    assert res.exit_code == 2 and "train.lr" in res.output


def test_kill_during_training_then_resume_continues_from_checkpoint(tmp_path, tiny_model_dir):
    args = _overrides(tmp_path, tiny_model_dir, **{"train.max_steps": 40, "train.save_steps": 2})
    run = tmp_path / "runs" / "tiny"
    cmd = [sys.executable, "-m", "edge_distill.cli", "run", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = run / "train" / "checkpoints"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if ckpts.is_dir() and any(p.name == "checkpoint-4" for p in ckpts.iterdir()):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed: raise max_steps"
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stages = json.loads((run / "stages.json").read_text())
    assert "train" not in stages and {"data", "teach", "filter"} <= set(stages)
    assert not (run / "train" / "final").exists()
    teach_mtime = (run / "teach" / "samples.jsonl").stat().st_mtime_ns

    res = _invoke(["run", "--resume", *args])
    assert res.exit_code == 0, res.output
    result = json.loads((run / "train" / "train_result.json").read_text())
    assert result["resumed_from_step"] >= 4
    assert result["steps"] == 40
    assert (run / "teach" / "samples.jsonl").stat().st_mtime_ns == teach_mtime
    assert json.loads((run / "stages.json").read_text())["teach"] == stages["teach"]
    assert (run / "train" / "final" / "adapter_config.json").is_file()


def test_malformed_jsonl_line_is_named_and_nothing_is_written(tmp_path, tiny_model_dir):
    bad = tmp_path / "train.jsonl"
    good = json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"})
    bad.write_text(good + "\n" + '{"question": "broken", "answer": \n' + good + "\n")
    res = _invoke(["run", *_overrides(tmp_path, tiny_model_dir, **{"data.train": str(bad)})])
    assert res.exit_code == 2
    assert f"{bad}:2" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs" / "tiny" / "data" / "train.jsonl").exists()


def test_missing_model_path_is_one_message(tmp_path):
    missing = tmp_path / "no-such-model"
    res = _invoke(["run", *_overrides(tmp_path, missing)])
    assert res.exit_code == 2
    assert str(missing) in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs" / "tiny" / "train" / "final").exists()
