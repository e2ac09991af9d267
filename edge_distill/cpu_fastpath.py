"""CPU training fast paths (issue 21, item 2; measured in docs/scaling.md), switched by `train.cpu_fastpath`.

Profiled on a 2-core Xeon (SmolLM2-135M, LoRA r16 on every linear, one packed row of 4 GSM8K examples, fp32),
a training step spent 41 % in matmuls; of the rest, the largest avoidable parts were:

- **attention over the whole packed row** (15 % with the block-diagonal mask transformers builds for a packed
  row): every example attended over the row's full length, its other examples masked. `packed_sdpa` runs
  SDPA once per example (causal, no mask), so the work is Σ len² instead of (Σ len)², and no mask is built.
  Masked scores are exact zeros after the softmax, so each example's attention is the same numbers.
- **the LoRA branch's elementwise passes** (`lora_B(lora_A(dropout(x))) * scaling` then `result + ...`: a
  divide, two multiplies and an add over [tokens, features] per adapted linear, 210 in this model, and their
  backward). `fuse_lora_linears` computes `result + (x * keep) @ A.T @ B.T * (scaling / (1 - p))` with the
  scale folded into one `addmm`. With `train.lora.dropout_draws: torch`, `keep` is drawn exactly as
  `nn.Dropout` draws it on CPU (`empty_like(x).bernoulli_(1 - p)`, ATen's `_dropout_impl`): the same random
  stream and dropped units; only where the 1/(1-p) and the scaling are applied differs (fp32 ulps).
- **the dropout draws themselves** (measured on a 2-core EPYC after the two above: `bernoulli_` 17 % of a step,
  8.7 ns per element: ATen's CPU kernel is serial and spends a 64-bit Mersenne-Twister draw and a double
  compare on every element: more time than the base matmul it feeds). `dropout_draws: fast` (the default)
  takes four 16-bit uniform fields from each 64-bit draw of the same seeded generator (`random_` over the
  full int64 range) and drops a unit when its field is below round(p * 2^16): the same Bernoulli law with p
  rounded to a multiple of 2^-16 (|change| <= 7.6e-6), scaled by 1/(1 - rounded p) so E[mask * scale] = 1
  exactly. A quarter of the generator calls, no double compare: 3.6 -> 1.2 ms for a [650, 576] input. Other
  numbers than nn.Dropout's are drawn, so losses match a `torch`-draws run in distribution, not bit for bit.

The fused linear stays out of bf16 autocast (PEFT's path keeps its own rounding there). All are CPU-only
(CUDA's dropout is a fused kernel with its own random stream, and flash-attention has varlen kernels) and
switched by `train.cpu_fastpath` (default on).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F

from edge_distill.packing import example_spans

PACKED_SDPA = "edge_packed_sdpa"
DROPOUT_DRAWS = ("fast", "torch")
_LEVELS = 1 << 16  # values of one 16-bit field: dropout's p is rounded to a multiple of 1/_LEVELS


def _packed_spans(position_ids: torch.Tensor | None, length: int) -> list[tuple[int, int]] | None:
    """[start, end) of each example of a packed [1, T] row (positions restart at 0), or None when the row
    is not packed (a single example, or positions that do not start at 0)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape != (1, length):
        return None
    spans = example_spans(position_ids)
    return spans if len(spans) > 1 and spans[0][0] == 0 else None


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, once per packed example when the row is packed (see the module doc)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = None
    if attention_mask is None and query.shape[2] == key.shape[2]:  # training: no cache, no padding mask
        spans = _packed_spans(kwargs.get("position_ids"), query.shape[2])
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    outs = [
        sdpa_attention_forward(
            module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, is_causal=True, **kwargs
        )[0]
        for s, e in spans
    ]
    return torch.cat(outs, dim=1), None  # [1, T, heads, head_dim], as sdpa_attention_forward returns


def _packed_sdpa_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """No mask for packed rows (each example runs causal on its own); a padding mask is built as for sdpa."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_packed_sdpa() -> str:
    """Register `packed_sdpa` with transformers (idempotent); returns its attn_implementation name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, _packed_sdpa_mask)
    return PACKED_SDPA


def _fused_lora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """PEFT's lora.Linear.forward for one active vanilla adapter on CPU, as one addmm (module doc)."""
    name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    plain = (
        not args
        and not kwargs
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")  # bf16 autocast: PEFT's own path, its own rounding
        and not self.disable_adapters
        and not self.merged
        and name in self.lora_A
        and name not in self.lora_variant
        and self.lora_A[name].weight.dtype == x.dtype
        and self.lora_A[name].bias is None
        and self.lora_B[name].bias is None
    )
    if not plain:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    result = F.linear(x, base.weight, base.bias)
    dropout, scale = self.lora_dropout[name], self.scaling[name]
    if isinstance(dropout, torch.nn.Dropout) and dropout.training and dropout.p > 0:
        drawn = fast_dropout_keep(x, dropout.p) if self.edge_dropout_draws == "fast" else None
        # else nn.Dropout's own draw on CPU
        keep, kept = drawn or (torch.empty_like(x).bernoulli_(1 - dropout.p), 1 - dropout.p)
        x, scale = x * keep, scale / kept
    h = F.linear(x, self.lora_A[name].weight)
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        h.reshape(-1, h.shape[-1]),
        self.lora_B[name].weight.t(),
        alpha=scale,
    )
    return out.view(result.shape)


def fast_dropout_keep(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float] | None:
    """(keep mask in x's dtype, keep probability) for dropout with probability `p` on `x`, from 16-bit fields
    of torch's CPU generator (module doc); None where p rounds to 0 or 1 at 16 bits (then use `bernoulli_`).
    A float mask, not a bool one for masked_fill: multiplying by it is the cheaper pass forward and back."""
    drop = round(p * _LEVELS)
    if not 0 < drop < _LEVELS:
        return None
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # uniform over all 64 bits
    fields = words.view(torch.int16)[:n].view(x.shape)  # four uniform int16 per word
    return (fields >= drop - _LEVELS // 2).to(x.dtype), 1.0 - drop / _LEVELS


def fuse_lora_linears(model: torch.nn.Module, dropout_draws: str = "fast") -> int:
    """Give every PEFT lora.Linear with a plain nn.Linear base the fused forward; returns how many.
    `dropout_draws`: "fast" (16-bit fields, `fast_dropout_keep`) or "torch" (nn.Dropout's own draws).

    The instance's forward is replaced (not the class's), so other models in the process are untouched;
    anything the fused path does not cover (several adapters, DoRA, merged, CUDA) falls back to PEFT's."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if dropout_draws not in DROPOUT_DRAWS:
        raise ValueError(f"dropout_draws: {dropout_draws!r} is not one of {', '.join(DROPOUT_DRAWS)}")
    n = 0
    for m in model.modules():
        if type(m) is LoraLinear and type(m.base_layer) is torch.nn.Linear:
            m.forward = types.MethodType(_fused_lora_forward, m)
            m.edge_dropout_draws = dropout_draws
            n += 1
    return n
