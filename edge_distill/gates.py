"""Turn a run's device-bench verdicts into an exit code (CI pipelines gate on it)."""

from __future__ import annotations

from edge_distill.rundir import RunDir


def gate_exit_code(run: RunDir) -> int:
    """0 when no bench ran or every (package × profile) passed its budget, 1 otherwise."""
    bench = run.stages().get("bench", {}).get("summary", {})
    return 0 if bench.get("all_passed", True) else 1
