"""The one table of training objectives: `train.objective` (sft | cascod | edit) -> an `Objective` record.

An objective is everything that name changes: how samples become weighted `Example`s, how many training
steps run (EDIT: SFT then KRSL), how the student is decoded (as data: `edge_distill.decoding`; CasCoD:
two stages) and, optionally, a `compute_loss` hook for a loss that is not token-weighted CE (KL/GKD-style
losses that need logits). Callers look the record up once with `objective(name)`: the stage layer trains
and evaluates with it, SIKeD/FDD sample with its decoding, the exporter writes its decoding into
`prompt_template.json`, and the device bench decodes packages from that file.
SIKeD/FDD loops decide *which samples* an iteration trains on; the record decides *which loss*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.config import OBJECTIVE_NAMES, TrainConfig, check_table_names
from edge_distill.decoding import SINGLE_PASS, staged_decode, two_stage
from edge_distill.io import write_json
from edge_distill.objectives.cascod import ANSWER_JOIN, build_cascod_examples
from edge_distill.objectives.edit import (
    DualPair,
    build_krsl_examples,
    filter_pairs,
    offline_pairs,
    step1_samples,
)
from edge_distill.objectives.examples import Example
from edge_distill.objectives.sft import build_sft_examples
from edge_distill.types import DEFAULT_JUDGING, DEFAULT_REL_TOL, Judging, Sample

log = logging.getLogger(__name__)

CASCOD_ANSWER_TOKENS = 24  # the answer stage only writes " <number>." + EOS

ExamplesFn = Callable[[Any, Sequence[Sample], TrainConfig], tuple[list[Example], dict[str, Any]]]
"""build_examples(tokenizer, samples, train_cfg) -> (examples, metrics for objective.json)."""
LossFn = Callable[[Any, dict[str, Any], "float | None"], tuple[Any, Any]]
"""compute_loss(model, batch, nll_cap) -> (summed loss over the micro-batch, model outputs)."""


@dataclass(frozen=True)
class Objective:
    """What `train.objective: <name>` means, in one record (see the module docstring)."""

    name: str
    build_examples: ExamplesFn
    decoding: Callable[
        [TrainConfig], dict[str, Any]
    ]  # train_cfg -> decoding description (edge_distill.decoding)
    # train steps: None = one `training.train` run on `build_examples`; else (objective, train_cfg, samples,
    # base, out_dir, seed=, pairs=, step1_model=, judging=, topk=) -> final model dir
    train_steps: Callable[..., Path] | None = None
    # None = the trainer's token-weighted CE over the examples' weights
    compute_loss: LossFn | None = None
    # re-prompts a live teacher for its training data (EDIT's AHP/CCP pairs); recorded teachers cannot
    uses_live_teacher: bool = False


def _sft_examples(
    tokenizer: Any, samples: Sequence[Sample], cfg: TrainConfig
) -> tuple[list[Example], dict[str, Any]]:
    examples = build_sft_examples(tokenizer, list(samples), cfg.max_length)
    return examples, {"objective": cfg.objective, "examples": len(examples)}


def _cascod_examples(
    tokenizer: Any, samples: Sequence[Sample], cfg: TrainConfig
) -> tuple[list[Example], dict[str, Any]]:
    c = cfg.cascod
    return build_cascod_examples(
        tokenizer, samples, alpha=c.alpha, marker=c.marker, max_length=cfg.max_length
    )


def _cascod_decoding(cfg: TrainConfig) -> dict[str, Any]:
    return two_stage(cfg.cascod.marker, answer_join=ANSWER_JOIN, answer_tokens=CASCOD_ANSWER_TOKENS)


def _single_pass(cfg: TrainConfig) -> dict[str, Any]:
    return dict(SINGLE_PASS)


def _with_kd(cfg: TrainConfig, base_model: str | Path, examples: list[Example], samples: Sequence[Sample],
             topk: str | Path | None, loss_fn: LossFn | None, metrics: dict[str, Any], seed: int) -> LossFn | None:  # fmt: skip
    """`train.kd`: the distillation loss hook (and offline teacher rows attached to `examples`), else `loss_fn`."""
    if not cfg.kd.enabled:
        return loss_fn
    if loss_fn is not None:
        raise ValueError("train.kd composes with token-weighted objectives; this objective has its own loss")
    from edge_distill.objectives.kd_train import kd_setup

    hook, kd_metrics = kd_setup(cfg, base_model, examples, samples, topk, seed=seed)
    metrics.update(kd_metrics)
    return hook


def _train_edit(obj: Objective, cfg: TrainConfig, samples: list[Sample], base_model: str | Path, out_dir: Path, *,
                seed: int, pairs: Sequence[DualPair] | None, step1_model: str | Path | None,
                judging: Judging = DEFAULT_JUDGING, topk: str | Path | None = None) -> Path:  # fmt: skip
    """EDIT: step 1 (SFT on right + AHP-right samples) into `out_dir/step1`, merged, then step 2 (KRSL on
    the filtered pairs, `train.edit.step2_lr`, `step2_epochs`, `nll_cap`) into `out_dir/step2`. With
    `train.kd` both steps distill (step 2 only on the right CoT's positive-weight tokens)."""
    from edge_distill.models import load_tokenizer
    from edge_distill.training import merge_lora, train

    e = cfg.edit
    tokenizer = load_tokenizer(base_model)
    kept, pair_stats = edit_pairs(samples, pairs, rel_tol=judging.rel_tol)
    step1 = step1_samples(samples, kept)
    kd_metrics: dict[str, Any] = {}
    if step1_model is None:
        ex1, _ = obj.build_examples(tokenizer, step1, cfg)
        loss1 = _with_kd(cfg, base_model, ex1, step1, topk, obj.compute_loss, kd_metrics, seed)
        step1_model = train(base_model, ex1, out_dir / "step1", cfg, seed=seed, loss_fn=loss1).final_dir
    step1_model = Path(step1_model)
    if (step1_model / "adapter_config.json").is_file():
        step1_model = merge_lora(step1_model, out_dir / "step1" / "merged")
    ex2, metrics = build_krsl_examples(
        tokenizer,
        kept,
        right_weight=e.right_weight,
        wrong_weight=e.wrong_weight,
        shared_weight=e.shared_weight,
        max_length=cfg.max_length,
    )
    metrics.update(pair_stats, edit_step1_samples=len(step1), edit_nll_cap=e.nll_cap)
    metrics.update({f"step1_{k}": v for k, v in kd_metrics.items()})
    loss2 = (
        _with_kd(cfg, base_model, ex2, [p.right for p in kept], topk, obj.compute_loss, metrics, seed)
        if ex2
        else None
    )
    write_json(out_dir / "objective.json", metrics)
    if not ex2:
        log.warning("edit: no pair survived filtering; the step-1 model is the result")
        return step1_model
    r2 = train(
        step1_model,
        ex2,
        out_dir / "step2",
        cfg,
        seed=seed,
        loss_fn=loss2,
        lr=e.step2_lr,
        epochs=e.step2_epochs,
        nll_cap=e.nll_cap,
    )
    return Path(r2.final_dir)


OBJECTIVES: dict[str, Objective] = {
    "sft": Objective("sft", _sft_examples, _single_pass),
    "cascod": Objective("cascod", _cascod_examples, _cascod_decoding),
    "edit": Objective("edit", _sft_examples, _single_pass, train_steps=_train_edit, uses_live_teacher=True),
}
check_table_names(OBJECTIVES, OBJECTIVE_NAMES, "objectives/build.py: OBJECTIVES", "OBJECTIVE_NAMES")


def objective(name: str) -> Objective:
    """The record of `train.objective`; the one lookup by name."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"train.objective: {name!r} is not one of {', '.join(OBJECTIVES)}") from None


def edit_pairs(
    samples: Sequence[Sample], pairs: Sequence[DualPair] | None = None, *, rel_tol: float = DEFAULT_REL_TOL
) -> tuple[list[DualPair], dict[str, Any]]:
    """Filtered EDIT pairs: the given (live AHP/CCP) pairs, or offline op-swap twins of the right samples;
    judged with the run's `rel_tol`."""
    built_stats: dict[str, Any] = {}
    if pairs is None:
        pairs, built_stats = offline_pairs(samples, rel_tol)
    kept, filter_stats = filter_pairs(pairs, rel_tol)
    merged = {**built_stats, **filter_stats}
    stats = {(k if k.startswith("pairs_") else f"pairs_{k}"): v for k, v in merged.items()}
    return kept, stats


def train_with_objective(
    train_cfg: TrainConfig,
    samples: list[Sample],
    base_model: str | Path,
    out_dir: Path,
    *,
    seed: int = 0,
    pairs: Sequence[DualPair] | None = None,
    step1_model: str | Path | None = None,
    judging: Judging = DEFAULT_JUDGING,
    topk: str | Path | None = None,
) -> Path:
    """Train `samples` with `train_cfg.objective`; return the final model directory.

    One `training.train` run into `out_dir`, unless the objective has its own steps (EDIT). `pairs` are live
    AHP/CCP pairs (`edit.live_pairs`); without them EDIT's pairs are offline twins of the right samples.
    `step1_model` (a model already trained on the step-1 data, e.g. an SFT run on the same samples) skips
    EDIT's step 1. `topk`: the run's teacher top-k store (`teach/topk.npz`) for `train.kd` offline.
    Objective metrics (α, key-step fraction, pairs kept/dropped by reason, KD coverage) are written to
    `out_dir/objective.json` for the report.
    """
    obj = objective(train_cfg.objective)
    out_dir = Path(out_dir)
    if obj.train_steps is not None:
        return obj.train_steps(
            obj, train_cfg, samples, base_model, out_dir, seed=seed, pairs=pairs, step1_model=step1_model,
            judging=judging, topk=topk,
        )  # fmt: skip
    from edge_distill.models import load_tokenizer
    from edge_distill.training import train

    examples, metrics = obj.build_examples(load_tokenizer(base_model), samples, train_cfg)
    loss_fn = _with_kd(train_cfg, base_model, examples, samples, topk, obj.compute_loss, metrics, seed)
    result = train(base_model, examples, out_dir, train_cfg, seed=seed, loss_fn=loss_fn)
    write_json(out_dir / "objective.json", metrics)
    return Path(result.final_dir)


# --------------------------------------------------------------------------- decoding
def student_decoder(train_cfg: TrainConfig) -> Callable[..., list[list[str]]] | None:
    """`generation.generate` wrapped by the objective's decoding (n responses per prompt), or None when the
    objective decodes in a single pass (callers then use plain `generation.generate`)."""
    decoding = objective(train_cfg.objective).decoding(train_cfg)
    if int(decoding.get("stages", 1)) == 1:
        return None
    from edge_distill.generation import generate

    def decode(
        model: Any,
        tokenizer: Any,
        prompts: list[str],
        *,
        n: int = 1,
        generate: Callable[..., list[list[str]]] = generate,
        **kwargs: Any,
    ) -> list[list[str]]:
        # `generate=`: another engine with generation.generate's signature (eval.engine=vllm)
        return staged_decode(
            lambda ps, **kw: generate(model, tokenizer, ps, **kw), prompts, decoding, n=n, **kwargs
        )

    return decode


def generate_fn_for(train_cfg: TrainConfig) -> Callable[..., list[str]] | None:
    """The decoding hook `eval.evaluate(generate_fn=...)` needs: the objective's decoding, one response per
    prompt; None (single-pass default) for single-stage objectives."""
    decode = student_decoder(train_cfg)
    if decode is None:
        return None

    def first(model: Any, tokenizer: Any, prompts: list[str], **kwargs: Any) -> list[str]:
        return [outs[0] for outs in decode(model, tokenizer, prompts, **kwargs)]

    return first
