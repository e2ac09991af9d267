"""The one place that maps `train.objective` (sft | cascod | edit) to examples, training steps and decoding.

SIKeD/FDD loops decide *which samples* an iteration trains on; the functions here decide *which loss*
(through the `Example` weights) and, for CasCoD, how the student is decoded (two stages). The pipeline calls
`train_with_objective` for every training run and `generate_fn_for` for every evaluation; the exporter
writes `prompt_template(...)` into `prompt_template.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_distill.io import write_json
from edge_distill.objectives.cascod import ANSWER_JOIN, answer_prompt, build_cascod_examples
from edge_distill.objectives.edit import (
    DualPair,
    build_krsl_examples,
    filter_pairs,
    offline_pairs,
    step1_samples,
)
from edge_distill.objectives.examples import Example
from edge_distill.objectives.sft import build_sft_examples
from edge_distill.strategies import ANSWER_MARKER, STUDENT_PROMPT, parse_response
from edge_distill.types import Sample, Strategy

log = logging.getLogger(__name__)

OBJECTIVES = ("sft", "cascod", "edit")
CASCOD_ANSWER_TOKENS = 24  # the answer stage only writes " <number>." + EOS


def build_examples(
    objective: str,
    tokenizer: Any,
    samples: Sequence[Sample],
    *,
    max_length: int = 1024,
    cascod_alpha: float = 0.1,
    cascod_marker: str = ANSWER_MARKER,
) -> tuple[list[Example], dict[str, Any]]:
    """Training examples for one run of `objective` (for "edit": the step-1 SFT examples).

    EDIT's step 2 needs pairs: `edit_pairs(samples)` then `build_krsl_examples(tokenizer, pairs, ...)`.
    """
    if objective == "cascod":
        return build_cascod_examples(
            tokenizer, samples, alpha=cascod_alpha, marker=cascod_marker, max_length=max_length
        )
    if objective in ("sft", "edit"):
        examples = build_sft_examples(tokenizer, list(samples), max_length)
        return examples, {"objective": objective, "examples": len(examples)}
    raise ValueError(f"train.objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")


def edit_pairs(
    samples: Sequence[Sample], pairs: Sequence[DualPair] | None = None
) -> tuple[list[DualPair], dict[str, Any]]:
    """Filtered EDIT pairs: the given (live AHP/CCP) pairs, or offline op-swap twins of the right samples."""
    built_stats: dict[str, Any] = {}
    if pairs is None:
        pairs, built_stats = offline_pairs(samples)
    kept, filter_stats = filter_pairs(pairs)
    merged = {**built_stats, **filter_stats}
    stats = {(k if k.startswith("pairs_") else f"pairs_{k}"): v for k, v in merged.items()}
    return kept, stats


def train_with_objective(
    train_cfg: Any,
    samples: list[Sample],
    base_model: str | Path,
    out_dir: Path,
    *,
    seed: int = 0,
    pairs: Sequence[DualPair] | None = None,
    step1_model: str | Path | None = None,
) -> Path:
    """Train `samples` with `train_cfg.objective`; return the final model directory.

    sft/cascod: one `training.train` run into `out_dir`. edit: step 1 (SFT on right + AHP-right samples)
    into `out_dir/step1`, merged, then step 2 (KRSL on the filtered pairs, `train.edit.step2_lr`,
    `step2_epochs`, `nll_cap`) into `out_dir/step2`. `pairs` are live AHP/CCP pairs (`edit.live_pairs`);
    without them the pairs are offline twins of the right samples. `step1_model` (a full or LoRA model
    already trained on the step-1 data, e.g. the last SIKeD iteration or an SFT run on the same samples)
    skips step 1. Objective metrics (α, key-step fraction,
    pairs kept/dropped by reason) are written to `out_dir/objective.json` for the report.
    """
    from edge_distill.models import load_tokenizer
    from edge_distill.training import merge_lora, train

    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(base_model)
    common = _train_kwargs(train_cfg, seed)
    objective = train_cfg.objective
    if objective != "edit":
        examples, metrics = build_examples(
            objective,
            tokenizer,
            samples,
            max_length=train_cfg.max_length,
            cascod_alpha=train_cfg.cascod.alpha,
            cascod_marker=train_cfg.cascod.marker,
        )
        result = train(base_model, examples, out_dir, lr=train_cfg.lr, epochs=train_cfg.epochs, **common)
        write_json(out_dir / "objective.json", metrics)
        return Path(result.final_dir)

    e = train_cfg.edit
    kept, pair_stats = edit_pairs(samples, pairs)
    step1 = step1_samples(samples, kept)
    if step1_model is None:
        ex1 = build_sft_examples(tokenizer, step1, train_cfg.max_length)
        r1 = train(base_model, ex1, out_dir / "step1", lr=train_cfg.lr, epochs=train_cfg.epochs, **common)
        step1_model = r1.final_dir
    step1_model = Path(step1_model)
    if (step1_model / "adapter_config.json").is_file():
        step1_model = merge_lora(step1_model, out_dir / "step1" / "merged")
    ex2, metrics = build_krsl_examples(
        tokenizer,
        kept,
        right_weight=e.right_weight,
        wrong_weight=e.wrong_weight,
        shared_weight=e.shared_weight,
        max_length=train_cfg.max_length,
    )
    metrics.update(pair_stats, edit_step1_samples=len(step1), edit_nll_cap=e.nll_cap)
    write_json(out_dir / "objective.json", metrics)
    if not ex2:
        log.warning("edit: no pair survived filtering; the step-1 model is the result")
        return step1_model
    r2 = train(
        step1_model, ex2, out_dir / "step2", lr=e.step2_lr, epochs=e.step2_epochs, nll_cap=e.nll_cap, **common
    )
    return Path(r2.final_dir)


def _train_kwargs(c: Any, seed: int) -> dict[str, Any]:
    return {
        "finetune": c.finetune,
        "lora": c.lora,
        "max_steps": c.max_steps,
        "batch_size": c.batch_size,
        "grad_accum": c.grad_accum,
        "warmup_steps": c.warmup_steps,
        "scheduler": c.scheduler,
        "weight_decay": c.weight_decay,
        "group_by_length": c.group_by_length,
        "save_steps": c.save_steps,
        "save_total_limit": c.save_total_limit,
        "precision": c.precision,
        "gradient_checkpointing": c.gradient_checkpointing,
        "packing": c.packing,
        "loss_chunk_size": c.loss_chunk_size,
        "attn_implementation": c.attn_implementation,
        "compile": c.compile,
        "liger": c.liger,
        "logging_steps": c.logging_steps,
        "seed": seed,
    }


# --------------------------------------------------------------------------- decoding
def cascod_generate(
    generate: Callable[..., list[list[str]]],
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    marker: str = ANSWER_MARKER,
    answer_tokens: int = CASCOD_ANSWER_TOKENS,
    n: int = 1,
    **kwargs: Any,
) -> list[list[str]]:
    """Two-stage CasCoD decoding: rationale first, then marker + answer, with the training templates.

    `generate(model, tokenizer, prompts, n=..., **kwargs) -> list[list[str]]` is `generation.generate`.
    Returns `n` full responses per prompt ("[cot]: …\nThe answer is 72."), so parsing and judging are the
    same as for single-stage students (SIKeD's self-sampling can call this with n > 1: each sampled
    rationale gets its own answer step). PoT responses and responses that already state an answer are
    returned as they are.
    """
    stage1 = generate(model, tokenizer, prompts, n=n, **kwargs)
    todo = []
    for i, outs in enumerate(stage1):
        for j, text in enumerate(outs):
            is_pot = parse_response(text).strategy == Strategy.POT or prompts[i].rstrip().endswith("[pot]:")
            if not is_pot and marker not in text:
                todo.append((i, j))
    if todo:
        kw = {**kwargs, "max_new_tokens": min(answer_tokens, kwargs.get("max_new_tokens", answer_tokens))}
        stage2_prompts = [answer_prompt(prompts[i], stage1[i][j], marker) for i, j in todo]
        stage2 = generate(model, tokenizer, stage2_prompts, n=1, **kw)
        for (i, j), ans in zip(todo, stage2, strict=True):
            stage1[i][j] = stage1[i][j].rstrip() + ANSWER_JOIN + marker + ans[0]
    return stage1


def generate_fn_for(train_cfg: Any) -> Callable[..., list[str]] | None:
    """The decoding hook `eval.evaluate(generate_fn=...)` needs: two-stage for CasCoD, None (default) otherwise."""
    if train_cfg.objective != "cascod":
        return None
    from edge_distill.generation import generate

    marker = train_cfg.cascod.marker

    def two_stage(
        model: Any, tokenizer: Any, prompts: list[str], generate: Callable[..., Any] = generate, **kwargs: Any
    ) -> list[str]:
        return [
            outs[0] for outs in cascod_generate(generate, model, tokenizer, prompts, marker=marker, **kwargs)
        ]

    return two_stage


def prompt_template(objective: str, marker: str = ANSWER_MARKER) -> dict[str, Any]:
    """What an exported package's `prompt_template.json` says about decoding (same strings as training)."""
    template: dict[str, Any] = {"objective": objective, "prompt": STUDENT_PROMPT, "stages": 1}
    if objective == "cascod":
        template.update(
            stages=2,
            stage2_prompt="{prompt}{stage1_output_rstripped}" + ANSWER_JOIN + marker,
            stage2_max_new_tokens=CASCOD_ANSWER_TOKENS,
            stage2_skip_if=[
                "the stage-1 output starts with [pot]",
                f"the stage-1 output contains {marker!r}",
            ],
            answer_marker=marker,
        )
    return template
