"""Parity of an exported model with the torch model it came from.

The torch side is computed once (`torch_reference`); each runtime (llama.cpp, ORT GenAI) is driven with
the *same token ids* so model differences are not confused with tokenizer differences, which are checked
separately (`check_tokenizer_parity`).

Two kinds of numbers:
- **Fidelity** (the stable metric, what `--quant auto` selects on): teacher-forced over a fixed held-out text
  (`fidelity_texts`, ~1,000 tokens), the share of positions where the export's top-1 next token equals
  torch's (`top1_agreement`) and the ratio of mean NLLs (`nll_ratio` = export / source). Every position counts,
  so one early divergence does not decide the number.
- **Greedy** (kept, demoted): greedy tokens from a few prompts, counted until the first divergence
  (`token_agreement`). Exact for lossless exports; for quantized ones it moves in large steps per prompt.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_distill.runtimes import llamacpp
from edge_distill.runtimes.ortgenai import OrtGenAI
from exporters.errors import ParityError
from exporters.formats import FORMATS

logger = logging.getLogger(__name__)

# A small, fixed text set for the perplexity delta and the tokenizer check: numbers, units, symbols and
# several scripts, because those are where tokenizer/pre-tokenizer mismatches show up.
PARITY_TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? 48 / 2 = 24. 48 + 24 = 72.",
    "A train travels 120.5 km in 1.25 hours; its speed is 96.4 km/h. 3,141,592 + 2,718,281 = 5,859,873.",
    "answer = (17 * 23 - 5) // 4 + 2**10  # = 1120\nprint(answer)",
]
TOKENIZER_CHECK_STRINGS = PARITY_TEXTS + [
    "Ünïcödé café naïve: 12€, 7½ kg, −3 °C, 1e-5, 0.000123, 10^6, 99.99%",
    "日本語の数学: 三つのりんごと 5 個のみかん。 中文：小明有 12 个苹果。 한국어 123 숫자",
    "Русский текст: 2024 год, 15 задач. العربية ١٢٣ ۴۵۶. हिन्दी ४२",
    "  leading spaces\tand\ttabs\n\nnewlines   12345678901234567890  ",
    "emoji 🚀🔥 x² + y² = z²; √2 ≈ 1.41421356; π ≈ 3.14159",
]
# The held-out text of the fidelity metric: the last FIDELITY_ROWS problems of the shipped GSM8K *train* sample
# (never test), written as the student sees them (student prompt + "[cot]: <gold rationale>\nThe answer is N.").
# The quickstart trains on the first 160 train problems, so these are unseen by it; a run over the whole sample
# may have trained on them, which does not matter here: the metric compares the export with its own source.
FIDELITY_ROWS = 4


def fidelity_texts(n: int = FIDELITY_ROWS) -> list[str]:
    """The fixed held-out texts of the fidelity metric (see FIDELITY_ROWS): 985 SmolLM2 tokens for 4 rows."""
    from edge_distill import strategies
    from edge_distill.data import BUILTIN_SAMPLE, load_problems

    problems = load_problems(BUILTIN_SAMPLE, split="train", socratic=None)[-n:]
    return [
        strategies.STUDENT_PROMPT.format(question=p.question)
        + strategies.format_response("cot", strategies.gsm8k_cot(p.solution or ""), p.answer)
        for p in problems
    ]


# quants whose greedy tokens must match torch exactly: the format table's lossless types
LOSSLESS = tuple(sorted({q for f in FORMATS.values() for q in f.lossless}))


@dataclass
class Reference:
    """Torch outputs the exported model is compared with."""

    prompt_ids: list[list[int]]
    greedy: list[list[int]]
    text_ids: list[list[int]]
    nll: float  # mean negative log-likelihood per predicted token over text_ids
    eos_id: int | None
    fidelity_ids: list[list[int]] = field(default_factory=list)  # the held-out texts, tokenized
    fidelity_top1: list[list[int]] = field(default_factory=list)  # torch's argmax at every position
    fidelity_nll: float = float("nan")  # torch's mean NLL per predicted token over fidelity_ids


@dataclass
class ParityReport:
    runtime: str
    quant: str
    tokens_compared: int
    token_agreement: float  # fraction of reference greedy tokens reproduced before the first divergence
    identical_prompts: int
    n_prompts: int
    nll_ref: float
    nll_export: float
    ppl_ratio: float
    extra: dict[str, Any] = field(default_factory=dict)
    # fidelity: teacher-forced over the held-out text (None when the reference has no fidelity texts)
    fidelity_tokens: int = 0
    top1_agreement: float | None = None
    nll_ratio: float | None = None
    fidelity_nll_ref: float | None = None
    fidelity_nll_export: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runtime(Protocol):
    def greedy(self, ids: list[int], n: int, eos_id: int | None) -> list[int]: ...
    def nll(self, ids: list[int]) -> float: ...
    def logits(self, ids: list[int]) -> np.ndarray: ...  # [len(ids), vocab], teacher-forced


def _token_nlls(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """NLL of each of ids[1:] given logits[:-1] (logits: [T, V])."""
    x = logits[:-1].astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return -logp[np.arange(len(ids) - 1), ids[1:]]


def _nll_from_logits(logits: np.ndarray, ids: list[int]) -> float:
    """Mean NLL of ids[1:] given logits[:-1] (logits: [T, V])."""
    return float(_token_nlls(logits, ids).mean())


def torch_reference(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    n_tokens: int,
    texts: list[str] | None = None,
    held_out: list[str] | None = None,
) -> Reference:
    """Greedy tokens from `prompts`, NLL over `texts` and teacher-forced fidelity targets over `held_out`
    (default `fidelity_texts()`; pass [] to skip the fidelity metric)."""
    import torch

    model.eval()
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    text_ids = [tokenizer(t)["input_ids"] for t in (texts or PARITY_TEXTS)]
    fid_ids = [tokenizer(t)["input_ids"] for t in (fidelity_texts() if held_out is None else held_out)]
    eos = tokenizer.eos_token_id
    greedy = []
    with torch.no_grad():
        for ids in prompt_ids:
            out: list[int] = []
            step = model(torch.tensor([ids]), use_cache=True)
            for _ in range(n_tokens):
                nxt = int(step.logits[0, -1].argmax())
                out.append(nxt)
                if nxt == eos or len(out) == n_tokens:
                    break
                step = model(torch.tensor([[nxt]]), past_key_values=step.past_key_values, use_cache=True)
            greedy.append(out)
        nlls = [
            _nll_from_logits(model(torch.tensor([ids])).logits[0].float().numpy(), ids) for ids in text_ids
        ]
        fid_logits = [model(torch.tensor([ids])).logits[0].float().numpy() for ids in fid_ids]
    top1 = [lg[:-1].argmax(axis=-1).tolist() for lg in fid_logits]
    fid_nll = (
        float(
            np.concatenate([_token_nlls(lg, ids) for lg, ids in zip(fid_logits, fid_ids, strict=True)]).mean()
        )
        if fid_ids
        else float("nan")
    )
    return Reference(prompt_ids, greedy, text_ids, float(np.mean(nlls)), eos, fid_ids, top1, fid_nll)


class LlamaCppRuntime:
    """A GGUF in llama.cpp (`edge_distill/runtimes/llamacpp.py`), every position's logits kept."""

    def __init__(self, gguf_path: Path, threads: int | None = None):
        self.llm = llamacpp.open_llama(
            gguf_path,
            threads=threads or llamacpp.parity_threads(),
            n_ctx=llamacpp.N_CTX_PARITY,
            logits_all=True,
        )

    def greedy(self, ids: list[int], n: int, eos_id: int | None) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        for _ in range(n):
            nxt = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(nxt)
            if nxt == eos_id:
                break
            self.llm.eval([nxt])
        return out

    def logits(self, ids: list[int]) -> np.ndarray:
        if len(ids) > self.llm.n_ctx():
            raise ParityError(
                f"parity text of {len(ids)} tokens exceeds llama.cpp n_ctx {self.llm.n_ctx()}", {}
            )
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)])

    def nll(self, ids: list[int]) -> float:
        return _nll_from_logits(self.logits(ids), ids)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def close(self) -> None:
        self.llm.close()


