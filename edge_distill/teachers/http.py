"""OpenAI-compatible HTTP teacher: vLLM serve, llama_cpp.server, Ollama, hosted APIs.

httpx (async, driven from a private event-loop thread) + tenacity. The server is untrusted:
- every attempt has a total deadline (`timeout_s`: connect + send + the whole body), so a server that
  trickles one byte a second cannot stall a run; the body is streamed and refused past
  `max_response_bytes` (a fault, never cached); redirects are never followed, so the API key never goes
  to another URL (a 3xx is a counted fault that names the target);
- the body is validated in one place (`http_schema`): any malformed shape is a `bad_response` fault;
- retries with exponential backoff (+ jitter, honouring Retry-After) on 429, 5xx, timeouts, dropped
  connections, truncated and malformed bodies; a call that still fails becomes a failed Completion with
  its reason, and the run goes on;
- 401/403 (auth) and 404 (wrong URL or model) stop at once with one TeacherError, as does a teacher whose
  first calls all fail or that fails `give_up_after` calls in a row (a dead server is not "a few faults").
`n` > 1 is sent when `supports_n` is set; a server that returns fewer choices (llama_cpp.server ignores
`n`) is detected and the missing samples are requested one by one, each with its own seed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from edge_distill.errors import TeacherError, printable
from edge_distill.teachers.http_schema import BadResponse, parse_completion_body
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - a base dependency on Python >= 3.11
    raise TeacherError(
        "teacher.backend=http needs httpx2 (Python >= 3.11): pip install 'httpx2>=2.16' tenacity"
    ) from None

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401: "authentication failed", 403: "access denied", 404: "not found"}
DEFAULT_MAX_RESPONSE_BYTES = 8 << 20  # a completion of 512 tokens is a few kB; 8 MiB leaves room for n=K
_T = TypeVar("_T")


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class _Final(Exception):
    """A per-call failure that retrying will not fix (HTTP 400: prompt too long; a redirect; a huge body)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def normalise_base_url(url: str) -> str:
    """scheme://host:port/path of `url` for the cache key: lowercased scheme and host, explicit port, no
    credentials, query, fragment or trailing slash. Two spellings of one server share a cache; two servers
    never do."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(scheme)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return urlunsplit((scheme, f"{host}:{port}" if port else host, parts.path.rstrip("/"), "", ""))


class _LoopThread:
    """An asyncio loop on a private daemon thread: `run(coro)` blocks the caller until the coroutine is done.
    The caller may itself be inside a running loop (a notebook) without clashing with ours."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="teacher-http", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class HttpTeacher(LiveTeacher):
    backend = "http"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        endpoint: Literal["completions", "chat"] = "completions",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        supports_n: bool = False,
        give_up_after: int = 8,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        extra_body: dict[str, Any] | None = None,
        pieces: Any = None,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        # token text -> shared tokenizer id (teachers.topk.PieceMap): how logprobs' token strings become ids
        self.pieces = pieces
        if self.logprobs and pieces is None:
            raise TeacherError(
                "teacher.backend=http: recording logprobs needs the student's tokenizer (pieces=)"
            )
        if endpoint not in ("completions", "chat"):
            raise TeacherError(f"teacher.http.endpoint: {endpoint!r} is not one of completions, chat")
        try:
            parsed = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError, ValueError):
            parsed = None
        port_ok = parsed is not None and (parsed.port is None or 0 < parsed.port < 65536)
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host or not port_ok:
            raise TeacherError(
                f"teacher.http.base_url: {base_url[:200]!r} is not an http:// or https:// URL with a host "
                "(and a port below 65536)"
            )
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.url = f"{self.base_url}/{'chat/completions' if endpoint == 'chat' else 'completions'}"
        self.api_key_env = api_key_env
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.supports_n = supports_n
        self.give_up_after = give_up_after
        self.max_response_bytes = max_response_bytes
        # server-specific request fields (llama_cpp.server: repeat_penalty/top_k/min_p; vLLM: top_k...)
        self.extra_body = dict(extra_body or {})

    def cache_variant(self) -> str:
        # The server is part of the identity: another server with the same model name is another teacher.
        extra = json.dumps(self.extra_body, sort_keys=True) if self.extra_body else ""
        return f"http-{self.endpoint}@{normalise_base_url(self.base_url)}{extra}"

    # ------------------------------------------------------------------ one HTTP attempt
    def _headers(self) -> dict[str, str]:
        # identity: a compressed body would defeat the size cap (a 8 MiB gzip can inflate to gigabytes)
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, prompt: str, sampling: Sampling, n: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "n": n,
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if seed is not None:
            body["seed"] = seed
        if self.logprobs:  # the teacher's top-k per generated token (offline distillation)
            if self.endpoint == "chat":
                body.update(logprobs=True, top_logprobs=self.logprobs)
            else:
                body["logprobs"] = self.logprobs
        body.update(self.extra_body)
        return body

    async def _read_capped(self, resp: httpx.Response, cap: int) -> bytes:
        """The body, streamed; _Final("too_large") as soon as it passes `cap` (never buffered whole)."""
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _Final("too_large", f"Content-Length {declared} exceeds max_response_bytes={cap}")
        chunks, size = [], 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > cap:
                raise _Final("too_large", f"body passed max_response_bytes={cap}; stopped reading")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _exchange(self, client: httpx.AsyncClient, body: dict[str, Any], phase: list[str]) -> bytes:
        """POST once; the raw 2xx body. `phase` records how far it got, for the fault's name."""
        async with client.stream("POST", self.url, json=body, headers=self._headers()) as resp:
            phase[0] = "body"
            status = resp.status_code
            if 300 <= status < 400:
                # never followed: the Authorization header must not go wherever a server points
                target = printable(resp.headers.get("Location", "?"), 200)
                raise _Final(
                    "redirect",
                    f"HTTP {status} to {target!r} (redirects are not followed so the API key stays with "
                    "base_url; set teacher.http.base_url to the final URL if you trust it)",
                )
            if status >= 400:
                detail = printable((await _read_prefix(resp, 300)).decode("utf-8", "replace").strip())
                self._raise_for_status(status, detail, resp.headers.get("Retry-After"))
            encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise _Retryable("bad_response", f"Content-Encoding {encoding[:40]!r} despite identity")
            return await self._read_capped(resp, self.max_response_bytes)

    def _raise_for_status(self, status: int, detail: str, retry_after: str | None) -> None:
        if status in FATAL_STATUS:
            hint = (
                f"check ${self.api_key_env}"
                if status in (401, 403)
                else "check base_url (it ends in /v1) and model"
            )
            raise TeacherError(
                f"teacher {self.url} (model {self.model!r}): {FATAL_STATUS[status]} (HTTP {status}): "
                f"{detail or 'no detail'}; {hint}"
            )
        if status in RETRYABLE_STATUS:
            raise _Retryable(f"http_{status}", detail or "no detail", _retry_after(retry_after))
        raise _Final(f"http_{status}", detail or "no detail")

    async def _post_once(self, client: httpx.AsyncClient, body: dict[str, Any], n: int) -> list[Generation]:
        self.stats.requests += 1
        phase = ["connect"]
        try:
            # one deadline for the whole attempt: httpx's timeouts bound each socket read only
            async with asyncio.timeout(self.timeout_s):
                raw = await self._exchange(client, body, phase)
        except TimeoutError:
            raise _Retryable("timeout", f"no complete answer within {self.timeout_s:g}s") from None
        except httpx.TimeoutException:
            raise _Retryable("timeout", f"no answer within {self.timeout_s:g}s") from None
        except httpx.RemoteProtocolError as e:
            reason = "incomplete_body" if phase[0] == "body" else "connection"
            raise _Retryable(reason, str(e)[:200]) from None
        except httpx.HTTPError as e:  # refused, reset, DNS, TLS...
            raise _Retryable("connection", f"{type(e).__name__}: {str(e)[:200]}") from None
        try:
            return parse_completion_body(
                raw, endpoint=self.endpoint, n=n, topk=self.logprobs, pieces=self.pieces
            )
        except BadResponse as e:
            raise _Retryable("bad_response", str(e)) from None

    # ------------------------------------------------------------------ one call, retried
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        after = getattr(exc, "retry_after", None)
        delay = after if after is not None else self.backoff_s * 2 ** (state.attempt_number - 1)
        return min(delay, 60.0) * random.uniform(1.0, 1.25)

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable):
            self.stats.retries[exc.reason] += 1
            log.debug("teacher call failed (%s), retry %d", exc, state.attempt_number)

    async def _call(
        self, client: httpx.AsyncClient, prompt: str, sampling: Sampling, n: int, seed: int | None
    ) -> list[Generation]:
        """Up to n completions (fewer if the server ignores n), or one failed Generation."""
        body = self._body(prompt, sampling, n, seed)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            return await retrying(self._post_once, client, body, n)
        except _Final as e:
            return [Generation.failed(e.reason, e.detail)]
        except _Retryable as e:
            attempts = retrying.statistics.get("attempt_number", self.max_retries + 1)
            return [Generation.failed(e.reason, f"{e.detail} (after {attempts} attempts)")]

    async def _job(
        self, client: httpx.AsyncClient, prompt: str, indices: list[int], sampling: Sampling
    ) -> list[Generation]:
        gens: list[Generation] = []
        if len(indices) > 1 and self.supports_n:
            gens = await self._call(client, prompt, sampling, len(indices), sampling.seed_for(indices[0]))
            if gens[0].error is not None:
                return gens * len(indices)
            if len(gens) < len(indices):
                log.warning(
                    "%s returned %d of n=%d choices: requesting samples one by one",
                    self.url,
                    len(gens),
                    len(indices),
                )
                self.supports_n = False
        for i in indices[len(gens) :]:
            gens.append((await self._call(client, prompt, sampling, 1, sampling.seed_for(i)))[0])
        return gens

    # ------------------------------------------------------------------ the pool
    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        jobs = [
            (ri, idx)
            for ri, r in enumerate(requests)
            for idx in ([r.indices] if self.supports_n else [[i] for i in r.indices])
        ]
        reached, consecutive = False, 0  # reached: the server has answered (a success or a definite 4xx)
        runner = _LoopThread()
        # follow_redirects=False is httpx's default; said here because the API key depends on it
        client = httpx.AsyncClient(
            timeout=self.timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        pending: dict[asyncio.Future[list[Generation]], tuple[int, list[int]]] = {}
        queue = iter(jobs)

        async def submit(ri: int, idx: list[int]) -> None:
            pending[asyncio.ensure_future(self._job(client, requests[ri].prompt, idx, sampling))] = (ri, idx)

        async def next_done() -> set[asyncio.Future[list[Generation]]]:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            return done

        try:
            for ri, idx in queue:  # fill the pool; later jobs are submitted as earlier ones finish
                runner.run(submit(ri, idx))
                if len(pending) >= self.concurrency:
                    break
            while pending:
                for fut in runner.run(next_done()):
                    ri, idx = pending.pop(fut)
                    gens = fut.result()  # TeacherError (auth, 404) propagates from here
                    yield ri, idx, gens  # recorded (and its faults counted) before any verdict below
                    if all(g.error is not None for g in gens):
                        consecutive += 1
                        reached = reached or _server_answered(gens[0].reason)
                        # never reached: a refused connection is a wrong URL; 3 failures are not bad luck
                        limit = self.give_up_after if reached else min(3, len(jobs))
                        if consecutive >= limit or (not reached and gens[0].reason == "connection"):
                            raise TeacherError(
                                f"teacher {self.url} (model {self.model!r}) is not working: "
                                f"{consecutive} call(s) in a row failed{'' if reached else ' and none got an answer'}; "
                                f"last error: {gens[0].error}"
                            )
                    else:
                        reached, consecutive = True, 0
                    nxt = next(queue, None)
                    if nxt is not None:
                        runner.run(submit(*nxt))
        finally:
            runner.run(_cancel_and_close(list(pending), client))  # calls in flight stop now
            runner.close()


async def _read_prefix(resp: httpx.Response, n: int) -> bytes:
    """The first `n` bytes of an error body, for the message; the rest is never read."""
    buf = b""
    async for chunk in resp.aiter_raw():
        buf += chunk
        if len(buf) >= n:
            break
    return buf[:n]


async def _cancel_and_close(futures: list[asyncio.Future[Any]], client: httpx.AsyncClient) -> None:
    for f in futures:
        f.cancel()
    await asyncio.gather(*futures, return_exceptions=True)
    await client.aclose()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _server_answered(reason: str | None) -> bool:
    """A non-retryable HTTP status (400, 422...): the server works, this one request was bad."""
    return bool(reason and reason.startswith("http_") and int(reason[5:]) not in RETRYABLE_STATUS)
