"""edge-distill: distill math reasoning into a small student and ship it to edge devices.

The Python API (`edge_distill.sdk`, the functions the CLI calls):

    run(config, **overrides) -> RunResult          the pipeline, one run directory
    evaluate(models, problems, ...) -> EvalReport  any models x problem sets, one paired table
    export(run_or_model, targets, ...) -> [ExportedPackage]
    bench(package, profile, remote=None, ...) -> BenchResult
    load_problems(spec, ...) -> LoadedProblems     a benchmark file as published, or NAME:PATH, hf:<id>

Errors the user can fix are `EdgeDistillError` subclasses. Importing this package is cheap and torch-free:
the API's names resolve on first use (module `__getattr__`; by name, so this package imports none of the
modules it exposes and no import cycle runs through it), and each call imports what it needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edge_distill.errors import (
    ConfigError,
    DataError,
    EdgeDistillError,
    ModelError,
    StageError,
    StorageError,
    TeacherError,
)

__all__ = [
    "BenchResult",
    "ConfigError",
    "DataError",
    "EdgeDistillError",
    "EvalReport",
    "ExportedPackage",
    "Judging",
    "LoadedProblems",
    "ModelError",
    "Problem",
    "RunResult",
    "StageError",
    "StorageError",
    "TeacherError",
    "bench",
    "evaluate",
    "export",
    "load_problems",
    "run",
]
__version__ = "0.1.0"

_SDK = "BenchResult ExportedPackage RunResult bench evaluate export load_problems run"
_LAZY = {
    **dict.fromkeys(_SDK.split(), "edge_distill.sdk"),
    "EvalReport": "edge_distill.compare",
    "LoadedProblems": "edge_distill.data",
    "Judging": "edge_distill.types",
    "Problem": "edge_distill.types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_distill' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
