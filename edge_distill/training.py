"""Fine-tune a student on weighted `Example`s with transformers' Trainer (LoRA via peft, or full).

Trainer is used as is for the loop, checkpoints, resume, schedulers, mixed precision and distribution
(`accelerate launch` / `torchrun` work unchanged); only the loss is ours: `weighted_ce` summed over a
micro-batch and divided by the number of examples in the whole optimizer step (all micro-batches, all
ranks). That makes batch 4 × accum 1 and batch 1 × accum 4 the same gradient, which Trainer's default
per-micro-batch mean does not guarantee.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from edge_distill.config import TrainConfig
from edge_distill.cpu_fastpath import fuse_lora_linears, register_packed_sdpa
from edge_distill.errors import ConfigError, ModelError
from edge_distill.fastpath import ChunkedLossHead, check_liger, mixed_precision_flags, model_load_kwargs
from edge_distill.io import append_jsonl, write_json, write_jsonl
from edge_distill.models import load_tokenizer
from edge_distill.objectives.examples import Example, ExampleCollator, ExampleDataset
from edge_distill.objectives.losses import DEFAULT_CHUNK, weighted_ce
from edge_distill.packing import PackedCollator, count_examples
from edge_distill.rundir import to_stored

__all__ = ["Example", "TrainResult", "WeightedLossTrainer", "merge_lora", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced. `losses` are (step, mean per-example loss) at each logging step."""

    final_dir: Path
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    resumed_from_step: int = 0
    examples: int = 0
    finetune: str = "lora"
    trainable_params: int = 0
    runtime_s: float = 0.0

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["final_dir"] = str(self.final_dir)
        d.pop("losses")
        d.update(first_loss=self.first_loss, last_loss=self.last_loss, logged_losses=len(self.losses))
        return d


class WeightedLossTrainer(Trainer):
    """Trainer whose loss is Σ w·CE / (#examples in the optimizer step), exact under accumulation and DDP."""

    # compute_loss already divides by the step's example count: Trainer must not divide by accum again.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        nll_cap: float | None = None,
        loss_fn: Any = None,
        loss_chunk_size: int = DEFAULT_CHUNK,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.nll_cap = nll_cap
        self.loss_fn = loss_fn  # an objective's compute_loss hook; None = weighted_ce
        # 0 = materialize [B,T,V] logits (weighted_ce); otherwise the head computes the loss chunk-wise
        self.loss_head = ChunkedLossHead(self.model, loss_chunk_size)

    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, device: torch.device
    ) -> tuple[list, Any]:
        # Trainer fetches all micro-batches of an optimizer step up front; count their examples (on every
        # rank, summed) so each micro-batch can be normalized by the step total.
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        n = torch.tensor(sum(count_examples(b) for b in batch_samples), device=device)
        if self.args.world_size > 1:
            n = self.accelerator.gather(n.reshape(1)).sum()
        return batch_samples, n

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        weights, ids = inputs["weights"], inputs["input_ids"]
        # packed batches (packing.py) carry position_ids and no mask: attention stays within each example
        extra = {k: inputs[k] for k in ("position_ids", "attention_mask") if k in inputs}
        if self.loss_fn is not None:
            total, outputs = self.loss_fn(model, inputs, self.nll_cap)
        elif self.loss_head.active:
            with self.loss_head.capture(ids, weights, self.nll_cap) as box:
                outputs = model(input_ids=ids, use_cache=False, **extra)
            total = box[0]
        else:
            outputs = model(input_ids=ids, use_cache=False, **extra)
            total = weighted_ce(outputs.logits, ids, weights, self.nll_cap)
        n = num_items_in_batch if num_items_in_batch is not None else count_examples(inputs)
        loss = total / n
        if self.args.world_size > 1:
            # DDP averages gradients over ranks, but n already counts every rank's examples
            loss = loss * self.args.world_size
        return (loss, outputs) if return_outputs else loss


