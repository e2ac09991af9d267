"""Run onnxruntime-genai's model builder, with one fix for transformers 5 configs (`python -m exporters.onnx_builder`
takes the builder's own arguments).

transformers 5 keeps Gemma 3's rope as one dict per layer type (`rope_parameters = {"full_attention": {...},
"sliding_attention": {...}}`); onnxruntime-genai 0.18's builder reads the flat transformers-4 form
(`rope_parameters["rope_type"]`, `rope_theta`, `rope_local_base_freq`) and fails with KeyError 'rope_type'. The
builder loads the config with `AutoConfig`, which re-nests a flat config.json, so the fix cannot be a rewritten
config.json: it flattens the loaded config in-process before the builder's Gemma 3 class reads it. Only plain rope
on both layer types is flattened (the builder's local cache reuses the global scaling, so a scaled global rope would
be wrong); anything else is left for the builder to refuse. Greedy tokens equal torch's on a tiny random Gemma 3
with a sliding window shorter than the prompt (tests/test_export_archs.py).
"""

from __future__ import annotations

import runpy
from typing import Any

BUILDER = "onnxruntime_genai.models.builder"


def gemma3_scaled_rope(cfg: dict[str, Any]) -> dict[str, str]:
    """Layer type -> rope_type for each Gemma 3 layer type whose rope is not plain, read from config.json in either
    form (transformers 5 `rope_parameters` per layer type, transformers 4 `rope_scaling` for the global layers)."""
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and all(isinstance(v, dict) for v in rope.values()):
        types = {k: v.get("rope_type", "default") for k, v in rope.items()}
    else:
        scaling = cfg.get("rope_scaling") or {}
        types = {"full_attention": scaling.get("rope_type", scaling.get("type", "default"))}
    return {k: t for k, t in types.items() if t != "default"}


def flatten_gemma3_rope(config: Any) -> None:
    """transformers 5 per-layer-type rope -> the flat attributes the builder's Gemma3Model reads (in place)."""
    rope = getattr(config, "rope_parameters", None)
    if not (isinstance(rope, dict) and {"full_attention", "sliding_attention"} <= rope.keys()):
        return
    full, local = rope["full_attention"], rope["sliding_attention"]
    if full.get("rope_type") != "default" or local.get("rope_type") != "default":
        return
    config.rope_parameters = dict(full)
    config.rope_theta = full["rope_theta"]
    config.rope_local_base_freq = local["rope_theta"]


def _patch_builder() -> None:
    """Flatten before the builder's Gemma3Model reads the config. The builder imports its classes as the top-level
    package `builders` (onnxruntime_genai.models puts its own folder on sys.path), so that is the class to patch."""
    import importlib

    import onnxruntime_genai.models  # noqa: F401  (adds the builder's folder to sys.path)

    gemma3 = importlib.import_module("builders.gemma").Gemma3Model
    original = gemma3.make_config_init

    def make_config_init(self: Any, config: Any) -> None:
        flatten_gemma3_rope(config)
        original(self, config)

    gemma3.make_config_init = make_config_init


if __name__ == "__main__":
    _patch_builder()
    runpy.run_module(BUILDER, run_name="__main__", alter_sys=True)
