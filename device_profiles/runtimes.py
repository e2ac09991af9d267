"""Run a packaged model through its real runtime: llama-cpp-python (GGUF), onnxruntime-genai (ONNX) or
ExecuTorch's Python runtime (.pte).

A `Session` loads the model file as exported, with the profile's thread count, and offers two things:
`timed_generate` (greedy, one timestamp per token: TTFT, prefill and decode speed) and `generate` (greedy text
until EOS, or with `stop_at_answer` until the answer is complete (`edge_distill.stopping`, the rule torch
decodes the student with), for the accuracy stage). llama.cpp and ORT GenAI are opened through their runtime
modules (`edge_distill/runtimes/`), which import the runtime library only when a session opens, so a device
install needs only the one it uses. The format table names each format's session class (`Format.bench_session`).
Measurements run in a child process (see `worker.py`) so peak RSS is the model's alone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_distill.errors import EdgeDistillError
from edge_distill.runtimes import llamacpp
from edge_distill.runtimes.ortgenai import OrtGenAI
from edge_distill.stopping import AnswerStop, cut_answer

log = logging.getLogger(__name__)


class RuntimeMissing(EdgeDistillError):
    """The runtime a package needs is not installed on this machine."""


@dataclass(frozen=True)
class GenTiming:
    """One greedy generation: wall-clock timestamps relative to the call, one per generated token."""

    prompt_tokens: int
    token_times: list[float]  # seconds since the call, when each new token became available
    tokens: list[int]

    @property
    def ttft_s(self) -> float:
        return self.token_times[0]

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.token_times[0]

    @property
    def decode_tok_s(self) -> float:
        """Tokens after the first, over the time after the first (the first is prefill's)."""
        n = len(self.token_times) - 1
        return n / (self.token_times[-1] - self.token_times[0]) if n > 0 else float("nan")


class Session(Protocol):
    runtime: str

    def tokenize(self, text: str) -> list[int]: ...
    def timed_generate(self, prompt_ids: list[int], new_tokens: int) -> GenTiming: ...
    def generate(self, prompt: str, max_new_tokens: int, stop_at_answer: bool = False) -> str: ...


class LlamaCppSession:
    runtime = "llama.cpp"

    def __init__(self, model_file: Path, threads: int, n_ctx: int = llamacpp.N_CTX_STUDENT):
        def missing(e: ImportError) -> RuntimeMissing:
            return RuntimeMissing(
                "this GGUF package needs llama-cpp-python: pip install 'edge-distill[llamacpp]' "
                f"(it compiles; see README) ({e})"
            )

        self._llm = llamacpp.open_llama(model_file, threads=threads, n_ctx=n_ctx, seed=0, on_missing=missing)
        self._eos = self._llm.token_eos()

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def _greedy(self, ids: list[int]):  # noqa: ANN202 - llama_cpp's generator type
        self._llm.reset()  # otherwise generate() reuses the KV cache of a common prefix
        return self._llm.generate(ids, **llamacpp.GREEDY)

    def timed_generate(self, prompt_ids: list[int], new_tokens: int) -> GenTiming:
        times: list[float] = []
        out: list[int] = []
        t0 = time.perf_counter()
        for tok in self._greedy(prompt_ids):  # generation continues past EOS: fixed length for timing
            times.append(time.perf_counter() - t0)
            out.append(tok)
            if len(out) >= new_tokens:
                break
        return GenTiming(len(prompt_ids), times, out)

    def generate(self, prompt: str, max_new_tokens: int, stop_at_answer: bool = False) -> str:
        out: list[int] = []
        text = b""  # detokenize concatenates the tokens' pieces: grown one piece a token
        rule = AnswerStop(prompt) if stop_at_answer else None
        for tok in self._greedy(self.tokenize(prompt)):
            if tok == self._eos or len(out) >= max_new_tokens:
                break
            out.append(tok)
            text += self._llm.detokenize([tok])
            if rule is not None and rule(text.decode("utf-8", errors="replace")) is not None:
                break
        return _returned(self._llm.detokenize(out).decode("utf-8", errors="replace"), prompt, stop_at_answer)


class OrtGenAISession:
    runtime = "onnxruntime-genai"

    def __init__(self, model_dir: Path, threads: int):
        def missing(e: ImportError) -> RuntimeMissing:
            return RuntimeMissing(
                f"this ONNX package needs onnxruntime-genai: pip install 'edge-distill[device]' ({e})"
            )

        self._ort = OrtGenAI(model_dir, threads=threads, on_missing=missing)
        self._tok = self._ort.tokenizer()
        genai = json.loads((model_dir / "genai_config.json").read_text())["model"]
        self._max_length = int(genai["context_length"])
        eos = genai.get("eos_token_id", [])
        self._eos = set(eos if isinstance(eos, list) else [eos])

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._tok.encode(text)]

    def _generator(self, ids: list[int], new_tokens: int, *, ignore_eos: bool):  # noqa: ANN202
        max_length = min(self._max_length, len(ids) + new_tokens)
        # ignore_eos: fixed length for timing, like the llama.cpp loop
        return self._ort.generator(max_length, min_length=max_length if ignore_eos else None)

    def timed_generate(self, prompt_ids: list[int], new_tokens: int) -> GenTiming:
        times: list[float] = []
        out: list[int] = []
        t0 = time.perf_counter()
        gen = self._generator(prompt_ids, new_tokens, ignore_eos=True)
        gen.append_tokens(prompt_ids)
        while not gen.is_done() and len(out) < new_tokens:
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
            times.append(time.perf_counter() - t0)
        return GenTiming(len(prompt_ids), times, out)

    def generate(self, prompt: str, max_new_tokens: int, stop_at_answer: bool = False) -> str:
        ids = self.tokenize(prompt)
        gen = self._generator(ids, max_new_tokens, ignore_eos=False)
        gen.append_tokens(ids)
        out: list[int] = []
        rule = AnswerStop(prompt) if stop_at_answer else None
        while not gen.is_done() and len(out) < max_new_tokens:
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
            if rule is not None and out[-1] not in self._eos and rule(str(self._tok.decode(out))) is not None:
                break
        while out and out[-1] in self._eos:  # ORT GenAI stops *at* EOS and returns it as the last token
            out.pop()
        return _returned(str(self._tok.decode(out)), prompt, stop_at_answer)