class _MetricsCallback(TrainerCallback):
    """Collects logged losses and appends one JSONL row per logging step to the run's own metrics file:
    {"stage", "step", "epoch", "loss", "lr", "grad_norm", "time"} (plus Trainer's end-of-run totals).

    Append-safe: each row is one O_APPEND write, and `start` drops the rows of this training that a
    resume re-runs (and all of them on a fresh start), so steps never repeat in the file."""

    def __init__(self, metrics_path: Path, tag: str):
        self.metrics_path = metrics_path
        self.tag = tag
        self.losses: list[tuple[int, float]] = []

    def start(self, resumed_from: int) -> None:
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            mine = isinstance(row, dict) and row.get("stage") == self.tag
            if not mine or (isinstance(row.get("step"), int) and 0 < row["step"] <= resumed_from):
                kept.append(row)
        write_jsonl(self.metrics_path, kept)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        logs = dict(logs)
        if "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))
        row = {"stage": self.tag, "step": state.global_step, "epoch": logs.pop("epoch", state.epoch)}
        if "learning_rate" in logs:
            row["lr"] = logs.pop("learning_rate")
        append_jsonl(self.metrics_path, {**row, **logs, "time": time.time()})


# pip package of each tracker whose name is not its package's
_TRACKER_PACKAGES = {"azure_ml": "azureml-core", "flyte": "flytekit", "kubeflow": "kubeflow"}


def _trackers(report_to: Sequence[str], out_dir: Path) -> tuple[list[str], list[TrainerCallback]]:
    """(report_to for TrainingArguments, extra callbacks) for `train.report_to`; a tracker whose package is
    missing is a ConfigError naming what to install. TensorBoard writes to out_dir/tensorboard."""
    from transformers.integrations import integration_utils as iu

    wanted = [r for r in report_to if r != "none"]
    available = set(iu.get_available_reporting_integrations())
    if iu.is_flytekit_available():
        available.add("flyte")
    if "all" in wanted:
        wanted = sorted(available)
    missing = [r for r in wanted if r not in available]
    if missing:
        pkgs = " ".join(_TRACKER_PACKAGES.get(r, r) for r in missing)
        raise ConfigError(
            f"train.report_to: {', '.join(missing)} is not installed (pip install {pkgs}); installed trackers: "
            f"{', '.join(sorted(available)) or 'none'}; or remove it from train.report_to"
        )
    callbacks: list[TrainerCallback] = []
    if "tensorboard" in wanted:
        wanted.remove("tensorboard")
        tb = iu.TensorBoardCallback()
        tb.logging_dir = str(out_dir / "tensorboard")  # next to final/, not inside checkpoints/
        callbacks.append(tb)
    return wanted, callbacks


def _section(cfg: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """The run's `train:` section: `cfg` (defaults when None) with `overrides` applied and validated."""
    base = (cfg or TrainConfig()).model_dump()
    try:
        return TrainConfig.model_validate({**base, **overrides})
    except ValidationError as e:
        raise ConfigError(f"train: {e}") from None


def _full_model_dir(model_path: str | os.PathLike[str]) -> Path:
    path = Path(model_path).resolve()
    if not (path / "config.json").is_file():
        lora = (path / "adapter_config.json").is_file()
        hint = " (a LoRA adapter: merge it first with training.merge_lora)" if lora else ""
        raise ModelError(f"{path}: not a full HF model directory{hint}")
    return path


def _student_model(model_path: Path, c: TrainConfig) -> tuple[Any, int]:
    """The model to train (a fresh LoRA on it, or all weights) and its trainable parameter count."""
    from transformers import AutoModelForCausalLM

    # fp32 master weights; bf16/fp16 is autocast by Trainer, which keeps small-model fine-tuning stable.
    check_liger(c.liger)
    cpu_fast = c.cpu_fastpath and not torch.cuda.is_available()
    load_kwargs = model_load_kwargs(c.attn_implementation)
    if cpu_fast and c.packing and c.attn_implementation == "auto":
        load_kwargs["attn_implementation"] = register_packed_sdpa()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, **load_kwargs)
    if c.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        peft_cfg = LoraConfig(
            r=c.lora.r,
            lora_alpha=c.lora.alpha,
            lora_dropout=c.lora.dropout,
            target_modules=lora_target_modules(model, c.lora.target_modules, c.lora.top_layers),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, peft_cfg)
        if cpu_fast:
            fuse_lora_linears(model, c.lora.dropout_draws)
        if c.gradient_checkpointing:
            # reentrant checkpointing with frozen embeddings would otherwise cut the graph to the adapters
            model.enable_input_require_grads()
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_target_modules(model: Any, targets: list[str] | str, top: int | None) -> list[str] | str:
    """PEFT's target_modules: `targets` as configured, or with `train.lora.top_layers` the full names of the
    matching Linear layers in the top `top` decoder layers (PEFT takes no layer subset with "all-linear")."""
    if top is None:
        return targets
    n = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    stack = next(
        (name for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n),
        None,
    )
    if not isinstance(n, int) or stack is None:
        raise ConfigError("train.lora.top_layers: cannot find this student's decoder layers; remove the key")
    if top > n:
        raise ConfigError(f"train.lora.top_layers: {top}, but the student has {n} decoder layers; use 1..{n}")
    head = model.get_output_embeddings()

    def wanted(name: str) -> bool:
        if targets == "all-linear":
            return True
        return any(name == t or name.endswith("." + t) for t in targets)  # PEFT's rule for a list

    out = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and m is not head and name.startswith(stack + "."):
            if int(name[len(stack) + 1 :].split(".", 1)[0]) >= n - top and wanted(name):
                out.append(name)
    if not out:
        raise ConfigError(
            f"train.lora.top_layers: no layer of train.lora.target_modules {targets} in the top {top}"
        )
    return out


