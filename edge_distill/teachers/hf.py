"""transformers in-process teacher: batched `generate` for small local teachers (an HF model directory).

Missing (prompt, sample) pairs are sorted by prompt length and generated `batch_size` at a time with left
padding. Each batch is seeded from the sampling seed, so a given set of missing samples is reproducible.
Stop strings end a sequence early (`stop_strings`) and are cut from the text, as the OpenAI servers do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edge_distill.errors import TeacherError
from edge_distill.teachers.live import Generation, LiveTeacher, Request, Sampling

log = logging.getLogger(__name__)


def _topk(tok: Any, ids: list[int], logits: list[torch.Tensor], text: str, k: int) -> Any:
    """The top-k record of one generated row: tokens that start inside the returned text, and the raw
    logits that predicted each of them."""
    from edge_distill.teachers.topk import from_logits_rows, tokens_within

    starts = [len(tok.decode(ids[:i], skip_special_tokens=True)) for i in range(len(ids))]
    n = tokens_within(len(text), starts)
    rows = torch.stack(logits[:n]).float().cpu().numpy() if n else torch.zeros(0, 1).numpy()
    return from_logits_rows(ids[:n], rows, k)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Text up to the first stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class TransformersTeacher(LiveTeacher):
    backend = "transformers"

    def __init__(self, model: str, *, batch_size: int = 8, device: str | None = None, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model: Any = None
        self._tok: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            try:
                tok = AutoTokenizer.from_pretrained(self.model)
                model = AutoModelForCausalLM.from_pretrained(self.model)
            except OSError as e:
                raise TeacherError(
                    f"teacher.model: cannot load {self.model!r} with transformers: {e}"
                ) from None
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._model, self._tok = model.to(self.device).eval(), tok
        return self._model, self._tok

    @torch.inference_mode()
    def _batch(self, prompts: list[str], sampling: Sampling, seed: int | None) -> list[Generation]:
        model, tok = self._load()
        self.stats.requests += 1
        enc = tok(prompts, return_tensors="pt", padding=True).to(self.device)
        if seed is not None:
            torch.manual_seed(seed)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": tok.pad_token_id}
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        if self.logprobs:  # the raw logits of every step (before temperature/top-p) for the top-k record
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        result = model.generate(**enc, **kwargs)
        sequences = result.sequences if self.logprobs else result
        out = sequences[:, enc["input_ids"].shape[1] :]
        eos = {tok.eos_token_id, tok.pad_token_id} - {None}
        gens = []
        for b, row in enumerate(out.tolist()):
            n = next((j for j, t in enumerate(row) if t in eos), len(row))
            text, stopped = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), sampling.stop)
            hit_limit = n == len(row) and len(row) >= sampling.max_tokens and not stopped
            gen = Generation(text, "length" if hit_limit else "stop", tokens=n)
            if self.logprobs:
                gen.topk = _topk(tok, row[:n], [step[b] for step in result.logits[:n]], text, self.logprobs)
            gens.append(gen)
        return gens

    def _run(
        self, requests: list[Request], sampling: Sampling
    ) -> Iterator[tuple[int, list[int], list[Generation]]]:
        pairs = sorted(
            ((ri, i) for ri, r in enumerate(requests) for i in r.indices),
            key=lambda p: -len(requests[p[0]].prompt),
        )
        for b, start in enumerate(range(0, len(pairs), self.batch_size)):
            chunk = pairs[start : start + self.batch_size]
            seed = None if sampling.seed is None else sampling.seed * 1_000_003 + b
            try:
                gens = self._batch([requests[ri].prompt for ri, _ in chunk], sampling, seed)
            except (RuntimeError, ValueError) as e:  # e.g. out of memory, prompt longer than the model
                log.warning("transformers teacher batch failed: %s", e)
                gens = [Generation.failed("error", str(e)) for _ in chunk]
            for (ri, i), g in zip(chunk, gens, strict=True):
                yield ri, [i], [g]
