"""OpenAI-compatible HTTP teacher: vLLM serve, llama_cpp.server, Ollama, hosted APIs.

Stdlib only (urllib + a thread pool), so the device install needs nothing more. Per call:
- retries with exponential backoff (+ jitter, honouring Retry-After) on 429, 5xx, timeouts, dropped
  connections, truncated and unparseable bodies; a call that still fails becomes a failed Completion
  with its reason, and the run goes on;
- 401/403 (auth) and 404 (wrong URL or model) stop at once with one TeacherError, as does a teacher whose
  first calls all fail or that fails `give_up_after` calls in a row (a dead server is not "a few faults").
`n` > 1 is sent when `supports_n` is set; a server that returns fewer choices (llama_cpp.server ignores
`n`) is detected and the missing samples are requested one by one, each with its own seed.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

from edge_distill.errors import TeacherError
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401: "authentication failed", 403: "access denied", 404: "not found"}


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class _Final(Exception):
    """A per-call failure that retrying will not fix (e.g. HTTP 400: prompt longer than the context)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


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
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        if endpoint not in ("completions", "chat"):
            raise TeacherError(f"teacher.http.endpoint: {endpoint!r} is not one of completions, chat")
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.url = f"{self.base_url}/{'chat/completions' if endpoint == 'chat' else 'completions'}"
        self.api_key_env = api_key_env
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.supports_n = supports_n
        self.give_up_after = give_up_after
        # server-specific request fields (llama_cpp.server: repeat_penalty/top_k/min_p; vLLM: top_k...)
        self.extra_body = dict(extra_body or {})
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def cache_variant(self) -> str:
        extra = json.dumps(self.extra_body, sort_keys=True) if self.extra_body else ""
        return f"http-{self.endpoint}{extra}"

    # ------------------------------------------------------------------ one HTTP call
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
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
        body.update(self.extra_body)
        return body

    def _post_once(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
        with self._lock:
            self.stats.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = _error_detail(e)
            if e.code in FATAL_STATUS:
                self._stop.set()  # queued calls must not go out once the teacher is known to be broken
                hint = (
                    f"check ${self.api_key_env}"
                    if e.code in (401, 403)
                    else "check base_url (it ends in /v1) and model"
                )
                raise TeacherError(
                    f"teacher {self.url} (model {self.model!r}): {FATAL_STATUS[e.code]} (HTTP {e.code}): "
                    f"{detail or e.reason}; {hint}"
                ) from None
            if e.code in RETRYABLE_STATUS:
                raise _Retryable(f"http_{e.code}", detail or str(e.reason), _retry_after(e.headers)) from None
            raise _Final(f"http_{e.code}", detail or str(e.reason)) from None
        except TimeoutError as e:
            raise _Retryable("timeout", f"no answer within {self.timeout_s:g}s ({e})") from None
        except http.client.IncompleteRead as e:
            raise _Retryable(
                "incomplete_body", f"{len(e.partial)} bytes then the connection closed"
            ) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retryable("timeout", f"no connection within {self.timeout_s:g}s") from None
            raise _Retryable("connection", str(e.reason)) from None
        except (OSError, http.client.HTTPException) as e:  # reset, refused mid-read, bad status line...
            raise _Retryable("connection", f"{type(e).__name__}: {e}") from None
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Retryable("bad_response", f"not JSON: {raw[:80]!r}") from None
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("choices"), list)
            or not payload["choices"]
        ):
            raise _Retryable("bad_response", f"no choices in {str(payload)[:120]}")
        return payload

    def _parse(self, payload: dict[str, Any]) -> list[Generation]:
        choices = sorted(payload["choices"], key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        usage = payload.get("usage") or {}
        total = usage.get("completion_tokens") if isinstance(usage, dict) else None
        per_choice = int(total) // len(choices) if isinstance(total, int) else None
        gens = []
        for c in choices:
            text = c.get("message", {}).get("content") if self.endpoint == "chat" else c.get("text")
            if not isinstance(text, str):
                raise _Retryable("bad_response", f"choice without text: {str(c)[:120]}")
            finish = "length" if c.get("finish_reason") == "length" else "stop"
            gens.append(Generation(text, finish, tokens=per_choice))
        return gens

    def _call(self, prompt: str, sampling: Sampling, n: int, seed: int | None) -> list[Generation]:
        """Up to n completions (fewer if the server ignores n), or one failed Generation."""
        body = self._body(prompt, sampling, n, seed)
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                return [Generation.failed("cancelled", "the teacher stopped")]
            try:
                return self._parse(self._post_once(body))
            except _Final as e:
                return [Generation.failed(e.reason, e.detail)]
            except _Retryable as e:
                if attempt == self.max_retries or self._stop.is_set():
                    return [Generation.failed(e.reason, f"{e.detail} (after {attempt + 1} attempts)")]
                delay = e.retry_after if e.retry_after is not None else self.backoff_s * 2**attempt
                delay = min(delay, 60.0) * random.uniform(1.0, 1.25)
                log.debug("teacher call failed (%s), retry %d in %.2fs", e, attempt + 1, delay)
                with self._lock:
                    self.stats.retries[e.reason] += 1
                if self._stop.wait(delay):
                    return [Generation.failed(e.reason, "cancelled")]
        raise AssertionError("unreachable")

    def _job(self, prompt: str, indices: list[int], sampling: Sampling) -> list[Generation]:
        gens: list[Generation] = []
        if len(indices) > 1 and self.supports_n:
            gens = self._call(prompt, sampling, len(indices), sampling.seed_for(indices[0]))
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
            gens = gens[: len(indices)]
        for i in indices[len(gens) :]:
            gens.append(self._call(prompt, sampling, 1, sampling.seed_for(i))[0])
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
        self._stop.clear()
        reached, consecutive = False, 0  # reached: the server has answered (a success or a definite 4xx)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="teacher-http")
        pending: dict[Future[list[Generation]], tuple[int, list[int]]] = {}
        queue = iter(jobs)
        try:
            for ri, idx in queue:  # fill the pool; later jobs are submitted as earlier ones finish
                pending[pool.submit(self._job, requests[ri].prompt, idx, sampling)] = (ri, idx)
                if len(pending) >= 2 * self.concurrency:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
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
                        pending[pool.submit(self._job, requests[nxt[0]].prompt, nxt[1], sampling)] = nxt
        finally:
            self._stop.set()  # wakes workers sleeping in a backoff; a call in flight ends by its timeout
            pool.shutdown(wait=False, cancel_futures=True)


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        return e.read()[:300].decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        return ""


def _server_answered(reason: str | None) -> bool:
    """A non-retryable HTTP status (400, 422...): the server works, this one request was bad."""
    return bool(reason and reason.startswith("http_") and int(reason[5:]) not in RETRYABLE_STATUS)
