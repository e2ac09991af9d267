"""vLLM (CUDA only; not installed on the machines this project is developed on): the one place a student is
opened in a `vllm.LLM` — the SIKeD/FDD sampler (`methods/sampling.VllmSampler`) and `eval.engine=vllm`.

`VllmEngine.generate` has `generation.generate`'s calling convention (model, tokenizer, prompts, keyword
decoding options), so eval and CasCoD's two-stage decoder use it where they would use transformers. vLLM
decodes to EOS (it has no per-token hook for the answer rule), so texts are cut afterwards
(`stopping.cut_answer`: the same text, decoded further). Torch-free at import: `vllm` is imported inside.
Its tests use a stand-in `vllm` module (tests/test_eval_engines.py, tests/test_sampling.py).

The vLLM *teacher* (`teachers/vllm.py`) samples k completions per prompt with per-prompt seeds and stays there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_distill.errors import ConfigError
from edge_distill.stopping import cut_answer


class VllmEngine:
    """`vllm.LLM` on a merged student (a LoRA adapter is merged into full weights once, next to it)."""

    def __init__(self, model_dir: str | Path, *, tensor_parallel_size: int = 1, key: str = "siked.sampler"):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ConfigError(
                f"{key}=vllm needs vLLM on a CUDA machine (pip install edge-distill[vllm]); "
                f"set {key}=transformers to use transformers instead"
            ) from e
        model_dir = Path(model_dir)
        if (model_dir / "adapter_config.json").is_file():  # vLLM serves full weights: merge a LoRA once
            from exporters.merge import prepare_full_model

            model_dir = prepare_full_model(model_dir, model_dir / ".vllm-work")
        self.llm = LLM(model=str(model_dir), tensor_parallel_size=tensor_parallel_size)

    def generate(
        self, _model: Any, _tokenizer: Any, prompts: Sequence[str], **options: Any
    ) -> list[list[str]]:
        """`n` completions per prompt, called as `generation.generate` is (model and tokenizer unused): its
        decoding options `n`, `temperature`, `top_p`, `max_new_tokens`, `stop_strings`, `stop_at_answer`, with
        its defaults, plus `seed`; its batching options are ignored (vLLM schedules every prompt itself,
        continuous batching over a paged KV cache)."""
        from vllm import SamplingParams

        temperature = float(options.get("temperature", 0.0))
        stop = options.get("stop_strings")
        sp = SamplingParams(
            n=int(options.get("n", 1)),
            temperature=temperature,
            top_p=float(options.get("top_p", 1.0)) if temperature > 0 else 1.0,
            max_tokens=int(options.get("max_new_tokens", 256)),
            seed=int(options.get("seed", 0)),
            stop=list(stop) if stop else None,
        )
        prompts = list(prompts)
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        if not options.get("stop_at_answer", True):
            return [[o.text for o in r.outputs] for r in outs]
        return [[cut_answer(o.text, p) for o in r.outputs] for p, r in zip(prompts, outs, strict=True)]

    def count_tokens(self, texts: list[str]) -> int:
        tok = self.llm.get_tokenizer()
        return sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