class OrtGenaiRuntime:
    """An ONNX package in ORT GenAI (`edge_distill/runtimes/ortgenai.py`), driven with token ids."""

    def __init__(self, model_dir: Path):
        self.ort = OrtGenAI(model_dir)
        self.model = self.ort.model
        self._tok: Any = None

    def _generator(self, max_length: int):  # noqa: ANN202 - og.Generator
        return self.ort.generator(max_length)

    def greedy(self, ids: list[int], n: int, eos_id: int | None) -> list[int]:
        gen = self._generator(len(ids) + n)
        gen.append_tokens(ids)
        out: list[int] = []
        while not gen.is_done() and len(out) < n:
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
            if out[-1] == eos_id:
                break
        return out

    def logits(self, ids: list[int]) -> np.ndarray:
        gen = self._generator(len(ids) + 1)
        gen.append_tokens(ids)
        return np.asarray(gen.get_output("logits"))[0]

    def nll(self, ids: list[int]) -> float:
        return _nll_from_logits(self.logits(ids), ids)

    def tokenize(self, text: str) -> list[int]:
        """Token ids as ORT GenAI's own tokenizer (onnxruntime-extensions) makes them."""
        if self._tok is None:
            self._tok = self.ort.tokenizer()
        return [int(t) for t in self._tok.encode(text)]

    def close(self) -> None:
        del self.model
        self.ort.close()


