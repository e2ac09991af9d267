"""The run directory: resolved config, stage bookkeeping, metrics log.

A stage is finished when it is recorded in `stages.json`, which happens only after all of its outputs
were written atomically. `--resume` skips recorded stages; a config that changed since the run started
is refused rather than silently mixed with old artifacts. A run directory with no finished stage (its
first stage failed) is simply started again.

Safety (issue 10): `name` is one path component (checked in the config), a run directory is locked by
one process at a time (`runlock`), and `--overwrite` deletes only a directory that is an edge-distill
run (its config.yaml names it) and that is, after resolving symlinks, directly inside `runs_dir`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from edge_distill.config import MAX_CONFIG_BYTES, Config, load_yaml_text
from edge_distill.errors import EdgeDistillError, StageError, StorageError
from edge_distill.io import (
    append_jsonl,
    confine,
    loads_json,
    make_dirs,
    read_utf8,
    storage_error,
    write_json,
    write_text,
)
from edge_distill.runlock import LOCK_NAME, RunLock

log = logging.getLogger(__name__)

# Config sections that may change between a run and its resume: they do not touch the trained model, so a
# change re-runs only the stage that reads them (and marks the stages after it stale), never the training.
STAGE_OF_SECTION = {"eval": "eval", "export": "export", "bench": "bench"}
_RESUME_TOLERANT = set(STAGE_OF_SECTION)


def to_stored(path: str | Path, root: str | Path) -> str:
    """A path as a run directory records it: relative to `root` when it lies inside it (POSIX separators),
    absolute otherwise. A copied run (`cp -r runs/a runs/b`) then points at its own files, from any cwd."""
    p, r = Path(path).resolve(), Path(root).resolve()
    try:
        return p.relative_to(r).as_posix() or "."
    except ValueError:
        return str(p)


def from_stored(value: str | Path, root: str | Path) -> Path:
    """The inverse of `to_stored`. Runs written before paths were relative stored cwd-relative paths that
    include the run directory; those are still found when they exist."""
    p = Path(value)
    if p.is_absolute():
        return p
    inside = Path(root) / p
    return inside if inside.exists() or not p.exists() else p


def _relativize(value: Any, root: Path) -> Any:
    """Every string in a stage summary that names a path inside the run directory, made relative to it."""
    if isinstance(value, dict):
        return {k: _relativize(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relativize(v, root) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value):
        p = Path(value)
        if p.is_absolute() or p.exists():
            stored = to_stored(p, root)
            if not Path(stored).is_absolute():
                return stored
    return value


def config_digest(cfg: Config) -> str:
    data = cfg.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _saved_config(path: Path) -> dict[str, Any]:
    saved = path / "config.yaml"
    data = load_yaml_text(
        read_utf8(saved, max_bytes=MAX_CONFIG_BYTES, error=StageError), str(saved), StageError
    )
    if not isinstance(data, dict):
        raise StageError(f"{saved}: not an edge-distill run config (top level is not a mapping)")
    return data


# Defaults that changed meaning without changing a run: data.*_field used to default to the GSM8K names, now
# null (recognise the layout), which reads the same rows from the same {question, answer} files.
_LEGACY_DEFAULTS = {"question_field": "question", "answer_field": "answer", "id_field": "id"}


# Keys added after runs were written, with the value that does what those runs did: a run started before
# train.lora.dropout_draws existed drew nn.Dropout's masks, so it resumes with `torch`, not today's `fast`.
_ADDED_KEYS = {"train.lora.dropout_draws": "torch"}


def _dotted(tree: Any, key: str) -> Any:
    """tree["a"]["b"] for key "a.b"; None where a level is missing or not a mapping."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _legacy_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    saved = copy.deepcopy(saved)
    data = saved.get("data")
    if isinstance(data, dict):
        saved["data"] = {k: None if _LEGACY_DEFAULTS.get(k, object()) == v else v for k, v in data.items()}
    for dotted, value in _ADDED_KEYS.items():
        section, _, key = dotted.rpartition(".")
        node = _dotted(saved, section)
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return saved


