"""`train.kd` in training: the teacher's distribution next to the objective's examples, and the loss hook.

Three teacher sources, one loss (objectives/kd.py: (1 − λ)·CE + λ·D on the objective's weighted tokens):
- offline: the teacher's top-k log-probs recorded at `teach` time (teachers/topk.py, `teach/topk.npz`) are
  aligned to each example's tokens (`attach_topk`) and travel in the batch (`kd_ids`, `kd_logprobs`);
- online: a local transformers teacher that shares the tokenizer runs on the same batch under no_grad
  inside the hook; its full distribution is used (sliced to the shared vocabulary);
- on-policy (GKD's λ, `train.kd.on_policy`): with that probability a micro-batch's responses are replaced
  by ones the student samples from its prompts now (`generation.generate`, the sampler SIKeD uses), and
  the online teacher scores them; those rows are pure divergence (the student's own text has no CE target).

Alignment (offline): the teacher's record is the tokens it generated after its own few-shot prompt; the
example is the student prompt + the objective's response text (a tag, the rationale, the answer line, EOS).
The two token sequences are matched (difflib, on ids); position t of the example takes the teacher's row
of its matched token when token t and token t − 1 both match consecutive teacher tokens (so the recent
context is the same text). The tag, EOS and anything the objective rewrote get no teacher row: CE only
there. `objective.json` reports the share of weighted tokens that got one (`kd_coverage`).

The hook computes logits only for the rows that predict a weighted token (the LM head is applied to those
hidden states only, for the student and the teacher), and the divergence in row chunks under activation
checkpointing, so no [B, T, V] tensor and at most `KD_CHUNK` rows of [rows, V] float32 temporaries exist.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from edge_distill.config import KdConfig, TrainConfig
from edge_distill.errors import ConfigError
from edge_distill.objectives.examples import Example
from edge_distill.objectives.kd import full_divergence, kd_mixed_loss, topk_divergence
from edge_distill.types import Sample

log = logging.getLogger(__name__)

KD_CHUNK = 256  # rows of [rows, V] float32 temporaries alive at once in the divergence


# ------------------------------------------------------------------------------------------ offline: alignment
def align_topk(
    input_ids: Sequence[int], weights: Sequence[float], record: Any
) -> tuple[np.ndarray, np.ndarray, int]:
    """Teacher rows for one example: (ids int32 [T, k], log-probs float16 [T, k], rows filled).

    Row t is the teacher's distribution for predicting token t; only weighted (w > 0) tokens whose token and
    predecessor both match consecutive teacher tokens get one (see the module docstring).
    """
    t_len, k = len(input_ids), record.k
    ids = np.full((t_len, k), -1, dtype=np.int32)
    lps = np.full((t_len, k), -np.inf, dtype=np.float16)
    teacher = record.tokens.tolist()
    filled = 0
    for a, b, size in SequenceMatcher(None, teacher, list(input_ids), autojunk=False).get_matching_blocks():
        for d in range(1, size):
            t, j = b + d, a + d
            if weights[t] > 0 and teacher[j] >= 0:
                ids[t], lps[t] = record.ids[j], record.logprobs[j]
                filled += 1
    return ids, lps, filled


def attach_topk(
    examples: list[Example], samples: Sequence[Sample], store: Any
) -> tuple[list[Example], dict[str, Any]]:
    """Give each example built from a teacher sample with a recorded top-k (`Sample.meta["topk"]`, looked up
    in `store`) its aligned teacher rows; return the examples and coverage counts for objective.json."""
    weighted = covered = with_record = 0
    for ex in examples:
        weighted += sum(w > 0 for w in ex.weights)
        sample = samples[ex.sample] if ex.sample is not None and 0 <= ex.sample < len(samples) else None
        record = store.get(sample.meta.get("topk")) if sample is not None else None
        if record is None:
            continue
        with_record += 1
        ids, lps, filled = align_topk(ex.input_ids, ex.weights, record)
        if filled:
            ex.kd = (ids, lps)
            covered += filled
    stats = {
        "kd_examples_with_topk": with_record,
        "kd_weighted_tokens": weighted,
        "kd_covered_tokens": covered,
        "kd_coverage": round(covered / weighted, 4) if weighted else 0.0,
    }
    log.info("kd: teacher top-k for %d of %d examples, %.1f %% of weighted tokens", with_record, len(examples),
             100 * stats["kd_coverage"])  # fmt: skip
    return examples, stats


def open_store(path: str | Path | None, student_fingerprint: str) -> Any:
    """The run's `teach/topk.npz`, checked to be recorded for this student's tokenizer."""
    from edge_distill.teachers.topk import TopKStore

    if path is None or not Path(path).is_file():
        raise ConfigError(
            f"train.kd.source=offline: no teacher top-k store at {path} (the teach stage records it when train.kd "
            "is enabled with source offline; re-run it: edge-distill run ... --redo teach)"
        )
    store = TopKStore(path)
    recorded = store.info.get("tokenizer")
    if recorded != student_fingerprint:
        raise ConfigError(
            f"train.kd: {path} was recorded for a tokenizer with content {recorded}, the student's is "
            f"{student_fingerprint}; re-run the teach stage for this student (--redo teach)"
        )
    return store


# ------------------------------------------------------------------------------------------ logits of some rows
def _unwrap(model: Any) -> Any:
    while hasattr(model, "module"):  # DDP / accelerate wrappers
        model = model.module
    return model


@contextlib.contextmanager
def rows_only_head(model: Any, rows: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's LM head returns logits [1, M, V] for the M positions where `rows`
    ([B, T−1] bool: position t predicts token t+1) is True, instead of [B, T, V]. Elementwise logit
    post-processing (soft-capping, scaling) still applies. The call stays inside the (DDP) wrapper."""
    head = _unwrap(model).get_output_embeddings()
    if head is None:
        raise ConfigError("train.kd: the model has no output embedding (LM head) to distill through")
    original = head.forward

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        return original(hidden[:, :-1][rows].unsqueeze(0))

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def row_logits(model: Any, batch: dict[str, Any], rows: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """([M, V] logits of the selected rows, the model's outputs)."""
    extra = {k: batch[k] for k in ("position_ids", "attention_mask") if k in batch}
    with rows_only_head(model, rows):
        outputs = model(input_ids=batch["input_ids"], use_cache=False, **extra)
    return outputs.logits[0], outputs


# ------------------------------------------------------------------------------------------ the loss hook
class KDLoss:
    """The objective `compute_loss` hook for `train.kd`: `(model, batch, nll_cap) -> (summed loss, outputs)`.

    Args:
        kd: the `train.kd` section.
        vocab_size: the shared tokenizer's size (padding rows of either embedding are sliced off).
        teacher: a frozen causal LM sharing the tokenizer (online / on-policy), or None (offline).
        tokenizer: the student's tokenizer (on-policy sampling only).
        seed: seeds the on-policy coin flips.
    """

    def __init__(
        self, kd: KdConfig, vocab_size: int, *, teacher: Any = None, tokenizer: Any = None, seed: int = 0
    ):
        self.kd = kd
        self.vocab_size = vocab_size
        self.teacher = teacher
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self.on_policy_batches = 0
        if kd.source == "online" and teacher is None:
            raise ConfigError("train.kd.source=online needs a teacher model (train.kd.teacher_model)")

    def __call__(self, model: Any, batch: dict[str, Any], nll_cap: float | None) -> tuple[torch.Tensor, Any]:
        lam = self.kd.weight
        if self.kd.on_policy > 0 and self.rng.random() < self.kd.on_policy:
            batch, lam = self.on_policy_batch(model, batch), 1.0
            self.on_policy_batches += 1
        ids, weights = batch["input_ids"], batch["weights"]
        w = weights[:, 1:]
        rows = w != 0
        if not bool(rows.any()):  # keep the graph (DDP: every parameter gets a gradient) and give 0
            extra = {k: batch[k] for k in ("position_ids", "attention_mask") if k in batch}
            outputs = model(input_ids=ids, use_cache=False, **extra)
            return outputs.logits.sum().float() * 0.0, outputs
        student, outputs = row_logits(model, batch, rows)
        targets, w_sel = ids[:, 1:][rows], w[rows]
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits, _ = row_logits(self.teacher, batch, rows)
            has = torch.ones_like(w_sel, dtype=torch.bool)
            div = self._chunked(_full_rows, student, has & (w_sel > 0), teacher_logits)
        elif "kd_ids" in batch:
            t_ids, t_lps = batch["kd_ids"][:, 1:][rows], batch["kd_logprobs"][:, 1:][rows]
            has = (t_ids >= 0).any(-1)
            div = self._chunked(_topk_rows, student, has & (w_sel > 0), t_ids, t_lps)
        else:  # offline, and no example of this batch has teacher rows: plain CE
            has = torch.zeros_like(w_sel, dtype=torch.bool)
            div = torch.zeros_like(w_sel)
        return kd_mixed_loss(student, targets, w_sel, div, has, lam, nll_cap), outputs

    def _chunked(
        self, fn: Any, student: torch.Tensor, use: torch.Tensor, *teacher: torch.Tensor
    ) -> torch.Tensor:
        """D for the rows in `use` (0 elsewhere), KD_CHUNK rows at a time; each chunk is recomputed in the
        backward pass instead of keeping its [rows, V] temporaries."""
        out = torch.zeros(student.shape[0], dtype=torch.float32, device=student.device)
        idx = use.nonzero().flatten()
        opts = (self.kd.divergence, self.kd.beta, self.kd.temperature, self.vocab_size)
        for s in range(0, len(idx), KD_CHUNK):
            part = idx[s : s + KD_CHUNK]
            args = (student[part], *(t[part] for t in teacher))
            d = (
                checkpoint(fn, *args, *opts, use_reentrant=False)
                if torch.is_grad_enabled()
                else fn(*args, *opts)
            )
            out = out.index_put((part,), d)
        return out

    # -------------------------------------------------------------------------------------- on-policy
    def on_policy_batch(self, model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        """The micro-batch with each example's response replaced by one the student samples now from the
        same prompt (tokens before its first weighted token); weights 1/#response tokens. Padded rows."""
        from edge_distill.generation import generate

        tok = self.tokenizer
        prompts = [ids[: _first_weighted(w)] for ids, w in _examples_of(batch)]
        texts = [tok.decode(p, skip_special_tokens=False) for p in prompts]
        core = _unwrap(model)
        responses = generate(
            core, tok, texts, n=1, temperature=self.kd.on_policy_temperature, top_p=1.0,
            max_new_tokens=self.kd.on_policy_max_new_tokens, batch_size=len(texts), progress=False,
        )  # fmt: skip
        rows = []
        for p, (text,) in zip(prompts, responses, strict=True):
            r = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((p + r, [0.0] * len(p) + [1.0 / len(r)] * len(r)))
        width = max(len(ids) for ids, _ in rows)
        device = batch["input_ids"].device
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        weights = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, (ids, w) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            weights[i, : len(ids)] = torch.tensor(w)
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention.to(device),
            "weights": weights.to(device),
        }


def _full_rows(
    student: torch.Tensor, teacher: torch.Tensor, kind: str, beta: float, temperature: float, vocab: int
) -> torch.Tensor:
    return full_divergence(student, teacher, kind=kind, beta=beta, temperature=temperature, vocab_size=vocab)


def _topk_rows(student: torch.Tensor, ids: torch.Tensor, lps: torch.Tensor, kind: str, beta: float,
               temperature: float, vocab: int) -> torch.Tensor:  # fmt: skip
    return topk_divergence(student, ids, lps, kind=kind, beta=beta, temperature=temperature, vocab_size=vocab)


def _first_weighted(weights: list[float]) -> int:
    return next((i for i, w in enumerate(weights) if w != 0), len(weights))


def _examples_of(batch: dict[str, Any]) -> list[tuple[list[int], list[float]]]:
    """(ids, weights) of each example of a padded or packed batch."""
    from edge_distill.packing import example_spans

    ids, w = batch["input_ids"].tolist(), batch["weights"].tolist()
    if "position_ids" in batch and "attention_mask" not in batch:
        return [(ids[0][s:e], w[0][s:e]) for s, e in example_spans(batch["position_ids"])]
    mask = batch["attention_mask"].tolist()
    return [(r[: sum(m)], ww[: sum(m)]) for r, ww, m in zip(ids, w, mask, strict=True)]


# ------------------------------------------------------------------------------------------ building it
def load_teacher(path: str | Path, student_tokenizer: Any, precision: str = "auto") -> Any:
    """The online teacher: a local transformers model whose tokenizer is the student's by content; frozen,
    in eval mode, on the training device, in the dtype evaluation uses for `train.precision`."""
    from transformers import AutoModelForCausalLM

    from edge_distill.fastpath import inference_dtype
    from edge_distill.models import resolve_model
    from edge_distill.teachers.vocab import hf_content, require_same, teacher_content

    path = resolve_model(str(path))
    require_same(teacher_content(path), hf_content(student_tokenizer, "the student's tokenizer"))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=inference_dtype(precision))
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < len(student_tokenizer):
        raise ConfigError(
            f"train.kd.teacher_model: {path} has {rows} output rows for {len(student_tokenizer)} tokens"
        )
    model.requires_grad_(False)
    model.eval()
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def teacher_memory_bytes(model: Any) -> int:
    """Bytes of the online teacher's weights (parameters + buffers) held beside the student."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def kd_setup(train_cfg: TrainConfig, base_model: str | Path, examples: list[Example], samples: Sequence[Sample],
             topk_store: str | Path | None, *, seed: int = 0) -> tuple[KDLoss, dict[str, Any]]:  # fmt: skip
    """The loss hook for `train_cfg.kd` (enabled) and its metrics; attaches offline teacher rows to `examples`."""
    from edge_distill.models import load_tokenizer
    from edge_distill.teachers.vocab import hf_content

    kd = train_cfg.kd
    tokenizer = load_tokenizer(base_model)
    metrics: dict[str, Any] = {"kd_source": kd.source, "kd_divergence": kd.divergence, "kd_weight": kd.weight,
                               "kd_temperature": kd.temperature, "kd_on_policy": kd.on_policy}  # fmt: skip
    if kd.divergence == "jsd":
        metrics["kd_beta"] = kd.beta
    teacher = None
    if kd.source == "offline":
        store = open_store(topk_store, hf_content(tokenizer).fingerprint())
        _, stats = attach_topk(examples, samples, store)
        metrics.update(stats, kd_top_k=int(store.info.get("k", 0)))
    else:
        teacher = load_teacher(kd.teacher_model, tokenizer, train_cfg.precision)
        metrics["kd_teacher_memory_bytes"] = teacher_memory_bytes(teacher)
    return KDLoss(kd, len(tokenizer), teacher=teacher, tokenizer=tokenizer, seed=seed), metrics