def _returned(text: str, prompt: str, stop_at_answer: bool) -> str:
    """The completion as every student decoder returns it: cut where its answer is complete."""
    return cut_answer(text, prompt) if stop_at_answer else text


class ExecuTorchSession:
    """A package's model.pte in ExecuTorch's Python runtime (XNNPACK), tokenized with the C++ HFTokenizer the
    Android/iOS runners use. ExecuTorch runs in a process of its own (edge_distill/runtimes/executorch.py), so
    `process_rss_mb` reports that process's memory. Prefill is one call over the prompt; each decode step is one
    call with one token, timed in that process."""

    runtime = "executorch"

    def __init__(self, model_file: Path, threads: int):
        from edge_distill.runtimes.executorch import ExecuTorchMissing, ExecuTorchProgram

        try:
            self._program = ExecuTorchProgram(model_file, threads, Path(model_file).parent / "tokenizer.json")
        except ExecuTorchMissing as e:
            raise RuntimeMissing(str(e)) from None

    def tokenize(self, text: str) -> list[int]:
        return self._program.encode(text)

    def timed_generate(self, prompt_ids: list[int], new_tokens: int) -> GenTiming:
        out, times = self._program.greedy(
            prompt_ids, new_tokens, stop_at_eos=False
        )  # fixed length for timing
        return GenTiming(len(prompt_ids), times, out)

    def generate(self, prompt: str, max_new_tokens: int, stop_at_answer: bool = False) -> str:
        return self._program.generate(prompt, max_new_tokens, stop_at_answer)

    def process_rss_mb(self) -> tuple[float, float]:
        """(before the model was loaded, peak) RSS of the ExecuTorch process, MiB."""
        return self._program.rss_mb()


def session_ref(runtime: str) -> str:
    """The "module:Class" of `runtime`'s bench session, as the format table names it (the worker child gets
    this, so it opens exactly the class the parent's table says)."""
    from exporters.errors import ExportError
    from exporters.formats import format_for_runtime

    try:
        return format_for_runtime(runtime).bench_session
    except ExportError as e:
        raise EdgeDistillError(str(e)) from None


def open_session(runtime: str, model_path: Path, threads: int, session: str | None = None) -> Session:
    """Open the package's model in `runtime` with `session` ("module:Class"; default: the class the format
    table names for the runtime)."""
    import importlib

    t0 = time.perf_counter()
    module, _, attr = (session or session_ref(runtime)).partition(":")
    session_cls = getattr(importlib.import_module(module), attr)
    opened: Session = session_cls(model_path, threads)
    log.info(
        "loaded %s with %s (%d threads) in %.2fs", model_path.name, runtime, threads, time.perf_counter() - t0
    )
    return opened
