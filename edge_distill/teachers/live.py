"""Shared machinery of the live teachers (HTTP, llama.cpp, transformers, vLLM).

A backend implements one method, `_run(requests, sampling)`, which turns prompts into completions for the
sample indices the cache does not have, and yields results as they finish. This base class does
everything else, identically for every backend:

- builds the few-shot teacher prompt per strategy (`strategies.teacher_prompt`) for `generate()`;
- looks every (prompt, sample index) up in the SQLite cache first, and stores each paid completion
  the moment it arrives, so an interrupted run never pays for it again;
- counts faults per reason (failed calls by cause, truncated = hit max tokens) and cache hits/misses;
- shows a progress bar with throughput and cache hits.

At temperature 0 the K samples of a prompt would be identical, so only sample 0 is requested and
copied K times.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from tqdm import tqdm

from edge_distill.teachers.base import Completion
from edge_distill.teachers.cache import CachedCompletion, TeacherCache, cache_key, resolve_cache_path
from edge_distill.types import Problem, Strategy

log = logging.getLogger(__name__)

# teacher_prompt joins exemplars as "...\n\nQuestion: ...": a completion that starts the next exemplar is done
EXEMPLAR_STOP = ("\nQuestion:",)
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of one teacher call. `seed` is the seed of sample 0; sample i uses seed+i."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def seed_for(self, index: int) -> int | None:
        return None if self.seed is None else self.seed + index

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Request:
    """One prompt and the sample indices still missing for it."""

    prompt: str
    indices: list[int]


@dataclass
class Generation:
    """What a backend returns per sample. `reason` names the fault when `error` is set."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    error: str | None = None
    reason: str | None = None  # e.g. "http_500", "timeout", "bad_response", "connection"
    tokens: int | None = None
    topk: Any = None  # teachers.topk.TopK when the teacher records log-probs

    @classmethod
    def failed(cls, reason: str, error: str) -> Generation:
        # the detail may quote a hostile server: bounded before it reaches the cache, stats and samples
        text = f"{reason}: {error}"
        error = text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
        return cls(text="", finish_reason="error", error=error, reason=reason)


@dataclass
class TeacherStats:
    requests: int = 0  # backend calls actually sent (HTTP requests incl. retries, generate() calls)
    retries: Counter[str] = field(default_factory=Counter)  # retried attempts by reason
    cache_hits: int = 0
    cache_misses: int = 0
    completions: int = 0  # new completions obtained from the backend
    completion_tokens: int = 0
    truncated: int = 0  # finish_reason == "length" among new and cached completions returned
    faults: Counter[str] = field(default_factory=Counter)
    backend_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faults"] = dict(self.faults)
        d["retries"] = dict(self.retries)
        d["failed"] = sum(self.faults.values())
        d["completions_per_s"] = round(self.completions / self.backend_s, 3) if self.backend_s else None
        d["tokens_per_s"] = round(self.completion_tokens / self.backend_s, 2) if self.backend_s else None
        d["backend_s"] = round(self.backend_s, 3)
        return d


