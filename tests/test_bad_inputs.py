"""Bad-input matrix (issue 10 parts 2, 4a, 5): every row drives the real CLI and must end in exit 2 with
one short message naming the file (and line or key), no traceback, nothing deleted that existed before,
no temporary left over and no stage recorded as finished that did not finish.

Each row was reproduced on main as a traceback (exit 1), a multi-minute hang or lost data."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from edge_distill.config import load_config
from edge_distill.rundir import RunDir
from edge_distill.runlock import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
MAX_MESSAGE = 2000  # one message, not an echo of the input (a wrong-typed alias bomb printed 52 MB)


@dataclass
class Row:
    args: list[str]
    expect: list[str]  # substrings of the message: the file, line or key, and the reason
    run_dir: Path | None = None  # where a stage failed ...
    finished: list[str] = field(default_factory=list)  # ... and the stages recorded there afterwards


def _problems(path: Path, n: int = 4, **extra: object) -> Path:
    rows = [
        {"question": f"Tom has {i} apples and buys 2. How many now?", "answer": f"#### {i + 2}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps({**r, **extra}) + "\n" for r in rows))
    return path


def _run_args(tmp: Path, *extra: str) -> list[str]:
    return ["run", f"runs_dir={tmp / 'runs'}", "name=r", "teacher.cache=null", "data.dev_size=1", *extra]


def _make_run(runs: Path, name: str) -> Path:
    run = RunDir(load_config(None, [f"runs_dir={runs}", f"name={name}"]))
    run.release()
    (run.path / "result.txt").write_text("a finished result")
    return run.path


# ---------------------------------------------------------------------------------------------- rows
def name_dotdot_overwrite(tmp: Path) -> Row:  # emptied the project directory on main
    (tmp / "project.py").write_text("print('my code')")
    _make_run(tmp / "runs", "a")
    return Row(["run", "runs_dir=runs", "name=..", "--overwrite"], ["name:", "one directory name", "'..'"])


def name_dot_overwrite(tmp: Path) -> Row:  # deleted every run on main
    _make_run(tmp / "runs", "a")
    return Row(["run", "runs_dir=runs", "name=.", "--overwrite"], ["name:", "one directory name"])


def name_absolute(tmp: Path) -> Row:  # resolved outside runs_dir on main
    (tmp / "victim").mkdir()
    (tmp / "victim" / "config.yaml").write_text("name: victim\n")
    return Row(["run", "runs_dir=runs", f"name={tmp / 'victim'}", "--overwrite"], ["name:", "/victim'"])


def overwrite_not_a_run(tmp: Path) -> Row:
    (tmp / "runs" / "x").mkdir(parents=True)
    (tmp / "runs" / "x" / "notes.txt").write_text("mine")
    return Row(
        ["run", "runs_dir=runs", "name=x", "--overwrite"],
        ["runs/x", "not an edge-distill run directory", "nothing was changed"],
    )


def overwrite_symlink_out_of_runs_dir(tmp: Path) -> Row:
    real = _make_run(tmp / "elsewhere", "x")
    (tmp / "runs").mkdir()
    (tmp / "runs" / "x").symlink_to(real)
    return Row(
        ["run", "runs_dir=runs", "name=x", "--overwrite"], ["runs/x", "--overwrite refused", str(real)]
    )


_BOMB = """name: bomb
teacher:
  http:
    extra_body:
      a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
      h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
      i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
    timeout_s: *i
