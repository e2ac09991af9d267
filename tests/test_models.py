"""Model resolution, one-time conversion, loading; the SmolLM2 conversion itself is `slow`."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edge_distill.errors import ModelError
from edge_distill.models import DONE_MARKER, build_once, load_model, load_tokenizer, resolve_model


def test_local_dir_resolves_to_itself(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


@pytest.mark.parametrize(
    "spec,match",
    [
        ("/no/such/model", "no such directory"),
        ("builtin:gpt5", "unknown builtin"),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", "HF_HUB_OFFLINE"),
    ],
)
def test_unresolvable_specs_say_what_to_do(spec, match, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=match) as e:
        resolve_model(spec)
    assert spec in str(e.value)


def test_dir_without_model_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="not a HF model directory"):
        resolve_model(str(tmp_path))


def test_load_tokenizer_adds_pad_and_left_padding(tmp_path):
    from tests.tiny_models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == loaded.eos_token and loaded.padding_side == "left"


def test_load_model_rejects_non_model_dir(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_model(tmp_path)


def test_build_once_serializes_concurrent_builders(tmp_path):
    """Two concurrent callers: one builds, the other waits and reuses; a failed build leaves nothing."""
    target = tmp_path / "models" / "m"
    calls: list[int] = []

    def write(tmp):
        calls.append(1)
        time.sleep(0.3)  # long enough that the second caller arrives while the first holds the lock
        (tmp / "weights.bin").write_text("w")

    threads = [threading.Thread(target=build_once, args=(target, write)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert (target / "weights.bin").read_text() == "w" and (target / DONE_MARKER).is_file()
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []

    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    other = tmp_path / "models" / "other"
    with pytest.raises(RuntimeError):
        build_once(other, broken)
    assert not other.exists()
    assert [p.name for p in other.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_smollm2_conversion_roundtrips_and_generates(tmp_path_factory, monkeypatch):
    from edge_distill.generation import generate
    from edge_distill.strategies import student_prompt

    monkeypatch.setenv("EDGE_DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
    path = resolve_model("builtin:smollm2-135m")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 576
    assert "quantization_config" not in cfg  # dequantized: a plain fp32 checkpoint
    stamp = (path / "model.safetensors").stat().st_mtime
    assert resolve_model("builtin:smollm2-135m") == path  # cached: not converted again
    assert (path / "model.safetensors").stat().st_mtime == stamp

    tok = load_tokenizer(path)
    text = "Question: Tom has 12 apples and eats 4.\nThe answer is 8."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) < len(text) // 2  # a real BPE vocab, not bytes
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    # the converted tokenizer splits digits one by one, like SmolLM2's own (tests/test_tokenizer_fidelity.py)
    assert path.name.endswith("-v2")  # the cache key moved when the tokenizer changed: old caches are rebuilt
    digits = tok("x  12 345", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in digits] == ["x", "  ", "1", "2", " ", "3", "4", "5"]

    model = load_model(path)
    out = generate(
        model, tok, [student_prompt("What is 2 + 3?"), "The capital of France is"], max_new_tokens=12
    )
    assert all(o[0].strip() for o in out), out
    assert "Paris" in out[1][0]  # the dequantized weights are the real model, not noise
