"""Hostile run directories and output paths: the host never writes through a planted link, and an
output path never replaces a directory that is not an edge-distill artifact of the same kind.

A run directory can come from someone else (copied, unpacked, shared): every link below it is a trap.
Each case plants one, runs the host's own write path, and checks that the link's target is untouched
and the refusal (if any) is one message naming the link.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from edge_distill.config import load_config
from edge_distill.errors import EdgeDistillError, StorageError
from edge_distill.io import ArtifactKind, append_jsonl, atomic_path, make_dirs, write_json, write_text
from edge_distill.rundir import RunDir
from edge_distill.runlock import LOCK_NAME

TARGET_TEXT = "precious: must stay exactly like this\n"


@pytest.fixture
def trap(tmp_path: Path) -> Path:
    """A file and a directory outside the run that planted links point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text(TARGET_TEXT)
    return outside


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (outside / "precious.txt").read_text() == TARGET_TEXT


def _run(tmp_path: Path, name: str = "r") -> Path:
    """A finished-looking run directory (created and released by the host itself)."""
    RunDir(load_config(None, [f"runs_dir={tmp_path / 'runs'}", f"name={name}"])).release()
    return tmp_path / "runs" / name


def test_a_planted_lock_link_is_not_followed(tmp_path: Path, trap: Path) -> None:
    run = _run(tmp_path)
    (run / LOCK_NAME).unlink()
    (run / LOCK_NAME).symlink_to(trap / "precious.txt")
    with pytest.raises(StorageError, match="symbolic link") as e:
        RunDir(load_config(None, [f"runs_dir={tmp_path / 'runs'}", "name=r"]), resume=True)
    assert LOCK_NAME in str(e.value)
    _untouched(trap)


def test_teach_refuses_a_planted_lock_with_one_message(tmp_path: Path, trap: Path) -> None:
    """The issue's attack through the CLI: `teach` used to truncate and overwrite the link's target."""
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    (run / LOCK_NAME).symlink_to(trap / "precious.txt")
    res = CliRunner().invoke(main, ["teach", f"runs_dir={tmp_path / 'runs'}", "name=t", "data.limit_train=2"])
    assert res.exit_code == 2 and res.output.count("error:") == 1 and "symbolic link" in res.output, (
        res.output
    )
    _untouched(trap)


def test_a_planted_metrics_link_is_not_appended_to(tmp_path: Path, trap: Path) -> None:
    run_dir = _run(tmp_path)
    (run_dir / "metrics.jsonl").symlink_to(trap / "precious.txt")
    run = RunDir(load_config(None, [f"runs_dir={tmp_path / 'runs'}", "name=r"]), resume=True)
    try:
        with pytest.raises(StorageError, match="symbolic link"):
            run.metric("teach", samples=1)
    finally:
        run.release()
    _untouched(trap)


def test_a_fifo_is_not_opened_for_appending(tmp_path: Path) -> None:
    """A planted FIFO would block an O_WRONLY open forever; it is refused at once."""
    os.mkfifo(tmp_path / "metrics.jsonl")
    with pytest.raises(StorageError, match="not a regular file"):
        append_jsonl(tmp_path / "metrics.jsonl", {"x": 1})


@pytest.mark.parametrize("planted", ["teach", "train/fdd"])
def test_a_planted_directory_link_is_not_written_into(tmp_path: Path, trap: Path, planted: str) -> None:
    run_dir = _run(tmp_path)
    link = run_dir / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(trap, target_is_directory=True)
    run = RunDir(load_config(None, [f"runs_dir={tmp_path / 'runs'}", "name=r"]), resume=True)
    try:
        for write in (
            lambda: run.stage_dir("teach") if planted == "teach" else make_dirs(link / "step_0"),
            lambda: write_json(link / "stats.json", {"a": 1}),
            lambda: write_text(link / "precious.txt", "pwned"),
            lambda: append_jsonl(link / "precious.txt", {"a": 1}),
        ):
            with pytest.raises(StorageError, match="symbolic link or not a directory") as e:
                write()
            assert planted in str(e.value)
    finally:
        run.release()
    _untouched(trap)


