"""CLI error paths: one clear message, non-zero exit, nothing half-written."""

from __future__ import annotations

from click.testing import CliRunner

from edge_distill.cli import main


def test_init_writes_loadable_config(tmp_path):
    runner = CliRunner()
    path = tmp_path / "cfg.yaml"
    res = runner.invoke(main, ["init", str(path)])
    assert res.exit_code == 0, res.output
    assert path.read_text().startswith("# edge-distill config")
    res = runner.invoke(main, ["init", str(path)])
    assert res.exit_code == 2 and "--force" in res.output


def test_bad_config_key_is_one_clear_message_and_writes_nothing(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"name: bad\nruns_dir: {tmp_path / 'runs'}\ntrain:\n  epochz: 3\n")
    res = CliRunner().invoke(main, ["run", str(cfg)])
    assert res.exit_code == 2
    assert "train.epochz" in res.output and "unknown key" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()


def test_bad_override_value(tmp_path):
    res = CliRunner().invoke(main, ["run", f"runs_dir={tmp_path}", "train.finetune=qlora"])
    assert res.exit_code == 2
    assert "train.finetune" in res.output and "'lora'" in res.output and "'full'" in res.output
    assert not any(tmp_path.iterdir())
