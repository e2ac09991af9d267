"""llama.cpp in-process teacher (llama-cpp-python) for GGUF files.

Sampling is exactly the configured one: temperature and top-p, with llama.cpp's own extras switched off
(top_k=0, min_p=0, repeat_penalty=1). llama_cpp.server applies repeat_penalty=1.1, top_k=40, min_p=0.05
unless told otherwise, so an HTTP teacher pointed at it should send the same three values in `extra_body`
(configs/teacher-llamacpp-server.yaml does) to get the same completions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_distill.errors import TeacherError
from edge_distill.runtimes import llamacpp as runtime
from edge_distill.runtimes.llamacpp import NEUTRAL_SAMPLING
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling

log = logging.getLogger(__name__)


HEAD_BYTES = 16 << 20  # the GGUF header: metadata incl. the whole tokenizer of any current model
SAMPLES, SAMPLE_BYTES = 64, 64 << 10


def gguf_identity(path: str | Path) -> str:
    """A content fingerprint of a GGUF file for the teacher cache key, in milliseconds at any size.

    sha256 over the size, the first 16 MiB (header, every metadata key, the tokenizer) and 64 blocks of
    64 KiB spread evenly over the tensor data: ~20 MiB read, so a 5 GB teacher is not hashed in full on
    every run. Two fine-tunes or quantizations of one model differ in every tensor, so in the samples;
    a file rewritten in place at the same path (a re-export) changes the fingerprint however its mtime
    was kept, which a stat-based identity (size+mtime) would miss. Moving or copying the file keeps it.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f"gguf-id-v1:{size}:".encode())
        h.update(f.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            step = (size - HEAD_BYTES) / SAMPLES
            for i in range(SAMPLES):
                f.seek(HEAD_BYTES + int(i * step))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:32]


class LlamaCppTeacher(LiveTeacher):
    backend = "llamacpp"

    def __init__(
        self,
        model: str,
        *,
        n_ctx: int = runtime.N_CTX_TEACHER,
        n_threads: int | None = None,
        n_batch: int = runtime.N_BATCH,
        **kwargs: Any,
    ):
        path = Path(model).expanduser()
        if not path.is_file():
            raise TeacherError(
                f"teacher.model: GGUF file {path} not found (the llamacpp backend needs a .gguf path)"
            )
        super().__init__(str(path.resolve()), **kwargs)
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.n_threads = n_threads or runtime.teacher_threads()
        self._llm: Any = None
        try:
            self._identity = gguf_identity(path)
        except OSError as e:
            raise TeacherError(f"teacher.model: cannot read GGUF file {path}: {e.strerror or e}") from None

    def cache_variant(self) -> str:
        # the model path alone is not an identity: a re-export at the same path is another teacher
        return f"llamacpp@{self._identity}"

    def _load(self) -> Any:
        if self._llm is None:
            log.info("loading %s (n_ctx=%d, n_threads=%d)", self.model, self.n_ctx, self.n_threads)
            self._llm = runtime.open_llama(
                self.model,
                threads=self.n_threads,
                n_ctx=self.n_ctx,
                n_batch=self.n_batch,
                # top-k recording reads the logits of every generated token: n_ctx x vocab float32 rows
                logits_all=self.logprobs > 0,
                on_missing=lambda _e: TeacherError(
                    "teacher.backend=llamacpp needs llama-cpp-python: run scripts/setup.sh "
                    "(or pip install 'edge-distill[llamacpp]')"
                ),
            )
        return self._llm

    def _one(self, prompt: str, sampling: Sampling, seed: int | None) -> Generation:
        llm = self._load()
        self.stats.requests += 1
        try:
            out = llm.create_completion(
                prompt,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=list(sampling.stop) or None,
                seed=seed,
                **NEUTRAL_SAMPLING,
            )
        except ValueError as e:  # llama-cpp-python raises ValueError for a prompt over the context window
            return Generation.failed("context_overflow" if "context" in str(e) else "error", str(e))
        choice = out["choices"][0]
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = out.get("usage", {})
        gen = Generation(choice["text"], finish, tokens=usage.get("completion_tokens"))
        if self.logprobs:
            gen.topk = self._topk(llm, int(usage["prompt_tokens"]), choice["text"])
        return gen

    def _topk(self, llm: Any, n_prompt: int, text: str) -> Any:
        """The top-k record of the completion just generated, from llama.cpp's own logits (exact ids): the
        context holds prompt + evaluated completion tokens, `scores[i]` the logits that predicted token i+1.
        Tokens that start past the returned text (a stop string) are dropped."""
        from edge_distill.teachers.topk import from_logits_rows, tokens_within

        ids = [int(t) for t in llm.input_ids[n_prompt : llm.n_tokens]]
        starts, pos = [], 0
        for i in range(len(ids)):
            starts.append(pos)
            pos = len(llm.detokenize(ids[: i + 1], prev_tokens=None).decode("utf-8", errors="ignore"))
        ids = ids[: tokens_within(len(text), starts)]
        if len(ids) == len(starts) and pos < len(text):
            # the last sampled token was never evaluated (max_tokens reached): its logits row exists (the
            # previous token's), its id is the rest of the text when that is one token
            rest = llm.tokenize(text[pos:].encode("utf-8"), add_bos=False, special=False)
            if len(rest) == 1:
                ids.append(int(rest[0]))
        rows = llm.scores[n_prompt - 1 : n_prompt - 1 + len(ids)]
        return from_logits_rows(ids, rows, self.logprobs)

    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        for ri, r in enumerate(requests):
            for i in r.indices:
                yield ri, [i], [self._one(r.prompt, sampling, sampling.seed_for(i))]

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        super().close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    gguf: str | Path,
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    n_threads: int = 1,
    n_batch: int = 512,
    startup_timeout_s: float = 120.0,
    log_path: str | Path | None = None,
) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on 127.0.0.1 for the block; yield its base URL (".../v1").

    For tests, benchmarks and a quick local teacher; the server is always stopped on exit.
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
           "--n_threads_batch", str(n_threads), "--n_batch", str(n_batch)]  # fmt: skip
    out = open(log_path, "w", encoding="utf-8") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise TeacherError(
                    f"llama_cpp.server exited with code {proc.returncode} (command: {' '.join(cmd)})"
                )
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as resp:
                    json.loads(resp.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                if time.monotonic() > deadline:
                    raise TeacherError(
                        f"llama_cpp.server did not start within {startup_timeout_s:g}s"
                    ) from None
                time.sleep(0.25)
        log.info("llama_cpp.server serving %s at %s (pid %d)", Path(gguf).name, base_url, proc.pid)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out is not subprocess.DEVNULL:
            out.close()
