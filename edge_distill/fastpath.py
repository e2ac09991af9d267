"""Speed and memory switches shared by training, evaluation and sampling (`train.precision`,
`train.attn_implementation`, `train.compile`, `train.liger`, the chunked loss head).

Kept apart from training.py so the trainer stays a thin Trainer subclass: each knob here is one function
the trainer (or a loader) calls, and each is a no-op at its default.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from edge_distill.errors import ConfigError, ModelError
from edge_distill.objectives.losses import chunked_weighted_ce

logger = logging.getLogger(__name__)

ATTN_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: there CPU bf16 matmuls are fast; elsewhere torch emulates them."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def mixed_precision_flags(precision: str) -> tuple[bool, bool]:
    """(bf16, fp16) autocast flags for TrainingArguments.

    "auto": bf16 on a GPU that has it, and on a CPU with native bf16 (AVX512-BF16/AMX); fp32 otherwise,
    because emulated CPU bf16 is slower than fp32. An explicit "bf16" is honoured on any CPU (autocast;
    fp32 master weights). fp16 needs loss scaling, i.e. a CUDA GPU.
    """
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return ((cuda and torch.cuda.is_bf16_supported()) or (not cuda and cpu_has_native_bf16()), False)
    if precision == "fp16" and not cuda:
        raise ModelError("train.precision=fp16 needs a CUDA GPU; use auto, fp32 or bf16")
    return (precision == "bf16", precision == "fp16")


def inference_dtype(precision: str) -> torch.dtype:
    """The weights dtype eval and the samplers load with, from the same `train.precision` choice."""
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        if not torch.cuda.is_available():
            raise ModelError("train.precision=fp16 needs a CUDA GPU; use auto, fp32 or bf16")
        return torch.float16
    bf16, _ = mixed_precision_flags(precision)
    return torch.bfloat16 if bf16 else torch.float32


def model_load_kwargs(attn_implementation: str = "auto") -> dict[str, Any]:
    """Extra `from_pretrained` kwargs. flash_attention_* needs the flash-attn package and a GPU; the
    error then comes from transformers and names what is missing."""
    if attn_implementation not in ATTN_CHOICES:
        raise ConfigError(
            f"train.attn_implementation: {attn_implementation!r} is not one of {', '.join(ATTN_CHOICES)}"
        )
    return {} if attn_implementation == "auto" else {"attn_implementation": attn_implementation}


def liger_available() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError:
        return False
    return True


def check_liger(enabled: bool) -> None:
    """`train.liger` applies Liger's RMSNorm/RoPE/SwiGLU kernels (Trainer's use_liger_kernel); the loss
    stays ours (chunked), so per-token weights and the NLL cap keep working. CUDA only."""
    if not enabled:
        return
    if not torch.cuda.is_available():
        raise ConfigError("train.liger=true needs a CUDA GPU (Triton kernels); set train.liger=false")
    if not liger_available():
        raise ConfigError("train.liger=true needs the liger-kernel package: pip install liger-kernel")


def _supports_head_capture(model: Any) -> bool:
    """The chunked loss replaces `logits = lm_head(h)`; models that post-process logits (Gemma's
    soft-capping, Cohere/Granite logit scaling) or have no plain Linear head keep the full-logit loss."""
    cfg = getattr(model, "config", None)
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        value = getattr(cfg, attr, None)
        if value not in (None, 1, 1.0):
            return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return isinstance(head, torch.nn.Linear)


class ChunkedLossHead:
    """Computes the weighted CE inside the LM head's forward, on its input hidden states, so the model's
    forward never returns [B, T, V] logits.

    Patching the head's forward (instead of calling the decoder directly) keeps the call going through the
    DDP/FSDP wrapper: gradient hooks fire and sharded parameters are gathered, as in a normal forward.
    """

    def __init__(self, model: Any, chunk_size: int):
        self.head = (
            model.get_output_embeddings() if chunk_size > 0 and _supports_head_capture(model) else None
        )
        self.chunk_size = chunk_size
        if chunk_size > 0 and self.head is None:
            logger.warning("this model post-processes its logits: the loss materializes full logits")

    @property
    def active(self) -> bool:
        return self.head is not None

    @contextlib.contextmanager
    def capture(
        self, input_ids: torch.Tensor, weights: torch.Tensor, nll_cap: float | None
    ) -> Iterator[list[torch.Tensor]]:
        """Within the block, the head's forward returns the loss (shape [1, 1, 1]); the yielded list
        receives it as a 0-dim tensor."""
        head, box = self.head, []
        assert head is not None

        def forward(hidden: torch.Tensor) -> torch.Tensor:
            loss = chunked_weighted_ce(
                hidden, head.weight, input_ids, weights, nll_cap, bias=head.bias, chunk_size=self.chunk_size
            )
            box.append(loss)
            return loss.reshape(1, 1, 1)

        head.forward = forward
        try:
            yield box
        finally:
            del head.forward  # back to the class's forward