"""


def yaml_alias_bomb(tmp: Path) -> Row:  # >120 s and 3.1 GB on main; as a wrong-typed value a 52 MB error
    cfg = tmp / "bomb.yaml"
    cfg.write_text(_BOMB)
    return Row(["run", str(cfg)], ["bomb.yaml", "line 5", "column 10", "anchor &a is not allowed"])


def yaml_alias_in_override(tmp: Path) -> Row:
    return Row(["run", "teacher.http.extra_body={a: &a [1], b: *a}"], ["override", "teacher.http.extra_body"])


def huge_wrong_typed_value(tmp: Path) -> Row:
    cfg = tmp / "big.yaml"
    cfg.write_text(f"teacher:\n  http:\n    timeout_s: '{'9x' * 250_000}'\n")
    return Row(["run", str(cfg)], ["big.yaml", "teacher.http.timeout_s", "valid number", "x9..."])


def config_too_big(tmp: Path) -> Row:
    cfg = tmp / "huge.yaml"
    cfg.write_text("# padding\n" * 200_000)
    return Row(["run", str(cfg)], ["huge.yaml", "larger than 1024 KiB"])


def config_not_utf8(tmp: Path) -> Row:
    cfg = tmp / "latin1.yaml"
    cfg.write_bytes("name: r\n# caf\xe9\n".encode("latin-1"))
    return Row(["run", str(cfg)], ["latin1.yaml line 2", "not valid UTF-8", "column 6"])


def data_not_utf8(tmp: Path) -> Row:
    data = _problems(tmp / "train.jsonl")
    data.write_bytes(data.read_bytes() + b'{"question": "\xff", "answer": "#### 1"}\n')
    return Row(
        _run_args(tmp, f"data.train={data}"), ["train.jsonl line 5", "not valid UTF-8"], tmp / "runs" / "r"
    )


def data_deep_json(tmp: Path) -> Row:
    data = _problems(tmp / "train.jsonl")
    with data.open("a") as f:
        f.write("[" * 100_000 + "\n")
    return Row(
        _run_args(tmp, f"data.train={data}"), ["train.jsonl:5:", "nested too deeply"], tmp / "runs" / "r"
    )


def gold_5000_digits(tmp: Path) -> Row:
    data = _problems(tmp / "train.jsonl")
    with data.open("a") as f:
        f.write(json.dumps({"question": "How many?", "answer": "#### " + "7" * 5000}) + "\n")
    return Row(_run_args(tmp, f"data.train={data}"), ["train.jsonl:5:", "field 'answer'"], tmp / "runs" / "r")


def bare_gold_5000_digits(tmp: Path) -> Row:
    data = tmp / "bare.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(3)))
    with data.open("a") as f:
        f.write(json.dumps({"question": "How many?", "answer": "7" * 5000}) + "\n")
        f.write('{"question": "How many?", "answer": ' + "7" * 5000 + "}\n")  # a JSON number, too
    return Row(
        _run_args(tmp, f"data.train={data}", "data.format=jsonl"),
        ["bare.jsonl:4:", "field 'answer' is not a number"],
        tmp / "runs" / "r",
    )


def bare_gold_5000_digit_json_number(tmp: Path) -> Row:
    data = tmp / "bare.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(3)))
    with data.open("a") as f:
        f.write('{"question": "How many?", "answer": ' + "7" * 5000 + "}\n")
    return Row(
        _run_args(tmp, f"data.train={data}", "data.format=jsonl"),
        ["bare.jsonl:4:", "invalid JSON", "4300 digits"],
        tmp / "runs" / "r",
    )


def recorded_teacher_not_utf8(tmp: Path) -> Row:
    data = _problems(tmp / "train.jsonl")
    rec = tmp / "recorded.jsonl"
    rec.write_bytes(b'{"id": "x", "strategy": "cot", "rationale": "caf\xe9"}\n')
    return Row(
        _run_args(tmp, f"data.train={data}", f"teacher.model={rec}"),
        ["recorded.jsonl line 1", "not valid UTF-8", "column 49"],
        tmp / "runs" / "r",
        ["data"],
    )


def recorded_teacher_deep_json(tmp: Path) -> Row:
    data = _problems(tmp / "train.jsonl")
    rec = tmp / "recorded.jsonl"
    rec.write_text(
        json.dumps({"id": "x", "strategy": "cot", "rationale": "7"}) + "\n" + '{"id": ' * 100_000 + "\n"
    )
    return Row(
        _run_args(tmp, f"data.train={data}", f"teacher.model={rec}"),
        ["recorded.jsonl:2:", "nested too deeply"],
        tmp / "runs" / "r",
        ["data"],
    )


def runs_dir_uncreatable(tmp: Path) -> Row:
    (tmp / "afile").write_text("a file, not a directory")
    return Row(["run", f"runs_dir={tmp / 'afile' / 'runs'}"], ["runs_dir:", "afile/runs", "Not a directory"])


def damaged_stages_file(tmp: Path) -> Row:
    data = _problems(tmp / "train.jsonl")
    run = _make_run(tmp / "runs", "r")
    (run / "stages.json").write_text('{"data": {"finished": "2026-')
    return Row(_run_args(tmp, f"data.train={data}", "--resume"), ["stages.json", "damaged", "--overwrite"])


ROWS: list[Callable[[Path], Row]] = [
    name_dotdot_overwrite,
    name_dot_overwrite,
    name_absolute,
    overwrite_not_a_run,
    overwrite_symlink_out_of_runs_dir,
    yaml_alias_bomb,
    yaml_alias_in_override,
    huge_wrong_typed_value,
    config_too_big,
    config_not_utf8,
    data_not_utf8,
    data_deep_json,
    bare_gold_5000_digit_json_number,
    recorded_teacher_not_utf8,
    recorded_teacher_deep_json,
    runs_dir_uncreatable,
    damaged_stages_file,
]


def _snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):  # symlinks are not followed: their targets are checked directly
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


_REWRITTEN = ("config.yaml", LOCK_NAME)


def assert_no_partial_artifact(root: Path) -> None:
    leftovers = [str(p) for p in root.rglob("*.tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.parametrize("make_row", ROWS, ids=[r.__name__ for r in ROWS])
def test_bad_input_is_one_message_exit_2_and_nothing_lost(tmp_path, monkeypatch, make_row):
    monkeypatch.chdir(tmp_path)
    row = make_row(tmp_path)
    before = _snapshot(tmp_path)
    t0 = time.monotonic()
    res = CliRunner().invoke(main, row.args)
    wall = time.monotonic() - t0
    out = res.output
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.exception, out[:2000])
    assert out.startswith("error: ") and "Traceback" not in out
    for text in row.expect:
        assert text in out, f"{text!r} not in message: {out[:2000]}"
    assert len(out) < MAX_MESSAGE, f"{len(out)} characters of message"
    assert wall < 30, f"took {wall:.0f} s"
    after = _snapshot(tmp_path)
    # a run's config.yaml is rewritten and its lock file records the last holder: neither is user data
    lost = [p for p, data in before.items() if after.get(p) != data and not p.endswith(_REWRITTEN)]
    assert not lost, f"changed or deleted: {lost}"
    assert_no_partial_artifact(tmp_path)
    if row.run_dir is not None:
        stages = row.run_dir / "stages.json"
        recorded = sorted(json.loads(stages.read_text())) if stages.exists() else []
        assert recorded == row.finished


# ---------------------------------------------------------------------------------------------- disk full
def _full_disk_row(tmp_path: Path, runs: Path) -> list[str]:
    long_q = "A farmer has {0} sheep and buys two more at the market in town. " * 8
    data = tmp_path / "big.jsonl"
    data.write_text(
        "".join(json.dumps({"question": long_q.format(i), "answer": f"#### {i}"}) + "\n" for i in range(400))
    )
    return [
        "run",
        f"runs_dir={runs}",
        "name=r",
        "teacher.cache=null",
        "data.dev_size=1",
        f"data.train={data}",
    ]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB filesystem (root only): the data stage's ~200 KB write hits ENOSPC."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; test_file_size_limit covers the same path unprivileged")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_one_message_and_leaves_no_temporary(tmp_path, tiny_tmpfs):
    res = CliRunner().invoke(main, _full_disk_row(tmp_path, tiny_tmpfs / "runs"))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "data/train.jsonl" in res.output and "No space left on device" in res.output, res.output
    assert "Traceback" not in res.output
    run = tiny_tmpfs / "runs" / "r"
    assert not (run / "stages.json").exists() and not (run / "data" / "train.jsonl").exists()
    assert_no_partial_artifact(tiny_tmpfs)
    assert (
        run / "config.yaml"
    ).is_file()  # a rerun on a disk with room just starts again (no stage finished)


def _cli_process(args: list[str], preexec_fn: Callable[[], None] | None = None, **env: str):
    """`python -m edge_distill.cli ARGS` as a real process (what a shell would run), stderr captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "edge_distill.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=preexec_fn,
        timeout=120,
    )


