"""train.report_to: validated against transformers' trackers, a missing package is a clear error, and
TensorBoard (when installed) gets the run under train/tensorboard; the run's own train_metrics.jsonl."""

from __future__ import annotations

import importlib.util
import json

import pytest

from edge_distill.config import REPORT_TO, load_config
from edge_distill.errors import ConfigError
from edge_distill.objectives.examples import Example
from edge_distill.training import train

FAST = {"logging_steps": 1, "warmup_steps": 0, "save_steps": 1000, "group_by_length": False}


def _examples(tok) -> list[Example]:
    out = []
    for q, a in (("What is 2+3?", " 5"), ("What is 4+4?", " 8")):
        p = tok(q, add_special_tokens=False)["input_ids"]
        r = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append(Example(p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))
    return out


def test_allowed_values_are_transformers_trackers() -> None:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(REPORT_TO) == set(INTEGRATION_TO_CALLBACK) | {"none", "all"}


def test_unknown_tracker_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.report_to=[tensorbord]"])
    assert "train.report_to" in str(err.value) and "tensorboard, trackio, wandb" in str(err.value)
    assert load_config(None, ["train.report_to=wandb"]).train.report_to == ["wandb"]
    assert load_config(None, []).train.report_to == []
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        load_config(None, ["train.report_to=[none, wandb]"])


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_tensorboard_gets_the_run_or_says_what_is_missing(tiny_model_dir, tmp_path) -> None:
    from edge_distill.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    out = tmp_path / "train"
    kwargs = {**FAST, "max_steps": 3, "batch_size": 2, "lr": 1e-2, "report_to": ["tensorboard"]}
    if not (_installed("tensorboard") or _installed("tensorboardX")):
        with pytest.raises(ConfigError, match=r"tensorboard is not installed \(pip install tensorboard\)"):
            train(tiny_model_dir, _examples(tok), out, **kwargs)
        return
    train(tiny_model_dir, _examples(tok), out, **kwargs)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    rows = [json.loads(line) for line in (out / "train_metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(isinstance(r["lr"], float) and r["epoch"] > 0 for r in steps)
