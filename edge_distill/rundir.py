"""The run directory: resolved config, stage bookkeeping, metrics log.

A stage is finished when it is recorded in `stages.json`, which happens only after all of its outputs
were written atomically. `--resume` skips recorded stages; a config that changed since the run started
is refused rather than silently mixed with old artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from edge_distill.config import Config
from edge_distill.errors import StageError
from edge_distill.io import append_jsonl, write_json, write_text

log = logging.getLogger(__name__)

# Keys that may change between a run and its resume without invalidating finished stages.
_RESUME_TOLERANT = {"export", "bench"}


def config_digest(cfg: Config) -> str:
    data = cfg.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class RunDir:
    """Bookkeeping for `runs/<name>/`."""

    def __init__(self, cfg: Config, *, resume: bool = False, overwrite: bool = False):
        self.cfg = cfg
        self.path = cfg.run_dir
        self._stages_file = self.path / "stages.json"
        if self.path.exists() and any(self.path.iterdir()):
            if overwrite:
                log.info("removing existing run directory %s (--overwrite)", self.path)
                shutil.rmtree(self.path)
            elif not resume:
                raise StageError(
                    f"run directory {self.path} already exists: pass --resume to continue it, "
                    f"--overwrite to start over, or set name=<new name>"
                )
            else:
                self._check_same_config()
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.path / "config.yaml", cfg.to_yaml())

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
        run._stages_file = path / "stages.json"
        return run

    def _check_same_config(self) -> None:
        saved = self.path / "config.yaml"
        if not saved.is_file():
            return
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
        new = self.cfg.model_dump(mode="json")
        changed = [k for k in _diff_keys(old, new) if k.split(".")[0] not in _RESUME_TOLERANT]
        if changed:
            raise StageError(
                f"cannot resume {self.path}: the config changed since the run started ({', '.join(changed)}). "
                "Restore those values, use --overwrite, or set name=<new name>"
            )

    # ------------------------------------------------------------------ stages
    def stages(self) -> dict[str, Any]:
        if not self._stages_file.is_file():
            return {}
        return json.loads(self._stages_file.read_text(encoding="utf-8"))

    def done(self, stage: str) -> bool:
        return stage in self.stages()

    def mark_done(self, stage: str, wall_s: float, summary: dict[str, Any] | None = None) -> None:
        stages = self.stages()
        stages[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": round(wall_s, 2)}
        if summary:
            stages[stage]["summary"] = summary
        write_json(self._stages_file, stages)

    def stage_dir(self, stage: str) -> Path:
        d = self.path / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def require(self, *relpaths: str) -> None:
        for rel in relpaths:
            if not (self.path / rel).exists():
                raise StageError(
                    f"{self.path / rel} is missing: run the earlier stages first (edge-distill run)"
                )

    def metric(self, stage: str, **values: Any) -> None:
        append_jsonl(self.path / "metrics.jsonl", {"time": time.time(), "stage": stage, **values})