def test_file_size_limit_is_one_message_and_leaves_no_temporary(tmp_path):
    """RLIMIT_FSIZE in a real subprocess: the write fails with EFBIG (Python ignores SIGXFSZ)."""
    runs = tmp_path / "runs"
    args = _full_disk_row(tmp_path, runs)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    done = _cli_process(args, preexec_fn=limit)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "data/train.jsonl" in done.stderr and "File too large" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not (runs / "r" / "stages.json").exists()
    assert_no_partial_artifact(runs)


# ---------------------------------------------------------------------------------------------- teacher cache
def _damaged_cache(path: Path, how: str) -> Path:
    if how == "garbage":
        path.write_bytes(b"this is not a database\n" * 200)
    else:  # a real cache file cut short, as by a crash of another tool or a full disk
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, text TEXT)")
        db.executemany("INSERT INTO completions VALUES (?, ?)", [(str(i), "x" * 500) for i in range(200)])
        db.commit()
        db.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_damaged_teacher_cache_is_no_traceback(tmp_path, how):
    """sec-http owns the cache (warn and run uncached); the CLI must not turn its errors into a traceback.

    The server is a closed loopback port, so the run ends either in the cache message or, once the
    cache is skipped, in the unreachable-teacher message: exit 2 both ways, never exit 1."""
    cache = _damaged_cache(tmp_path / "teacher.sqlite", how)
    data = _problems(tmp_path / "train.jsonl")
    args = [
        "teach",
        f"runs_dir={tmp_path / 'runs'}",
        "name=r",
        f"data.train={data}",
        "data.dev_size=1",
        "teacher.backend=http",
        "teacher.model=m",
        "teacher.http.base_url=http://127.0.0.1:9/v1",
        "teacher.http.max_retries=0",
        f"teacher.cache={cache}",
    ]
    done = _cli_process(args, OPENAI_API_KEY="test")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "teacher cache" in done.stderr or str(cache) in done.stderr, done.stderr[-3000:]
    stages = tmp_path / "runs" / "r" / "stages.json"
    assert sorted(json.loads(stages.read_text())) == ["data"]


