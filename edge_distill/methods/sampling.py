"""Student sampling engine: n samples per training question from the current student (SIKeD step 4, FDD
feedback), free to choose its strategy tag or forced to one.

Backends (chosen by `siked.sampler`, in one place: `make_sampler`):
- "transformers": batched `generation.generate` (left padding, n return sequences per prompt), CPU or GPU;
- "llamacpp": the student converted once to an f16 GGUF (exporters.gguf_writer) and run in-process by
  llama-cpp-python on all cores; n samples of one prompt reuse its KV prefix, so only the first pays the
  prompt; `parallel` > 1 decodes that many prompts at once (one llama.cpp context each, threads split);
- "vllm": `vllm.LLM` on the merged checkpoint (import-guarded: vLLM is CUDA-only and not installed here).
The llama.cpp and vLLM engines are opened in their runtime modules (`edge_distill/runtimes/`).
Every backend returns the response text after the prompt, ended where its answer is complete (the stop
rule of `stopping.py`; vLLM decodes to EOS and is cut afterwards); `sample_student` parses and judges it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from edge_distill.errors import ConfigError
from edge_distill.runtimes import llamacpp
from edge_distill.runtimes.llamacpp import available_cores
from edge_distill.runtimes.vllm import VllmEngine
from edge_distill.stopping import cut_answer
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Sample, Strategy

log = logging.getLogger(__name__)

SamplerBackend = Literal["transformers", "vllm", "llamacpp"]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 10
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0


class StudentSampler(Protocol):
    name: str

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        """For each prompt, `params.n` response texts (the text after the prompt, without EOS)."""
        ...


@dataclass
class SamplerStats:
    """What one sampling pass cost, for the iteration record and the benchmark."""

    backend: str
    prompts: int = 0
    samples: int = 0
    new_tokens: int = 0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def rate(x: int) -> float | None:
            return round(x / self.wall_s, 2) if self.wall_s > 0 else None

        return {
            "backend": self.backend,
            "prompts": self.prompts,
            "samples": self.samples,
            "new_tokens": self.new_tokens,
            "wall_s": round(self.wall_s, 2),
            "samples_per_s": rate(self.samples),
            "tokens_per_s": rate(self.new_tokens),
            **self.extra,
        }


class TransformersSampler:
    """Batched sampling with transformers; `batch_size` counts sequences (prompts × n) per forward."""

    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        batch_size: int = 32,
        device: str | None = None,
        generate_fn: Any = None,
        dtype: Any = None,
    ):
        from edge_distill.models import load_model, load_tokenizer

        self.model = load_model(model_dir, dtype=dtype)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.batch_size = batch_size
        # generation.generate's signature; CasCoD students pass its two-stage decoder (objectives/build.py)
        self.generate_fn = generate_fn

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        import torch

        from edge_distill.generation import generate

        torch.manual_seed(params.seed)
        return (self.generate_fn or generate)(
            self.model,
            self.tokenizer,
            prompts,
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_new_tokens=params.max_new_tokens,
            batch_size=max(1, self.batch_size // max(1, params.n)),
        )

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"])


class LlamaCppSampler:
    """llama-cpp-python on an f16 GGUF of the student (written next to it once, reused on resume)."""

    name = "llamacpp"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        gguf_path: str | Path | None = None,
        n_ctx: int = llamacpp.N_CTX_STUDENT,
        n_threads: int | None = None,
        parallel: int = 1,
    ):
        def missing(_e: ImportError) -> ConfigError:
            return ConfigError(
                "siked.sampler=llamacpp needs llama-cpp-python (pip install edge-distill[llamacpp]; "
                "see README for the portable build) or set siked.sampler=transformers"
            )

        try:
            import llama_cpp  # noqa: F401 - refuse before writing a GGUF nobody can run
        except ImportError as e:
            raise missing(e) from e
        model_dir = Path(model_dir)
        path = Path(gguf_path) if gguf_path else model_dir / "student-f16.gguf"
        if not path.is_file():
            from exporters.gguf_writer import write_gguf
            from exporters.merge import prepare_full_model

            full = prepare_full_model(model_dir, path.parent / ".gguf-work")
            write_gguf(full, path, "f16")
            log.info("wrote %s for llama.cpp sampling", path)
        self.gguf_path = path
        # llama-cpp-python's default is half the cores (1 of 2 here): use every core we may run on
        threads = n_threads or available_cores()
        self.parallel = max(1, min(parallel, threads))
        per = max(1, threads // self.parallel)
        self.n_threads = per * self.parallel
        self.contexts = [
            llamacpp.open_llama(path, threads=per, n_ctx=n_ctx, on_missing=missing)
            for _ in range(self.parallel)
        ]
        self.llm = self.contexts[0]

    def _sample_prompt(self, llm: Any, i: int, prompt: str, params: SamplingParams) -> list[str]:
        texts = []
        for j in range(params.n):  # same context: samples 2..n reuse the prompt's KV prefix
            r = llm.create_completion(
                prompt,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p if params.temperature > 0 else 1.0,
                seed=params.seed + i * params.n + j,
                stopping_criteria=llamacpp.answer_stop(llm, prompt),
                **llamacpp.NEUTRAL_SAMPLING,  # the same distribution as transformers
            )
            texts.append(cut_answer(r["choices"][0]["text"], prompt))
        return texts

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        if self.parallel == 1:
            return [self._sample_prompt(self.llm, i, p, params) for i, p in enumerate(prompts)]

        # prompt i always goes to context i % parallel; llama.cpp releases the GIL while it decodes.
        # Seeds depend on (i, j) only, so the output does not depend on `parallel`.
        def run(c: int) -> list[tuple[int, list[str]]]:
            return [
                (i, self._sample_prompt(self.contexts[c], i, prompts[i], params))
                for i in range(c, len(prompts), self.parallel)
            ]

        out: list[list[str]] = [[] for _ in prompts]
        with ThreadPoolExecutor(self.parallel) as pool:
            for part in pool.map(run, range(self.parallel)):
                for i, texts in part:
                    out[i] = texts
        return out

    def count_tokens(self, texts: list[str]) -> int:
        return sum(
            len(self.llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts if t
        )


class VllmSampler(VllmEngine):
    """vLLM on the merged student (`runtimes/vllm.py`; not runnable here: CUDA-only, not installed)."""

    name = "vllm"

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        return self.generate(None, None, prompts, n=params.n, temperature=params.temperature, top_p=params.top_p,
                             max_new_tokens=params.max_new_tokens, seed=params.seed)  # fmt: skip


def make_sampler(backend: SamplerBackend, model_dir: str | Path, **kwargs: Any) -> StudentSampler:
    """The one place that maps `siked.sampler` to a backend class."""
    if backend == "transformers":
        return TransformersSampler(model_dir, **kwargs)
    if backend == "llamacpp":
        return LlamaCppSampler(model_dir, **kwargs)
    if backend == "vllm":
        return VllmSampler(model_dir, **kwargs)
    raise ConfigError(f"siked.sampler: {backend!r} is not a sampler; choose transformers, llamacpp or vllm")


def responses_to_samples(
    problems: list[Problem],
    responses: list[list[str]],
    strategy: Strategy | None,
    *,
    judging: Judging = DEFAULT_JUDGING,
) -> list[Sample]:
    """Parse and judge student responses (one list per problem). With a forced `strategy` the tag was
    part of the prompt, so the response has none. A response without a recognizable tag keeps
    meta["parsed_strategy"] = None and is never correct."""
    from edge_distill.strategies import judge_many, parse_response

    rows: list[tuple[Problem, str, Any]] = []
    for p, texts in zip(problems, responses, strict=True):
        for text in texts:
            rows.append((p, text, parse_response(text, strategy)))
    items = [(parsed.strategy or Strategy.COT, text) for _, text, parsed in rows]
    verdicts = judge_many(items, [p.answer for p, _, _ in rows], judging=judging)
    samples = []
    for (p, text, parsed), (pred, correct) in zip(rows, verdicts, strict=True):
        chosen = parsed.strategy
        samples.append(
            Sample(
                problem_id=p.id,
                question=p.question,
                gold=p.answer,
                strategy=chosen or Strategy.COT,
                rationale=parsed.rationale,
                raw=text,
                pred=pred,
                correct=bool(correct) and chosen is not None,
                source="student",
                meta={"parsed_strategy": chosen.value if chosen else None, "forced": strategy is not None},
            )
        )
    return samples


def sample_student(
    sampler: StudentSampler,
    problems: list[Problem],
    params: SamplingParams,
    *,
    strategy: Strategy | None = None,
    judging: Judging = DEFAULT_JUDGING,
) -> tuple[list[Sample], SamplerStats]:
    """n samples per problem from the student, parsed and judged against each problem's gold answer
    (`judging`: the run's tolerance and sandbox mode)."""
    from edge_distill.strategies import student_prompt

    prompts = [student_prompt(p.question, strategy) for p in problems]
    t0 = time.perf_counter()
    responses = sampler.sample(prompts, params)
    wall = time.perf_counter() - t0
    flat = [t for texts in responses for t in texts]
    counter = getattr(sampler, "count_tokens", None)
    stats = SamplerStats(sampler.name, len(prompts), len(flat), counter(flat) if counter else 0, wall)
    log.info(
        "sampled %d responses for %d problems with %s in %.1f s", len(flat), len(prompts), sampler.name, wall
    )
    return responses_to_samples(problems, responses, strategy, judging=judging), stats