def _inert(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A key that cannot change this run's results: the LoRA settings of a full fine-tune."""
    full = _dotted(old, "train.finetune") == _dotted(new, "train.finetune") == "full"
    return full and key.startswith("train.lora.")


def is_run_dir(path: Path) -> bool:
    """Whether `path` is an edge-distill run directory: its config.yaml exists and names this directory."""
    if not (path / "config.yaml").is_file():
        return False
    try:
        return _saved_config(path).get("name") == path.name
    except EdgeDistillError:
        return False


def _has_content(path: Path) -> bool:
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


class RunDir:
    """Bookkeeping for `runs/<name>/`. Holds the directory's lock from construction until `release()`."""

    def __init__(self, cfg: Config, *, resume: bool = False, overwrite: bool = False):
        self.cfg = cfg
        self.path = cfg.run_dir
        # tolerant config sections (eval, export, bench) that changed since the run's last start
        self.changed_sections: set[str] = set()
        self._stages_file = self.path / "stages.json"
        self._lock = RunLock(self.path)
        confine(self.path)  # nothing written beneath it follows a link (edge_distill.io)
        try:
            runs_dir = make_dirs(cfg.runs_dir)
        except StorageError as e:
            raise StorageError(f"runs_dir: {e}; set runs_dir=<a writable directory>") from None
        if self.path.exists() and not self.path.is_dir():
            raise StageError(f"{self.path} exists and is not a directory: choose another name=<name>")
        # Checked before the lock file is created: a foreign directory is not written to at all.
        if _has_content(self.path) and not is_run_dir(self.path):
            raise StageError(
                f"{self.path} exists and is not an edge-distill run directory (no config.yaml naming it); "
                "nothing was changed or deleted: choose another name=<name> or runs_dir=<dir>"
            )
        if overwrite and _has_content(self.path):
            self._check_deletable(runs_dir)  # again under the lock; first so a refusal touches nothing
        make_dirs(self.path)
        self._lock.acquire()
        try:
            self._prepare(runs_dir, resume=resume, overwrite=overwrite)
        except BaseException:
            self.release()
            raise

    def _prepare(self, runs_dir: Path, *, resume: bool, overwrite: bool) -> None:
        if _has_content(self.path):
            if overwrite:
                self._check_deletable(runs_dir)
                log.info("removing the contents of run directory %s (--overwrite)", self.path)
                self._clear()
            elif not self.stages():
                log.info("%s has no finished stage: starting it afresh", self.path)
            elif not resume:
                raise StageError(
                    f"run directory {self.path} already exists: pass --resume to continue it, "
                    f"--overwrite to start over, or set name=<new name>"
                )
            else:
                self._check_same_config()
        write_text(self.path / "config.yaml", self.cfg.to_yaml())

    def _check_deletable(self, runs_dir: Path) -> None:
        """--overwrite deletes only a real (not symlinked) run directory directly inside runs_dir."""
        where = self.path.resolve()
        if self.path.is_symlink() or where.parent != runs_dir.resolve():
            raise StageError(
                f"--overwrite refused: {self.path} resolves to {where}, which is not a directory inside "
                f"runs_dir {runs_dir.resolve()}; nothing was deleted. Remove it yourself if you mean to"
            )

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if child.name == LOCK_NAME:  # we hold it; a new file would not be the one others lock
                continue
            try:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            except OSError as e:
                raise storage_error(child, e) from e

    # ------------------------------------------------------------------ lock
    def acquire(self) -> RunDir:
        """Take the directory's lock (a second process gets a StageError naming this one)."""
        self._lock.acquire()
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> RunDir:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, read-only bookkeeping (for `export`/`bench` on a finished run)."""
        from edge_distill.config import load_config

        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise StageError(f"{path}: not a run directory (no config.yaml)")
        run = cls.__new__(cls)
        run.cfg = load_config(path / "config.yaml")
        run.path = path
        run.changed_sections = set()
        run._stages_file = path / "stages.json"
        run._lock = RunLock(path)
        confine(path)
        return run

    def _check_same_config(self) -> None:
        if not (self.path / "config.yaml").is_file():
            return
        old = _legacy_defaults(_saved_config(self.path))
        new = self.cfg.model_dump(mode="json")
        diff = diff_keys(old, new)
        self.changed_sections = {k.split(".")[0] for k in diff if k.split(".")[0] in _RESUME_TOLERANT}
        changed = [k for k in diff if k.split(".")[0] not in _RESUME_TOLERANT and not _inert(k, old, new)]
        if changed:
            was = ", ".join(f"{k}: {_dotted(old, k)!r} -> {_dotted(new, k)!r}" for k in changed)
            raise StageError(
                f"cannot resume {self.path}: the config changed since the run started ({was}). "
                "Restore those values, use --overwrite, or set name=<new name>"
            )

    # ------------------------------------------------------------------ stages
    def stages(self) -> dict[str, Any]:
        if not self._stages_file.is_file():
            return {}
        lost = "the run's bookkeeping is lost: start over with --overwrite or a new name"
        try:
            stages = loads_json(read_utf8(self._stages_file, error=StageError))
        except ValueError as e:
            raise StageError(f"{self._stages_file}: damaged ({e}); {lost}") from None
        if not isinstance(stages, dict):
            raise StageError(f"{self._stages_file}: not a JSON object; {lost}")
        return stages

    def done(self, stage: str) -> bool:
        entry = self.stages().get(stage)
        return entry is not None and not entry.get("stale")

    def mark_done(self, stage: str, wall_s: float, summary: dict[str, Any] | None = None) -> None:
        """Record a finished stage; paths in its summary are stored relative to the run directory."""
        stages = self.stages()
        stages[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": round(wall_s, 2)}
        if summary:
            stages[stage]["summary"] = _relativize(summary, self.path)
        write_json(self._stages_file, stages)

    def mark_stale(self, stages_after: list[str], because: str) -> list[str]:
        """Mark finished stages stale (kept, but `done()` is False so the next run redoes them)."""
        stages = self.stages()
        marked = [s for s in stages_after if s in stages and not stages[s].get("stale")]
        for s in marked:
            stages[s]["stale"] = because
        if marked:
            write_json(self._stages_file, stages)
        return marked

    def resolve(self, stored: str | Path) -> Path:
        """A path recorded in this run (stages.json, records) as a usable path."""
        return from_stored(stored, self.path)

    def stage_dir(self, stage: str) -> Path:
        return make_dirs(self.path / stage)

    def require(self, *relpaths: str) -> None:
        for rel in relpaths:
            if not (self.path / rel).exists():
                raise StageError(
                    f"{self.path / rel} is missing: run the earlier stages first (edge-distill run)"
                )

    def metric(self, stage: str, **values: Any) -> None:
        # paths relative to the run, as in stages.json
        append_jsonl(
            self.path / "metrics.jsonl",
            {"time": time.time(), "stage": stage, **_relativize(values, self.path)},
        )
