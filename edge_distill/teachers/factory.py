"""The one table of teacher backends: `teacher.backend` -> a builder that takes the `TeacherConfig` whole.

`make_teacher(cfg.teacher)` is the pipeline's call and the SDK's:
`make_teacher(TeacherConfig(backend="http", model="m", http={"base_url": url}))`. Backends are imported
inside their builders, so that choosing `recorded` or `http` never imports torch or llama.cpp. The names
are also listed, torch-free, in `config.TEACHER_BACKENDS` (what the config validates against); importing
this module checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_distill.config import TEACHER_BACKENDS, check_table_names
from edge_distill.errors import ConfigError
from edge_distill.teachers.base import Teacher
from edge_distill.teachers.live import Sampling

if TYPE_CHECKING:
    from edge_distill.config import TeacherConfig
    from edge_distill.teachers.topk import PieceMap


def sampling_from_config(cfg: TeacherConfig) -> Sampling:
    s = cfg.sampling
    return Sampling(
        temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, stop=tuple(s.stop), seed=s.seed
    )


def _recorded(cfg: TeacherConfig, live: dict[str, Any], pieces: PieceMap | None) -> Teacher:
    from edge_distill.teachers.recorded import RecordedTeacher

    return RecordedTeacher(cfg.model)


def _http(cfg: TeacherConfig, live: dict[str, Any], pieces: PieceMap | None) -> Teacher:
    from edge_distill.teachers.http import HttpTeacher

    return HttpTeacher(cfg.model, **cfg.http.model_dump(), pieces=pieces, **live)


def _llamacpp(cfg: TeacherConfig, live: dict[str, Any], pieces: PieceMap | None) -> Teacher:
    from edge_distill.teachers.llamacpp import LlamaCppTeacher

    return LlamaCppTeacher(cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, **live)


def _transformers(cfg: TeacherConfig, live: dict[str, Any], pieces: PieceMap | None) -> Teacher:
    from edge_distill.teachers.hf import TransformersTeacher

    return TransformersTeacher(cfg.model, batch_size=cfg.batch_size, **live)


def _vllm(cfg: TeacherConfig, live: dict[str, Any], pieces: PieceMap | None) -> Teacher:
    from edge_distill.teachers.vllm import VllmTeacher

    return VllmTeacher(cfg.model, tensor_parallel_size=cfg.tensor_parallel_size, **live)


Builder = Callable[["TeacherConfig", dict[str, Any], "PieceMap | None"], Teacher]
BACKENDS: dict[str, Builder] = {
    "recorded": _recorded,
    "http": _http,
    "llamacpp": _llamacpp,
    "transformers": _transformers,
    "vllm": _vllm,
}
# backends that can record the teacher's top-k log-probs (train.kd offline)
_NO_LOGPROBS = ("recorded", "vllm")
check_table_names(BACKENDS, TEACHER_BACKENDS, "teachers/factory.py: BACKENDS", "TEACHER_BACKENDS")


def make_teacher(
    cfg: TeacherConfig,
    *,
    progress: bool | None = None,
    logprobs: int = 0,
    pieces: PieceMap | None = None,
) -> Teacher:
    """The teacher `cfg` (the `teacher:` section, whole) describes.

    `cfg.model`: recorded → "builtin:gsm8k" or a JSONL of rationales; http → the model name the server
    expects; llamacpp → a GGUF path; transformers/vllm → a local HF directory. `cfg.cache`: "auto" (the
    shared ~/.cache/edge-distill/teacher.sqlite), a file, or None (no cache). `progress`: None = a bar only on
    a terminal. `logprobs` > 0 records the teacher's top-`logprobs` log-probs per generated token (offline
    logit distillation, set by the teach stage); `pieces` maps a server's token texts to the shared
    tokenizer's ids (http only).
    """
    build = BACKENDS.get(cfg.backend)
    if build is None:  # a TeacherConfig built with model_construct skips validation
        raise ConfigError(f"teacher.backend: {cfg.backend!r} is not one of {', '.join(BACKENDS)}")
    if logprobs and cfg.backend in _NO_LOGPROBS:
        raise ConfigError(
            f"train.kd.source=offline needs the teacher's log-probs, which teacher.backend={cfg.backend} does "
            "not record: use teacher.backend http (e.g. against `vllm serve` or llama_cpp.server), llamacpp or "
            "transformers, or train.kd.source=online with a local train.kd.teacher_model"
        )
    live: dict[str, Any] = {
        "sampling": sampling_from_config(cfg),
        "n_shots": cfg.n_shots,
        "cache": cfg.cache,
        "progress": progress,
        "logprobs": logprobs,
    }
    return build(cfg, live, pieces)
