"""The one place that maps a teacher backend name to its class.

`make_teacher(backend, model, ...)` takes plain arguments; `teacher_from_config(cfg.teacher)` is the
pipeline's shortcut that unpacks a `TeacherConfig`. Backends are imported here, lazily, so that choosing
`recorded` or `http` never imports torch or llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_distill.errors import ConfigError
from edge_distill.teachers.base import Teacher
from edge_distill.teachers.cache import TeacherCache
from edge_distill.teachers.live import Sampling

if TYPE_CHECKING:
    from edge_distill.config import DataConfig, TeacherConfig

BACKENDS = ("recorded", "http", "llamacpp", "transformers", "vllm")


def make_teacher(
    backend: str | TeacherConfig,
    model: str | None = None,
    *,
    sampling: Sampling | None = None,
    n_shots: int = 8,
    cache_path: str | Path | TeacherCache | None = "auto",
    progress: bool | None = None,
    # http
    base_url: str = "http://127.0.0.1:8000/v1",
    api_key_env: str | None = "OPENAI_API_KEY",
    endpoint: str = "completions",
    concurrency: int = 8,
    timeout_s: float = 120.0,
    max_retries: int = 4,
    backoff_s: float = 0.5,
    supports_n: bool = False,
    max_response_bytes: int = 8 << 20,
    extra_body: dict[str, Any] | None = None,
    # llamacpp
    n_ctx: int = 4096,
    n_threads: int | None = None,
    # transformers
    batch_size: int = 8,
    # vllm
    tensor_parallel_size: int = 1,
    data_cfg: DataConfig | None = None,
    # offline logit distillation: record the top-`logprobs` teacher log-probs per token; `pieces` maps a
    # server's token texts to the shared tokenizer's ids (http only)
    logprobs: int = 0,
    pieces: Any = None,
) -> Teacher:
    """A teacher for `backend` ∈ recorded | http | llamacpp | transformers | vllm.

    `model`: recorded → "builtin:gsm8k" or a JSONL of rationales; http → the model name the server
    expects; llamacpp → a GGUF path; transformers/vllm → a local HF directory. `cache_path`: "auto" (the
    shared ~/.cache/edge-distill/teacher.sqlite), a file, an open TeacherCache, or None (no cache).
    A TeacherConfig may be passed instead of `backend` (see `teacher_from_config`).
    """
    if not isinstance(backend, str):
        return teacher_from_config(
            backend, data_cfg=data_cfg, progress=progress, logprobs=logprobs, pieces=pieces
        )
    if model is None:
        raise ConfigError("teacher.model: required (a model name, GGUF path or HF directory)")
    if logprobs and backend in ("recorded", "vllm"):
        raise ConfigError(
            f"train.kd.source=offline needs the teacher's log-probs, which teacher.backend={backend} does not "
            "record: use teacher.backend http (e.g. against `vllm serve` or llama_cpp.server), llamacpp or "
            "transformers, or train.kd.source=online with a local train.kd.teacher_model"
        )
    if backend == "recorded":
        from edge_distill.teachers.recorded import RecordedTeacher

        return RecordedTeacher(model)
    live: dict[str, Any] = {
        "sampling": sampling,
        "n_shots": n_shots,
        "cache": cache_path,
        "progress": progress,
        "logprobs": logprobs,
    }
    if backend == "http":
        from edge_distill.teachers.http import HttpTeacher

        return HttpTeacher(
            model,
            base_url=base_url,
            api_key_env=api_key_env,
            endpoint=endpoint,  # type: ignore[arg-type]
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            supports_n=supports_n,
            max_response_bytes=max_response_bytes,
            extra_body=extra_body,
            pieces=pieces,
            **live,
        )
    if backend == "llamacpp":
        from edge_distill.teachers.llamacpp import LlamaCppTeacher

        return LlamaCppTeacher(model, n_ctx=n_ctx, n_threads=n_threads, **live)
    if backend == "transformers":
        from edge_distill.teachers.hf import TransformersTeacher

        return TransformersTeacher(model, batch_size=batch_size, **live)
    if backend == "vllm":
        from edge_distill.teachers.vllm import VllmTeacher

        return VllmTeacher(model, tensor_parallel_size=tensor_parallel_size, **live)
    raise ConfigError(f"teacher.backend: {backend!r} is not one of {', '.join(BACKENDS)}")


def sampling_from_config(cfg: TeacherConfig) -> Sampling:
    s = cfg.sampling
    return Sampling(
        temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, stop=tuple(s.stop), seed=s.seed
    )


def teacher_from_config(
    cfg: TeacherConfig,
    *,
    data_cfg: DataConfig | None = None,
    progress: bool | None = None,
    logprobs: int = 0,
    pieces: Any = None,
) -> Teacher:
    """Unpack `cfg.teacher` into `make_teacher`. `data_cfg` is accepted for the pipeline's call and unused:
    the recorded teacher reads the socratic text from the problems themselves. `logprobs`/`pieces`: see
    `make_teacher` (set by the teach stage when `train.kd` distills offline)."""
    h = cfg.http
    return make_teacher(
        cfg.backend,
        cfg.model,
        sampling=sampling_from_config(cfg),
        n_shots=cfg.n_shots,
        cache_path=cfg.cache,
        progress=progress,
        base_url=h.base_url,
        api_key_env=h.api_key_env,
        endpoint=h.endpoint,
        concurrency=h.concurrency,
        timeout_s=h.timeout_s,
        max_retries=h.max_retries,
        backoff_s=h.backoff_s,
        supports_n=h.supports_n,
        max_response_bytes=h.max_response_bytes,
        extra_body=h.extra_body,
        n_ctx=cfg.n_ctx,
        n_threads=cfg.n_threads,
        batch_size=cfg.batch_size,
        tensor_parallel_size=cfg.tensor_parallel_size,
        logprobs=logprobs,
        pieces=pieces,
    )