class LiveTeacher:
    """Base of the live backends. Subclasses set `backend` and implement `_run` (and `close` if needed)."""

    backend: ClassVar[str] = "live"

    def __init__(
        self,
        model: str,
        *,
        sampling: Sampling | None = None,
        n_shots: int = 8,
        cache: TeacherCache | str | Path | None = "auto",
        progress: bool | None = None,
        logprobs: int = 0,
    ):
        self.model = model
        # > 0: record the teacher's top-`logprobs` log-probs per generated token (offline distillation)
        self.logprobs = int(logprobs)
        self.sampling = sampling or Sampling()
        self.n_shots = n_shots
        if isinstance(cache, TeacherCache) or cache is None:
            self.cache = cache
        else:
            path = resolve_cache_path(cache)
            self.cache = TeacherCache(path) if path is not None else None
        self.progress = progress  # None = a bar only on a terminal
        self.stats = TeacherStats()

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.model}"

    def cache_variant(self) -> str:
        """Backend detail that changes the output for the same model (e.g. chat vs completions)."""
        return self.backend

    # ------------------------------------------------------------------ public API
    def generate(self, problems: list[Problem], strategy: Strategy, k: int) -> list[list[Completion]]:
        from edge_distill.strategies import teacher_prompt

        prompts = [teacher_prompt(strategy, p.question, n_shots=self.n_shots) for p in problems]
        stop = self.sampling.stop + tuple(s for s in EXEMPLAR_STOP if s not in self.sampling.stop)
        return self.complete(prompts, k, replace(self.sampling, stop=stop), desc=f"teacher {strategy.value}")

    def complete(
        self, prompts: list[str], k: int, sampling: Sampling | None = None, *, desc: str = "teacher"
    ) -> list[list[Completion]]:
        """K completions for each prompt, from the cache where possible. Never raises for one bad call;
        raises TeacherError when the backend fails entirely (unreachable, auth)."""
        sampling = sampling or self.sampling
        n_distinct = 1 if sampling.greedy else k
        variant, skey = self.cache_variant(), sampling.key()
        keys = [[cache_key(variant, self.model, p, skey, i) for i in range(n_distinct)] for p in prompts]
        flat = [key for row in keys for key in row]
        found = self.cache.get_many(flat, topk=self.logprobs) if self.cache is not None else {}
        got: list[list[Generation | None]] = [[None] * n_distinct for _ in prompts]
        requests: list[Request] = []
        req_pos: list[int] = []
        first: dict[str, int] = {}  # a prompt repeated within one call is asked for once
        for pi, row in enumerate(keys):
            if first.setdefault(prompts[pi], pi) != pi:
                continue
            missing = []
            for i, key in enumerate(row):
                hit = found.get(key)
                if hit is not None:
                    got[pi][i] = Generation(
                        hit.text, hit.finish_reason, tokens=hit.completion_tokens, topk=hit.topk
                    )
                else:
                    missing.append(i)
            if missing:
                requests.append(Request(prompts[pi], missing))
                req_pos.append(pi)
        hits = len(first) * n_distinct - sum(len(r.indices) for r in requests)
        self.stats.cache_hits += hits
        self.stats.cache_misses += sum(len(r.indices) for r in requests)
        bar = tqdm(
            total=len(first) * n_distinct,
            initial=hits,
            desc=desc,
            unit="compl",
            disable=(not self.progress) if self.progress is not None else None,
            dynamic_ncols=True,
            leave=False,  # the summary line below stays; nested under teach()'s own bar
        )
        bar.set_postfix(cached=hits, failed=sum(self.stats.faults.values()))
        start = time.perf_counter()
        try:
            if requests:
                for ri, indices, gens in self._run(requests, sampling):
                    pi = req_pos[ri]
                    self._store(keys[pi], indices, gens)
                    for i, g in zip(indices, gens, strict=True):
                        got[pi][i] = g
                    bar.update(len(gens))
                    bar.set_postfix(cached=hits, failed=sum(self.stats.faults.values()))
        finally:
            elapsed = time.perf_counter() - start
            self.stats.backend_s += elapsed
            bar.close()
        new = sum(len(r.indices) for r in requests)
        log.info(
            "%s %s: %d completions (%d cached, %d new) in %.1fs, %.2f new/s; failures so far %s",
            self.name, desc, len(first) * n_distinct, hits, new, elapsed,
            new / elapsed if elapsed > 0 else 0.0, dict(self.stats.faults) or "none",
        )  # fmt: skip
        out: list[list[Completion]] = []
        for pi in range(len(prompts)):
            row = got[first[prompts[pi]]]
            comps = []
            for i, g in enumerate(row):
                if g is None:  # a backend that skipped a sample is a bug; report it as a failure
                    g = row[i] = Generation.failed("missing", "backend returned no completion")
                    self.stats.faults["missing"] += 1
                cached = keys[pi][i] in found
                self.stats.truncated += g.finish_reason == "length"
                comps.append(Completion(g.text, g.finish_reason, error=g.error, cached=cached, topk=g.topk))
            out.append(comps if n_distinct == k else [replace(comps[0]) for _ in range(k)])
        return out

    def _store(self, keys: list[str], indices: list[int], gens: list[Generation]) -> None:
        rows = []
        for i, g in zip(indices, gens, strict=True):
            if g.error is not None:
                self.stats.faults[g.reason or "error"] += 1
                if self.cache is not None:
                    self.cache.record_fault(keys[i], self.backend, self.model, g.reason or "error", g.error)
                continue
            self.stats.completions += 1
            self.stats.completion_tokens += g.tokens or 0
            rows.append((keys[i], i, CachedCompletion(g.text, g.finish_reason, g.tokens, g.topk)))
        if self.cache is not None:
            self.cache.put_many(self.backend, self.model, rows)

    def report(self) -> dict[str, Any]:
        """Counters for the run report: requests, cache hits/misses, faults by reason, throughput."""
        d = {"teacher": self.name, **self.stats.as_dict()}
        if self.cache is not None:
            d["cache"] = self.cache.stats()
        return d

    # ------------------------------------------------------------------ backend hooks
    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        """Yield (request position, sample indices, one Generation per index) as results finish.

        Every missing index of every request must be yielded exactly once."""
        raise NotImplementedError

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> LiveTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
