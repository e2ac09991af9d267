"""vLLM in-process teacher (optional extra: `pip install 'edge-distill[vllm]'`, CUDA only).

Kept thin on purpose: one `LLM`, one `SamplingParams(n=K, seed=...)` per prompt, `LLM.generate` over a
chunk of prompts. vLLM cannot be installed on the CPU machines this project is developed on, so its test
drives this adapter with a stand-in `vllm` module; the HTTP teacher covers `vllm serve`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from edge_distill.errors import TeacherError
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling

log = logging.getLogger(__name__)


class VllmTeacher(LiveTeacher):
    backend = "vllm"

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        chunk_size: int = 256,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.tensor_parallel_size = tensor_parallel_size
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.chunk_size = chunk_size  # prompts per LLM.generate call: results are cached after each
        self._llm: Any = None

    def _vllm(self) -> Any:
        try:
            import vllm
        except ImportError:
            raise TeacherError(
                "teacher.backend=vllm needs vLLM (CUDA only): pip install 'edge-distill[vllm]', "
                "or serve the model with `vllm serve` and use teacher.backend=http"
            ) from None
        return vllm

    def _load(self) -> Any:
        if self._llm is None:
            vllm = self._vllm()
            self._llm = vllm.LLM(
                model=self.model,
                tensor_parallel_size=self.tensor_parallel_size,
                max_model_len=self.max_model_len,
                gpu_memory_utilization=self.gpu_memory_utilization,
            )
        return self._llm

    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        vllm = self._vllm()
        llm = self._load()
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start : start + self.chunk_size]
            params = [
                vllm.SamplingParams(
                    n=len(r.indices),
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens,
                    stop=list(sampling.stop) or None,
                    seed=sampling.seed_for(r.indices[0]),
                )
                for r in chunk
            ]
            self.stats.requests += 1
            outputs = llm.generate([r.prompt for r in chunk], params, use_tqdm=False)
            for offset, (r, out) in enumerate(zip(chunk, outputs, strict=True)):
                gens = [
                    Generation(
                        o.text, "length" if o.finish_reason == "length" else "stop", tokens=len(o.token_ids)
                    )
                    for o in out.outputs
                ]
                yield start + offset, r.indices, gens