class ExecuTorchRuntime:
    """A `.pte` decoder (exporters/executorch_pte.py) in ExecuTorch's runtime, driven with token ids. ExecuTorch
    runs in a process of its own (edge_distill/runtimes/executorch.py); with `tokenizer_json`, `tokenize` is the
    Android/iOS runners' C++ HFTokenizer."""

    def __init__(self, pte_path: Path, threads: int | None = None, tokenizer_json: Path | None = None):
        from edge_distill.runtimes.executorch import ExecuTorchProgram

        self.program = ExecuTorchProgram(pte_path, threads or min(4, os.cpu_count() or 1), tokenizer_json)

    def logits(self, ids: list[int]) -> np.ndarray:
        return self.program.logits(ids)

    def nll(self, ids: list[int]) -> float:
        return self.program.nll(ids)

    def greedy(self, ids: list[int], n: int, eos_id: int | None) -> list[int]:
        out, _ = self.program.greedy(ids, n, stop_at_eos=False)
        return out[: out.index(eos_id) + 1] if eos_id in out else out  # as the other runtimes: EOS included

    def tokenize(self, text: str) -> list[int]:
        return self.program.encode(text)

    def close(self) -> None:
        self.program.close()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def fidelity(runtime: Runtime, ref: Reference) -> dict[str, Any]:
    """Teacher-forced top-1 agreement and NLL ratio of `runtime` against torch over the held-out texts."""
    agree = total = 0
    nlls = []
    for ids, top1 in zip(ref.fidelity_ids, ref.fidelity_top1, strict=True):
        logits = runtime.logits(ids)
        agree += int((logits[: len(ids) - 1].argmax(axis=-1) == np.asarray(top1)).sum())
        total += len(top1)
        nlls.append(_token_nlls(logits, ids))
    if not total:
        return {"fidelity_tokens": 0}
    nll = float(np.concatenate(nlls).mean())
    return {
        "fidelity_tokens": total,
        "top1_agreement": agree / total,
        "nll_ratio": nll / ref.fidelity_nll,
        "fidelity_nll_ref": ref.fidelity_nll,
        "fidelity_nll_export": nll,
    }


def compare(runtime: Runtime, ref: Reference, *, name: str, quant: str) -> ParityReport:
    outs = [
        runtime.greedy(ids, max(len(g), 1), ref.eos_id)
        for ids, g in zip(ref.prompt_ids, ref.greedy, strict=True)
    ]
    total = sum(len(g) for g in ref.greedy)
    agreed = sum(_common_prefix(o, g) for o, g in zip(outs, ref.greedy, strict=True))
    nll = float(np.mean([runtime.nll(ids) for ids in ref.text_ids]))
    return ParityReport(
        runtime=name,
        quant=quant,
        tokens_compared=total,
        token_agreement=agreed / total if total else 1.0,
        identical_prompts=sum(o == g for o, g in zip(outs, ref.greedy, strict=True)),
        n_prompts=len(outs),
        nll_ref=ref.nll,
        nll_export=nll,
        ppl_ratio=float(np.exp(nll - ref.nll)),
        **fidelity(runtime, ref),
    )


def enforce(
    report: ParityReport, *, max_ppl_ratio_quantized: float = 1.5, lossless_ppl_tol: float = 0.01
) -> None:
    """Lossless exports must reproduce every greedy token; quantized ones must not blow up perplexity."""
    numbers = report.as_dict()
    if report.quant in LOSSLESS:
        if report.identical_prompts != report.n_prompts:
            raise ParityError(f"{report.runtime} {report.quant}: greedy tokens differ from torch", numbers)
        if abs(report.ppl_ratio - 1.0) > lossless_ppl_tol:
            raise ParityError(f"{report.runtime} {report.quant}: perplexity differs from torch", numbers)
    elif report.ppl_ratio > max_ppl_ratio_quantized:
        raise ParityError(
            f"{report.runtime} {report.quant}: perplexity ratio {report.ppl_ratio:.3f} > {max_ppl_ratio_quantized}",
            numbers,
        )
    logger.info(
        "parity %s %s: top-1 %s of %d held-out tokens, NLL ratio %s; %.0f%% of %d greedy tokens agree, ppl ratio %.4f",
        report.runtime, report.quant,
        "n/a" if report.top1_agreement is None else f"{100 * report.top1_agreement:.1f}%", report.fidelity_tokens,
        "n/a" if report.nll_ratio is None else f"{report.nll_ratio:.4f}",
        100 * report.token_agreement, report.tokens_compared, report.ppl_ratio,
    )  # fmt: skip


def check_tokenizer_parity(
    encode: Any, tokenizer: Any, *, name: str, strings: list[str] | None = None
) -> dict[str, Any]:
    """`encode(text) -> ids` of an exported runtime must equal the HF tokenizer's ids on the check strings
    (ParityError otherwise: a runtime that splits text differently feeds the model tokens it never saw).

    For ORT GenAI the package's `tokenizer.json` is first rewritten into a form onnxruntime-extensions
    implements (exporters/ort_tokenizer.py); without that, SmolLM2's digit split is ignored there."""
    strings = strings or TOKENIZER_CHECK_STRINGS
    bad = [s for s in strings if list(encode(s)) != tokenizer(s)["input_ids"]]
    numbers = {
        "runtime": name,
        "strings": len(strings),
        "mismatches": len(bad),
        "first_mismatch": bad[0] if bad else None,
    }
    if bad:
        raise ParityError(f"{name} tokenizer disagrees with the source tokenizer", numbers)
    return numbers
