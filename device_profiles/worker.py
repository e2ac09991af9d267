"""Runtime measurements in a child process, so peak RSS is the packaged model's and a runtime crash is
contained. `measure(...)` and `generate(...)` are the parent-side calls; `python -m device_profiles.worker
ARGS.json` is the child.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import EdgeDistillError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spread:
    """Median and range over repetitions."""

    median: float
    min: float
    max: float
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), values)

    @property
    def rel_spread(self) -> float:
        return (self.max - self.min) / self.median if self.median else float("nan")


@dataclass(frozen=True)
class RuntimeMeasurement:
    runtime: str
    model_path: str
    threads: int
    load_s: float
    warmup_s: float
    prompt_tokens: int
    new_tokens: int
    repetitions: int
    ttft_s: Spread
    prefill_tok_s: Spread
    decode_tok_s: Spread
    peak_rss_mb: float  # whole process, after load + warm-up + all repetitions
    baseline_rss_mb: float  # the same process before the model was loaded (interpreter + runtime import)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeMeasurement:
        spreads = {k: Spread(**d[k]) for k in ("ttft_s", "prefill_tok_s", "decode_tok_s")}
        return cls(**{**d, **spreads})


def measure_session(
    session: Any, prompt: str, new_tokens: int, repetitions: int, warmup: int = 1
) -> dict[str, Any]:
    """Warm-up runs, then `repetitions` timed greedy generations of `new_tokens` tokens (in this process)."""
    ids = session.tokenize(prompt)
    t0 = time.perf_counter()
    for _ in range(warmup):
        session.timed_generate(ids, min(new_tokens, 16))
    warmup_s = time.perf_counter() - t0
    runs = [session.timed_generate(ids, new_tokens) for _ in range(repetitions)]
    return {
        "warmup_s": warmup_s,
        "prompt_tokens": len(ids),
        "new_tokens": min(len(r.tokens) for r in runs),
        "repetitions": repetitions,
        "ttft_s": asdict(Spread.of([r.ttft_s for r in runs])),
        "prefill_tok_s": asdict(Spread.of([r.prefill_tok_s for r in runs])),
        "decode_tok_s": asdict(Spread.of([r.decode_tok_s for r in runs])),
    }


def _peak_rss_mb() -> float:
    """Peak RSS of this process. Linux: VmHWM, which exec resets (ru_maxrss would keep the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS: bytes, else KiB
    except ImportError:  # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20


def _child(args: dict[str, Any]) -> dict[str, Any]:
    import psutil

    from device_profiles.runtimes import open_session

    baseline = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    session = open_session(args["runtime"], Path(args["model_path"]), args["threads"], args.get("session"))
    load_s = time.perf_counter() - t0
    if args["mode"] == "generate":
        stop = bool(args.get("stop_at_answer", False))
        return {"texts": [session.generate(p, args["max_new_tokens"], stop) for p in args["prompts"]]}
    result = measure_session(session, args["prompt"], args["new_tokens"], args["repetitions"], args["warmup"])
    peak = _peak_rss_mb()
    if hasattr(
        session, "process_rss_mb"
    ):  # the runtime's own process (ExecuTorch) holds the model: it counts too
        other_baseline, other_peak = session.process_rss_mb()
        baseline, peak = baseline + other_baseline, peak + other_peak
    return {
        "runtime": args["runtime"],
        "model_path": args["model_path"],
        "threads": args["threads"],
        "load_s": load_s,
        **result,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
    }


def _run_child(args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-distill-bench-") as tmp:
        args_file, out_file = Path(tmp) / "args.json", Path(tmp) / "out.json"
        args_file.write_text(json.dumps({**args, "out": str(out_file)}))
        cmd = [sys.executable, "-m", "device_profiles.worker", str(args_file)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy()
            )
        except subprocess.TimeoutExpired as e:
            raise EdgeDistillError(
                f"{args['runtime']} on {args['model_path']}: no result after {timeout_s:.0f}s"
            ) from e
        if proc.returncode != 0 or not out_file.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise EdgeDistillError(
                f"{args['runtime']} failed on {args['model_path']} (exit {proc.returncode}):\n{tail}"
            )
        return json.loads(out_file.read_text())


def measure(
    runtime: str,
    model_path: Path,
    threads: int,
    prompt: str,
    *,
    new_tokens: int = 64,
    repetitions: int = 3,
    warmup: int = 1,
    timeout_s: float = 1800,
) -> RuntimeMeasurement:
    """Load the model in a fresh process and time greedy generation; see `measure_session`."""
    from device_profiles.runtimes import session_ref

    args = {
        "mode": "measure",
        "runtime": runtime,
        "session": session_ref(runtime),
        "model_path": str(model_path),
        "threads": threads,
        "prompt": prompt,
        "new_tokens": new_tokens,
        "repetitions": repetitions,
        "warmup": warmup,
    }
    return RuntimeMeasurement.from_dict(_run_child(args, timeout_s))


def generate(
    runtime: str,
    model_path: Path,
    threads: int,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop_at_answer: bool = False,
    timeout_s: float = 7200,
) -> list[str]:
    """Greedy completions for each prompt, in a fresh process: to EOS, or with `stop_at_answer` until the
    answer is complete (`edge_distill.stopping`)."""
    from device_profiles.runtimes import session_ref

    args = {
        "mode": "generate",
        "runtime": runtime,
        "session": session_ref(runtime),
        "model_path": str(model_path),
        "threads": threads,
        "prompts": prompts,
        "max_new_tokens": max_new_tokens,
        "stop_at_answer": stop_at_answer,
    }
    return list(_run_child(args, timeout_s)["texts"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = json.loads(Path(argv[0]).read_text())
    result = _child(args)
    Path(args["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