def _training_args(
    c: TrainConfig,
    ckpt_dir: Path,
    seed: int,
    max_grad_norm: float,
    extra: dict[str, Any] | None = None,
    report_to: list[str] | None = None,
) -> TrainingArguments:
    bf16, fp16 = mixed_precision_flags(c.precision)
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=c.batch_size,
        gradient_accumulation_steps=c.grad_accum,
        learning_rate=c.lr,
        num_train_epochs=c.epochs,
        max_steps=c.max_steps if c.max_steps is not None else -1,
        warmup_steps=c.warmup_steps,
        lr_scheduler_type=c.scheduler if c.scheduler != "constant" else "constant_with_warmup",
        weight_decay=c.weight_decay,
        max_grad_norm=max_grad_norm,  # 0 disables clipping
        train_sampling_strategy="group_by_length" if c.group_by_length else "random",
        save_strategy="steps",
        save_steps=c.save_steps,
        save_total_limit=c.save_total_limit,
        logging_steps=c.logging_steps,
        logging_first_step=True,
        seed=seed,
        bf16=bf16,
        fp16=fp16,
        activation_checkpointing=c.gradient_checkpointing,
        torch_compile=c.compile,
        use_liger_kernel=c.liger,
        # Liger's kernels for norms/RoPE/MLP only: the loss stays ours (per-token weights, NLL cap)
        liger_kernel_config={"fused_linear_cross_entropy": False, "cross_entropy": False}
        if c.liger
        else None,
        use_cpu=not torch.cuda.is_available(),
        report_to=report_to,
        remove_unused_columns=False,  # keeps our "weights" column
        label_names=[],
        dataloader_num_workers=0,
        # every trainable parameter gets a gradient (weighted_ce keeps the graph even for all-zero weights),
        # so DDP can skip its per-step search for unused parameters
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
        **(extra or {}),
    )


