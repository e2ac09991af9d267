"""llama.cpp through llama-cpp-python: the one place a `llama_cpp.Llama` is built.

Who opens a GGUF here: the llamacpp teacher (`teachers/llamacpp.py`), the SIKeD/FDD sampler
(`methods/sampling.LlamaCppSampler`), export-time parity (`exporters/parity.LlamaCppRuntime`) and the device
bench (`device_profiles/runtimes.LlamaCppSession`). Each asks `open_llama` with its purpose's context size and
thread count, whose defaults are the constants and `*_threads` functions below; llama.cpp's own log is off
everywhere (`verbose=False`).

Torch-free at import; `llama_cpp` is imported inside `open_llama`, so a device install without it still
imports this module (and gets the caller's own "install llama-cpp-python" error when it opens a model).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_distill.stopping import AnswerStop

# Context windows, by use: prompt + completion must fit.
N_CTX_TEACHER = 4096  # a teacher's few-shot prompt and its long rationale
N_CTX_STUDENT = 2048  # a student prompt and its <= 512-token response (sampler, device bench)
N_CTX_PARITY = 1024  # export parity: the held-out fidelity texts (~250 tokens each) and the greedy prompts
N_BATCH = 512  # llama.cpp's prompt-processing batch (llama-cpp-python's default)

# llama.cpp's sampler extras off: sampling from temperature + top-p only, the distribution transformers uses
NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
# greedy through `Llama.generate` (the device bench): argmax, nothing else applied
GREEDY = {"top_k": 1, "top_p": 1.0, "min_p": 0.0, "temp": 0.0, "repeat_penalty": 1.0}


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def teacher_threads() -> int:
    """A teacher's default: half the machine's cores (llama-cpp-python's own default)."""
    return max(1, (os.cpu_count() or 2) // 2)


def parity_threads() -> int:
    """Export parity's default: at most 4 (a check of a few hundred tokens; more threads only contend)."""
    return min(4, os.cpu_count() or 1)


def open_llama(
    model_path: str | Path,
    *,
    threads: int,
    n_ctx: int = N_CTX_STUDENT,
    n_batch: int = N_BATCH,
    logits_all: bool = False,
    seed: int | None = None,
    on_missing: Callable[[ImportError], Exception] | None = None,
) -> Any:
    """A `llama_cpp.Llama` on `model_path` with `threads` for both prompt and decode, quiet.

    `logits_all` keeps every position's logits (`Llama.scores`: parity, teacher top-k); `seed` fixes llama.cpp's
    sampler RNG (None: llama-cpp-python's default). A missing llama-cpp-python raises `on_missing(error)`,
    the caller's message for its users (the ImportError itself without one)."""
    try:
        from llama_cpp import Llama
    except ImportError as e:
        if on_missing is None:
            raise
        raise on_missing(e) from e
    extra = {} if seed is None else {"seed": seed}
    return Llama(
        model_path=str(model_path),
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
        **extra,
    )


class _AnswerComplete:
    """llama-cpp-python stopping criterion: `stopping.AnswerStop` on the text generated so far. It is called
    with every token evaluated so far, the first time with just the prompt's; the text grows by the new
    tokens' pieces (what `detokenize` of them all concatenates)."""

    def __init__(self, llm: Any, prompt: str) -> None:
        self.llm, self.rule = llm, AnswerStop(prompt)
        self.start: int | None = None
        self.text = b""

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        if self.start is None:
            self.start = len(input_ids)
        new = [int(t) for t in input_ids[self.start :]]
        self.start += len(new)
        self.text += self.llm.detokenize(new) if new else b""
        return self.rule(self.text.decode("utf-8", errors="replace")) is not None


def answer_stop(llm: Any, prompt: str) -> Any:
    """`stopping_criteria` for `Llama.create_completion`: stop once the answer after `prompt` is complete."""
    from llama_cpp import StoppingCriteriaList

    return StoppingCriteriaList([_AnswerComplete(llm, prompt)])
