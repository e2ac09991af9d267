"""make_teacher: every backend name maps to its class; shipped teacher configs load and build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_distill.config import TEACHER_BACKENDS, TeacherConfig, load_config
from edge_distill.errors import ConfigError, TeacherError
from edge_distill.teachers.base import Teacher
from edge_distill.teachers.factory import BACKENDS, make_teacher
from edge_distill.teachers.http import HttpTeacher
from edge_distill.teachers.live import Sampling
from edge_distill.teachers.vllm import VllmTeacher

CONFIGS = sorted(Path(__file__).parent.parent.glob("configs/teacher-*.yaml"))


def test_backends_map_to_classes(tmp_path: Path, tiny_model_dir: Path) -> None:
    from edge_distill.teachers.hf import TransformersTeacher
    from edge_distill.teachers.llamacpp import LlamaCppTeacher
    from edge_distill.teachers.recorded import RecordedTeacher

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")  # never loaded: backends load lazily, on the first cache miss
    cache = tmp_path / "c.sqlite"
    built = {
        "recorded": make_teacher(TeacherConfig(backend="recorded", model="builtin:gsm8k")),
        "http": make_teacher(
            TeacherConfig(
                backend="http", model="m", cache=str(cache),
                http={"base_url": "http://127.0.0.1:9/v1", "concurrency": 3},
            )
        ),
        "llamacpp": make_teacher(
            TeacherConfig(backend="llamacpp", model=str(gguf), cache=str(cache), n_ctx=512, n_threads=1)
        ),
        "transformers": make_teacher(
            TeacherConfig(backend="transformers", model=str(tiny_model_dir), cache=None, batch_size=2)
        ),
        "vllm": make_teacher(TeacherConfig(backend="vllm", model="m", cache=None, tensor_parallel_size=2)),
    }  # fmt: skip
    classes = [RecordedTeacher, HttpTeacher, LlamaCppTeacher, TransformersTeacher, VllmTeacher]
    for (name, teacher), cls in zip(built.items(), classes, strict=True):
        assert type(teacher) is cls, name
        assert isinstance(teacher, Teacher)
    assert built["http"].concurrency == 3  # type: ignore[attr-defined]
    assert built["llamacpp"].n_ctx == 512  # type: ignore[attr-defined]
    assert built["vllm"].tensor_parallel_size == 2  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"teacher\.backend: .*one of recorded, http"):
        load_config(None, ["teacher.backend=openai"])
    with pytest.raises(TeacherError, match="GGUF file .* not found"):
        make_teacher(TeacherConfig(backend="llamacpp", model=str(tmp_path / "missing.gguf")))


def test_the_config_names_the_backends_of_the_table() -> None:
    assert tuple(BACKENDS) == TEACHER_BACKENDS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_teacher_configs_build(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, [f"teacher.cache={tmp_path / 'c.sqlite'}"])
    if cfg.teacher.backend == "llamacpp":
        gguf = tmp_path / "t.gguf"
        gguf.write_bytes(b"GGUF")
        cfg.teacher.model = str(gguf)
    teacher = make_teacher(cfg.teacher)  # the pipeline's call
    assert teacher.name.startswith(cfg.teacher.backend)
    s = cfg.teacher.sampling
    assert teacher.sampling == Sampling(s.temperature, s.top_p, s.max_tokens, tuple(s.stop), s.seed)  # type: ignore[attr-defined]
    if isinstance(teacher, HttpTeacher):
        assert teacher.url.startswith(cfg.teacher.http.base_url)
        assert teacher.extra_body == cfg.teacher.http.extra_body


def test_default_config_is_the_recorded_teacher() -> None:
    from edge_distill.teachers.recorded import RecordedTeacher

    assert isinstance(make_teacher(load_config(None).teacher), RecordedTeacher)


def test_http_teacher_does_not_import_torch_or_llama_cpp() -> None:
    code = (
        "import sys; from edge_distill.config import TeacherConfig; "
        "from edge_distill.teachers.factory import make_teacher; "
        "make_teacher(TeacherConfig(backend='http', model='m', cache=None)); "
        "print(sorted(m for m in ('torch', 'llama_cpp', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