def train(
    model_path: str | os.PathLike[str],
    examples: Sequence[Example],
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    *,
    seed: int = 0,
    nll_cap: float | None = None,
    loss_fn: Any = None,
    max_grad_norm: float = 1.0,
    resume: bool = True,
    metrics_path: str | os.PathLike[str] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    training_args: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train `model_path` (a full HF directory) on `examples` with the `train:` config section `cfg` (defaults
    when None); write out_dir/{checkpoints/, final/}.

    `overrides` are TrainConfig keys for this run only (EDIT's step 2: `lr=`, `epochs=`; tests:
    `max_steps=`, `lora={"dropout": 0.0}`), validated like the YAML. `loss_fn(model, batch, nll_cap) ->
    (summed loss, outputs)` replaces token-weighted CE (an objective's `compute_loss` hook).
    final/ holds the LoRA adapter (whose config names the absolute base path) or the full model, plus the
    tokenizer. With `resume`, a run that stopped (crash, preemption) continues from the newest checkpoint
    in out_dir/checkpoints, optimizer and scheduler state included. Loss, lr, step and epoch of every
    logging step are appended to `metrics_path` (default out_dir/train_metrics.jsonl); `train.report_to`
    trackers get them too (TensorBoard: out_dir/tensorboard). `callbacks` are extra Trainer callbacks.
    Speed knobs (same result, less time/memory): `packing` (padding-free rows, packing.py),
    `loss_chunk_size` (0 = full logits), `attn_implementation`, `compile`, `liger` (fastpath.py).
    `training_args` overrides TrainingArguments fields (e.g. optim="sgd" in tests, benchmarks).
    """
    from transformers import set_seed

    c = _section(cfg, overrides)
    finetune, lr = c.finetune, c.lr
    if not examples:
        raise ValueError("train: no examples to train on")
    model_path = _full_model_dir(model_path)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    set_seed(seed)
    tokenizer = load_tokenizer(model_path)
    model, trainable = _student_model(model_path, c)
    report_to, tracker_cbs = _trackers(c.report_to, out_dir)
    args = _training_args(c, ckpt_dir, seed, max_grad_norm, training_args, report_to or [])
    metrics_file = Path(metrics_path) if metrics_path else out_dir / "train_metrics.jsonl"
    metrics_cb = _MetricsCallback(metrics_file, tag=f"train:{out_dir.name}")
    trainer = WeightedLossTrainer(
        model=model,
        args=args,
        train_dataset=ExampleDataset(examples),
        data_collator=PackedCollator() if c.packing else ExampleCollator(tokenizer.pad_token_id),
        callbacks=[metrics_cb, *tracker_cbs, *callbacks],
        nll_cap=nll_cap,
        loss_fn=loss_fn,
        loss_chunk_size=c.loss_chunk_size,
    )
    last, resumed_from = _resume_point(ckpt_dir, resume)
    if trainer.is_world_process_zero():
        metrics_cb.start(resumed_from)  # nor its metrics rows (a resume drops the steps it re-runs)
    logger.info(
        "training %s (%s, %d trainable params) on %d examples: batch %d x accum %d, lr %g",
        model_path.name, finetune, trainable, len(examples), c.batch_size, c.grad_accum, lr,
    )  # fmt: skip
    t0 = time.time()
    out = trainer.train(resume_from_checkpoint=last)
    final = _save_final(trainer, tokenizer, out_dir)
    result = TrainResult(
        final_dir=final, steps=out.global_step, losses=metrics_cb.losses, resumed_from_step=resumed_from,
        examples=len(examples), finetune=finetune, trainable_params=trainable, runtime_s=time.time() - t0,
    )  # fmt: skip
    if trainer.is_world_process_zero():
        # final_dir stored relative to train_result.json's directory ("final"), so a moved run stays whole
        write_json(
            out_dir / "train_result.json", {**result.summary(), "final_dir": to_stored(final, out_dir)}
        )
    if result.last_loss is not None and not math.isfinite(result.last_loss):
        logger.warning("training loss is %s at the end: check lr/precision", result.last_loss)
    return result


def _resume_point(ckpt_dir: Path, resume: bool) -> tuple[str | None, int]:
    """(the newest checkpoint to resume from or None, its step). Without `resume` old checkpoints go."""
    last = get_last_checkpoint(str(ckpt_dir)) if resume and ckpt_dir.is_dir() else None
    resumed_from = int(Path(last).name.split("-")[-1]) if last else 0
    if last:
        logger.info("resuming training from %s (step %d)", last, resumed_from)
    elif ckpt_dir.is_dir() and not resume:
        shutil.rmtree(ckpt_dir)  # a fresh run must not mix with an old run's checkpoints
    return last, resumed_from


def _save_final(trainer: Trainer, tokenizer: Any, out_dir: Path) -> Path:
    """Write out_dir/final atomically. `trainer.save_model` gathers FSDP/DeepSpeed shards, so every rank
    calls it into a fixed tmp dir; rank 0 then adds the tokenizer and renames it into place."""
    final, tmp = out_dir / "final", out_dir / ".final.tmp"
    main = trainer.is_world_process_zero()
    if main and tmp.exists():
        shutil.rmtree(tmp)  # leftover of a crash during a previous save
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if main:
        from exporters.chat_template import student_jinja_template

        # the base model's chat template (SmolLM2: ChatML) would wrap questions in roles never trained on
        tokenizer.chat_template = student_jinja_template()
        tokenizer.save_pretrained(tmp)
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config is in the run dir
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    trainer.accelerator.wait_for_everyone()
    return final


def merge_lora(
    adapter_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    base_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Merge a LoRA adapter into its base (default: the base named in adapter_config.json, resolved like
    `student.model`) and write a full fp32 HF directory + tokenizer to `out_dir` atomically. Returns `out_dir`.
    The merge itself is the exporter's (`exporters.merge.merge_lora`), so there is one."""
    from edge_distill.models import adapter_base
    from exporters.merge import merge_lora as merge

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_config.json)")
    base = Path(base_path) if base_path is not None else adapter_base(adapter_dir)
    return merge(adapter_dir, Path(out_dir), base=base)
