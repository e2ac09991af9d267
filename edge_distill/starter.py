"""`edge-distill init`: the commented starter config shipped in the package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from edge_distill.errors import ConfigError
from edge_distill.io import write_text


def starter_text() -> str:
    return files("edge_distill").joinpath("assets/starter.yaml").read_text(encoding="utf-8")


def write_starter_config(path: Path, *, force: bool = False) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to overwrite it")
    write_text(path, starter_text())
