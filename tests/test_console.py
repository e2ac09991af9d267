"""The terminal: log lines print above progress bars (never inside), known third-party noise is dropped
while everything else still shows, and each pipeline stage gets one counted, timed line."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from tqdm import tqdm

from edge_distill import console


@pytest.fixture
def terminal():
    """setup_logging on a clean root logger; everything it changed is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    lib = logging.getLogger("transformers")
    lib_saved = (lib.handlers[:], [h.filters[:] for h in lib.handlers], lib.propagate)
    root.handlers = []
    with warnings.catch_warnings():
        console.setup_logging(logging.INFO)
        yield
    logging.captureWarnings(False)
    for h in root.handlers + saved[0]:
        h.filters = [f for f in h.filters if not isinstance(f, console._NoiseFilter)]
    root.handlers, root.level = saved
    lib.__dict__.pop("addHandler", None)
    lib.__dict__.pop("_edge_distill_routed", None)
    for h, filters in zip(lib_saved[0], lib_saved[1], strict=True):
        h.filters = filters
    lib.handlers, lib.propagate = lib_saved[0], lib_saved[2]


def _lines(err: str) -> list[str]:
    """What a terminal shows per line: the text after the last carriage return."""
    return [line.rsplit("\r", 1)[-1] for line in err.split("\n")]


def test_log_lines_print_above_a_running_bar(terminal, capsys) -> None:
    with tqdm(total=3, desc="busy", file=None) as bar:
        bar.update(1)
        logging.getLogger("edge_distill.test").info("stage line while a bar runs")
        bar.update(2)
    shown = _lines(capsys.readouterr().err)
    line = next(x for x in shown if "stage line while a bar runs" in x)
    assert "busy" not in line and line.endswith("INFO edge_distill.test: stage line while a bar runs")


@pytest.mark.parametrize("propagate", [False, True])
def test_known_noise_is_dropped_and_the_rest_shows(terminal, capsys, propagate) -> None:
    """transformers' logger does not propagate unless someone (a test, an app) turned it on: once either way."""
    from transformers.utils import logging as hf_logging

    logging.getLogger("transformers").propagate = propagate

    child = hf_logging.get_logger("transformers.utils.generic")
    child.warning("`past_key_values`/`cache_params` are deprecated. Use `cache` instead.")
    child.warning("a transformers warning worth reading")
    warnings.warn(
        "`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1
    )
    warnings.warn("a deprecation that is news", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "cache_params" not in err and "is_gradient_checkpointing" not in err
    shown = [x for x in _lines(err) if "worth reading" in x]
    # once, through our handler and format (not transformers' own "[transformers] ..." handler)
    assert len(shown) == 1 and "WARNING transformers.utils.generic: a transformers warning" in shown[0]
    assert "FutureWarning: a deprecation that is news" in err


def test_each_stage_gets_one_counted_timed_line(tmp_path: Path, caplog) -> None:
    from edge_distill.config import load_config
    from edge_distill.pipeline import run_pipeline

    cfg = load_config(None, ["name=stages", f"runs_dir={tmp_path}", "data.dev_size=10"])
    with caplog.at_level(logging.INFO, logger="edge_distill.pipeline"):
        run_pipeline(cfg, until="data")
    msgs = [r.getMessage() for r in caplog.records if r.name == "edge_distill.pipeline"]
    assert "[1/6] data: started" in msgs
    done = [m for m in msgs if m.startswith("[1/6] data: done in ")]
    assert len(done) == 1 and done[0].endswith(" s")
