"""Accuracy of a student on problems: generate, parse, judge (PoT through the sandbox), summarize.

The prompt, parser and judge are the ones used for training data and on device (`strategies`), so an
accuracy here is comparable with the exported packages' numbers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_distill.io import write_json, write_jsonl, write_text
from edge_distill.scoring import NO_TAG, EvalResult, score
from edge_distill.types import DEFAULT_JUDGING, Judging, Problem, Strategy

__all__ = ["NO_TAG", "EvalResult", "correct_by_id", "evaluate", "render_markdown", "score", "write_eval"]

logger = logging.getLogger(__name__)

STRATEGY_CHOICES = ("auto", "cot", "l2m", "pot")

# generate_fn(model, tokenizer, prompts, **kwargs) -> one response text per prompt
GenerateFn = Callable[..., list[str]]


def _default_generate(model: Any, tokenizer: Any, prompts: list[str], **kwargs: Any) -> list[str]:
    from edge_distill.generation import generate

    return [outs[0] for outs in generate(model, tokenizer, prompts, **kwargs)]


def _open(
    model_or_dir: Any, engine: str, adapter_dir: Any, tokenizer: Any, dtype: Any
) -> tuple[Any, Any, str, Any]:
    """(model, tokenizer, source name, the vLLM engine or None) for `evaluate`."""
    if engine == "vllm":
        from edge_distill.runtimes.vllm import VllmEngine

        if not isinstance(model_or_dir, (str, os.PathLike)) or adapter_dir is not None:
            raise ValueError("evaluate(engine='vllm') takes a model directory (full or LoRA adapter)")
        vllm_engine = VllmEngine(model_or_dir, key="eval.engine")
        return vllm_engine, tokenizer, str(model_or_dir), vllm_engine
    if engine != "transformers":
        raise ValueError(f"eval.engine: {engine!r} is not one of transformers, vllm")
    if isinstance(model_or_dir, (str, os.PathLike)):
        from edge_distill.models import load_model, load_tokenizer

        model = load_model(model_or_dir, adapter_dir=adapter_dir, dtype=dtype)
        return model, tokenizer or load_tokenizer(model_or_dir), str(model_or_dir), None
    if tokenizer is None:
        raise ValueError("evaluate: pass tokenizer= together with a loaded model")
    return model_or_dir, tokenizer, "<in-memory model>", None


def _decoder(generate_fn: GenerateFn | None, vllm_engine: Any) -> GenerateFn:
    """The single-pass default or a custom `generate_fn`; on vLLM, `generation.generate`'s calls go to vLLM
    (its engine has that signature). A custom generate_fn must accept `generate=`; CasCoD's does."""
    if vllm_engine is None:
        return generate_fn or _default_generate
    if generate_fn:
        return lambda m, t, p, **kw: generate_fn(m, t, p, generate=vllm_engine.generate, **kw)
    return lambda m, t, p, **kw: [o[0] for o in vllm_engine.generate(m, t, p, **kw)]


def evaluate(
    model_or_dir: Any,
    problems: Sequence[Problem],
    *,
    strategy: str = "auto",
    batch_size: int = 16,
    max_new_tokens: int = 320,
    temperature: float = 0.0,
    adapter_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
    generate_fn: GenerateFn | None = None,
    dtype: Any = None,
    engine: str = "transformers",
    judging: Judging = DEFAULT_JUDGING,
) -> EvalResult:
    """Evaluate a model directory (full or LoRA adapter) or a loaded model (then pass `tokenizer`).

    strategy "auto" lets the student choose by generating the tag; cot|l2m|pot force the tag in the prompt.
    `generate_fn(model, tokenizer, prompts, **kw) -> list[str]` replaces single-pass decoding (CasCoD's
    two-stage inference); it receives max_new_tokens, batch_size and temperature.
    `dtype` is the weights dtype (train.precision's choice); engine "vllm" decodes a model directory with
    vLLM (CUDA; import-guarded, `runtimes/vllm.py`) instead of transformers. `judging`: tolerance and PoT
    sandbox mode (a run's `Judging.of(cfg)`; the CLI and the pipeline always pass it).
    """
    from edge_distill.strategies import student_prompt

    if strategy not in STRATEGY_CHOICES:
        raise ValueError(f"eval.strategy: {strategy!r} is not one of {', '.join(STRATEGY_CHOICES)}")
    problems = list(problems)
    model, tokenizer, source, vllm_engine = _open(model_or_dir, engine, adapter_dir, tokenizer, dtype)
    forced = None if strategy == "auto" else Strategy(strategy)
    prompts = [student_prompt(p.question, forced) for p in problems]
    t0 = time.time()
    responses = _decoder(generate_fn, vllm_engine)(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        temperature=temperature,
    )
    gen_s = time.time() - t0
    result = score(problems, responses, strategy, judging=judging)
    result.meta = {
        "model": source,
        "strategy": strategy,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "decoding": "custom" if generate_fn else "single-pass",
        "engine": engine,
        "rel_tol": judging.rel_tol,
        "generate_s": round(gen_s, 2),
    }
    logger.info(
        "eval %s: %d/%d = %.1f%% (95%% CI %.1f-%.1f%%)",
        source, result.correct, result.n, 100 * result.accuracy, 100 * result.ci95[0], 100 * result.ci95[1],
    )  # fmt: skip
    return result


def _md_cell(text: Any, limit: int = 80) -> str:
    s = str(text).replace("\n", " ⏎ ").replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render_markdown(result: EvalResult, split: str, max_rows: int = 50) -> str:
    lo, hi = result.ci95
    lines = [
        f"# Evaluation: {split}",
        "",
        f"**Accuracy {100 * result.accuracy:.1f}%** ({result.correct}/{result.n}; Wilson 95% CI "
        f"{100 * lo:.1f}–{100 * hi:.1f}%)",
        "",
        "| strategy | n | correct | accuracy | 95% CI |",
        "|---|---:|---:|---:|---|",
    ]
    for key, s in result.per_strategy.items():
        lines.append(
            f"| {key} | {s['n']} | {s['correct']} | {100 * s['accuracy']:.1f}% | "
            f"{100 * s['ci95'][0]:.1f}–{100 * s['ci95'][1]:.1f}% |"
        )
    lines += [
        "",
        f"## First {min(max_rows, result.n)} predictions",
        "",
        "| id | strategy | gold | pred | ok | output |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for r in result.predictions[:max_rows]:
        ok = "✓" if r["correct"] else "✗"
        lines.append(
            f"| {_md_cell(r['id'], 24)} | {r['strategy']} | {_md_cell(r['gold'], 16)} | {_md_cell(r['pred'], 16)} "
            f"| {ok} | {_md_cell(r['raw'])} |"
        )
    return "\n".join(lines) + "\n"


def write_eval(result: EvalResult, out_dir: str | os.PathLike[str], split: str = "dev") -> dict[str, Path]:
    """Write {split}.json (summary), {split}_predictions.jsonl and {split}.md, each atomically."""
    out = Path(out_dir)
    paths = {
        "summary": out / f"{split}.json",
        "predictions": out / f"{split}_predictions.jsonl",
        "markdown": out / f"{split}.md",
    }
    write_json(paths["summary"], {"split": split, **result.summary()})
    write_jsonl(paths["predictions"], result.predictions)
    write_text(paths["markdown"], render_markdown(result, split))
    return paths


def correct_by_id(predictions: Sequence[dict[str, Any]]) -> dict[str, bool]:
    """`{problem id: judged correct}` from prediction rows (eval's or the bench's), for paired tests."""
    return {str(r["id"]): bool(r["correct"]) for r in predictions}