def test_device_profile_yaml_shares_the_config_reader(tmp_path):
    """Profiles are user YAML too (~/.config/edge-distill/profiles): same alias refusal, same clipping."""
    from device_profiles.loader import load_profile_file
    from edge_distill.errors import ConfigError

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_BOMB)
    t0 = time.monotonic()
    with pytest.raises(
        ConfigError, match=r"device profile .*bomb\.yaml: not valid YAML \(line 5, column 10\)"
    ):
        load_profile_file(bomb)
    assert time.monotonic() - t0 < 5
    big = tmp_path / "big.yaml"
    big.write_text(f"threads: '{'x' * 500_000}'\n")
    with pytest.raises(ConfigError) as e:
        load_profile_file(big)
    assert "threads" in str(e.value) and len(str(e.value)) < MAX_MESSAGE


def test_an_artifact_never_replaces_the_working_or_home_directory(tmp_path, monkeypatch):
    """atomic_path replaces an existing directory wholesale (a re-exported package): never `.` or `~`."""
    from edge_distill.errors import StorageError
    from edge_distill.io import write_text

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "code.py").write_text("keep")
    monkeypatch.chdir(project / "src")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for target in (project, project / "src", tmp_path / "home", Path("/")):
        with pytest.raises(StorageError, match="refusing to replace"):
            write_text(target, "an artifact")
    assert (project / "src" / "code.py").read_text() == "keep"
    assert_no_partial_artifact(tmp_path)
    old = tmp_path / "old-package"  # an ordinary earlier artifact is still replaced
    old.mkdir()
    write_text(old, "new")
    assert old.read_text() == "new"


@pytest.mark.parametrize("make_row", [gold_5000_digits, bare_gold_5000_digits], ids=lambda f: f.__name__)
def test_gold_that_is_not_a_number_is_skipped_and_counted(tmp_path: Path, make_row, caplog) -> None:
    """A gold answer that is no number (5,000 digits) is skipped and counted with one warning naming the file
    and the row, never a stop and never a traceback (issue 23: published files hold such rows)."""
    import logging

    from edge_distill.data import load_problems

    row = make_row(tmp_path)
    data = next(a.split("=", 1)[1] for a in row.args if a.startswith("data.train="))
    lines = Path(data).read_text().splitlines(keepends=True)
    Path(data).write_text(
        "".join(ln for ln in lines if '"answer": 7777' not in ln)
    )  # JSON numbers: invalid JSON
    with caplog.at_level(logging.WARNING, logger="edge_distill.data"):
        loaded = load_problems(data, fmt="jsonl")
    assert sum(loaded.skipped_reasons.values()) >= 1 and all(
        "not a number" in r for r in loaded.skipped_reasons
    )
    assert all(len(p.answer) < 100 for p in loaded)
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and Path(data).name in warnings[0]