@pytest.mark.parametrize("name", ["config.yaml", "stages.json"])
def test_an_atomic_write_replaces_a_planted_link_not_its_target(
    tmp_path: Path, trap: Path, name: str
) -> None:
    run_dir = _run(tmp_path)
    (run_dir / name).unlink(missing_ok=True)
    (run_dir / name).symlink_to(trap / "precious.txt")
    write_json(run_dir / name, {"stage": "ok"})
    assert not (run_dir / name).is_symlink() and "stage" in (run_dir / name).read_text()
    _untouched(trap)


def test_links_outside_a_run_directory_are_the_users_business(tmp_path: Path, trap: Path) -> None:
    """Only run directories are confined: a user's own link on the way to an output is followed."""
    (tmp_path / "results").symlink_to(trap, target_is_directory=True)
    write_json(tmp_path / "results" / "eval.json", {"a": 1})
    assert (trap / "eval.json").is_file()


# --------------------------------------------------------------------------- replacing directories
def _user_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    (models / "llama").mkdir(parents=True)
    (models / "llama" / "weights.bin").write_text("7 GB of someone's model")
    (models / "notes.txt").write_text("keep")
    return models


def _intact(models: Path) -> None:
    assert (models / "llama" / "weights.bin").read_text() == "7 GB of someone's model"
    assert (models / "notes.txt").read_text() == "keep"


def test_a_file_never_replaces_a_directory(tmp_path: Path) -> None:
    models = _user_dir(tmp_path)
    with pytest.raises(
        StorageError, match=r"a directory holding llama, notes.txt is there; nothing was changed"
    ):
        write_text(models, "an artifact")
    _intact(models)


def test_a_directory_artifact_replaces_only_its_own_kind(tmp_path: Path) -> None:
    kind = ArtifactKind("widget", lambda p: (p / "widget.json").is_file(), needs_consent=True)
    models = _user_dir(tmp_path)
    with pytest.raises(
        StorageError, match=r"it is a directory holding llama, notes.txt, not an edge-distill widget"
    ):
        with atomic_path(models, kind=kind) as tmp:
            tmp.mkdir()
    _intact(models)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no temporary left behind

    old = tmp_path / "old"
    old.mkdir()
    (old / "widget.json").write_text("{}")
    with pytest.raises(StorageError, match="pass --overwrite"):
        with atomic_path(old, kind=kind) as tmp:
            tmp.mkdir()
    with atomic_path(old, kind=kind, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "widget.json").write_text('{"new": 1}')
    assert (old / "widget.json").read_text() == '{"new": 1}'

    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_path(empty, kind=kind) as tmp:  # nothing to lose
        tmp.mkdir()
        (tmp / "widget.json").write_text("{}")
    assert (empty / "widget.json").is_file()


def test_export_out_refuses_an_existing_directory_that_is_not_a_package(tmp_path: Path) -> None:
    """`edge-distill export SRC --out ~/models` used to delete every file in ~/models."""
    pytest.importorskip("torch")
    from tests.tiny_models import build_tiny_llama

    src = build_tiny_llama(tmp_path / "tiny", vocab_size=384)
    models = _user_dir(tmp_path)
    args = ["export", str(src), "--format", "gguf", "--quant", "f16", "--out", str(models)]
    for extra in ([], ["--overwrite"]):  # --overwrite replaces packages only
        res = CliRunner().invoke(main, [*args, *extra])
        assert res.exit_code == 2 and res.output.count("error:") == 1, res.output
        assert "not an edge-distill package" in res.output and "llama, notes.txt" in res.output
        _intact(models)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "tiny"]


@pytest.mark.slow
def test_an_existing_package_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from exporters import export_model
    from tests.tiny_models import build_tiny_llama

    src = build_tiny_llama(tmp_path / "tiny", vocab_size=384)
    out = tmp_path / "pkg"
    kw = {"parity_prompts": 1, "check_transformers": False}
    export_model(src, out, "gguf", "f16", **kw)
    manifest = (out / "manifest.json").read_text()
    with pytest.raises(EdgeDistillError, match="existing edge-distill package; pass --overwrite"):
        export_model(src, out, "gguf", "f16", **kw)
    assert (out / "manifest.json").read_text() == manifest
    export_model(src, out, "gguf", "f16", overwrite=True, **kw)
    assert (out / "manifest.json").read_text() != manifest  # a new export (new timestamp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "tiny"]
