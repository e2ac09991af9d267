"""ExecuTorch `.pte` export (XNNPACK, CPU) with a static KV cache, the format Android/iOS apps built on PyTorch ship.

The decoder is the transformers model itself under `torch.export` (strict, dynamo) with a `StaticCache` of
`max_seq_len` positions registered as mutable buffers, lowered with ExecuTorch's XNNPACK partitioner. Its one method
`forward(tokens [1, T], input_pos [1]) -> logits [1, T, vocab]` is the signature ExecuTorch's LLM runners call
(prefill: T prompt tokens at input_pos 0; decode: one token at its position), and the runners' metadata methods
(`get_max_seq_len`, `get_vocab_size`, `use_kv_cache`, `get_eos_ids`, ...) are constant methods of the program.
It returns the logits of *every* input position (not only the last): the parity check and the teacher-forced
fidelity need them, and a runner reads the last row.

Quantization is torchao's, through ExecuTorch's own `extension.llm.export.quantize.quantize_model_` (the recipe
optimum-executorch uses): `int8` = int8 weight-only (per output channel) linears and embedding; `8da4w` = int8
dynamic activations x int4 weights (groups of 32) linears, XNNPACK's fast CPU kernel, with an int8 embedding.
A tied LM head is quantized as a linear, the embedding as an embedding: the file holds both.

Environment: this module's `build_pte` runs inside ExecuTorch's own process (edge_distill/runtimes/executorch.py says
why and where that environment is: `.venv/executorch-packages`, installed by scripts/setup.sh); the main process only
calls `check_source` and `runner_tokenizer_json`, which import neither torch nor executorch.

The runners' tokenizer (pytorch-tokenizers 1.5.0's C++ HFTokenizer) mis-implements one step Qwen2/Qwen3 tokenizers
have, the `NFC` normalizer: it strips combining marks instead of composing them ("Ünïcödé" -> "Unicode", "й" -> "и";
3 of the 8 check strings of exporters.parity encode differently, measured on the tiny Qwen2). `runner_tokenizer_json`
drops that step from the package's copy: on text that is already NFC (what keyboards and most text produce) NFC is
the identity, and the export's tokenizer check then finds the runners' ids equal to Hugging Face's on every check
string; text in a decomposed form is tokenized as it comes (a valid encoding of the same bytes) instead of losing its
accents.

Speed (measured on SmolLM2-135M, 2026-12, benchmarks/results/executorch.json): decode is far below llama.cpp's and
ORT GenAI's (fp32 8.9, int8 3.2 tok/s vs 177 / 307 on the same shared host). The lowered `forward` is fragmented:
fp32 runs 333 XNNPACK delegate calls and 1,462 portable-kernel ops per call (the transformers attention over the
static cache: expand_copy, where, index_put, ...); int8 adds 242 `_to_dim_order_copy` (each int8 weight cast to fp32
every step) and 211 portable `aten::mm`, which XNNPACK does not take, so int8 is slower than fp32. ExecuTorch's own
custom SDPA / KV-cache ops and an XNNPACK-delegated int8 linear are the known ways out (not done).

torch, transformers, torchao and executorch are imported inside functions: this module is imported on devices.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from exporters import archs
from exporters.errors import ExportError

logger = logging.getLogger(__name__)

EXECUTORCH_QUANTS = ("fp32", "int8", "8da4w")
MODEL_FILE = "model.pte"
DEFAULT_MAX_SEQ_LEN = 1024  # the KV cache: prompt + answer of a GSM8K solution, and every fidelity text
# quant -> (linear recipe, linear group size (0 = per output channel)); both quantized variants store the embedding
# as int8 rows with one scale each (_int8_embeddings). "int8-weight-only" is _int8_weight_only_linears: torchao's
# int8 weight-only linear and int8 embedding leave `torchao::dequantize_affine` in the graph, which ExecuTorch 1.5
# has no kernel for ("Missing out variants"), measured; "8da4w" is torchao's, delegated to XNNPACK.
RECIPES: dict[str, tuple[str, int] | None] = {
    "fp32": None,
    "int8": ("int8-weight-only", 0),
    "8da4w": ("8da4w", 32),
}


def _require_executorch() -> None:
    try:
        import executorch  # noqa: F401
        import torchao  # noqa: F401
    except ImportError as e:
        from edge_distill.runtimes.executorch import SETUP_HINT

        raise ExportError(f"ExecuTorch export needs executorch and torchao: {SETUP_HINT} ({e})") from e


def check_source(config_dir: Path) -> None:
    """The executorch format's check_source: an architecture the exporter is tested on and an ExecuTorch
    environment to export in, before any work."""
    from edge_distill.runtimes.executorch import ExecuTorchMissing, environment

    archs.check_architecture(config_dir, "executorch")
    try:
        environment()
    except ExecuTorchMissing as e:
        raise ExportError(str(e)) from None


def runner_tokenizer_json(path: Path) -> str | None:
    """Drop the `NFC` normalizer step from the package's tokenizer.json (see the module docstring: the runners'
    C++ HFTokenizer strips accents there); returns what was dropped, None when the file had no such step."""
    from edge_distill.io import write_text

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    norm = data.get("normalizer")
    if not isinstance(norm, dict):
        return None
    if norm.get("type") == "NFC":
        data["normalizer"] = None
    elif norm.get("type") == "Sequence" and any(n.get("type") == "NFC" for n in norm.get("normalizers", [])):
        rest = [n for n in norm["normalizers"] if n.get("type") != "NFC"]
        data["normalizer"] = {**norm, "normalizers": rest} if rest else None
    else:
        return None
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2))
    return "NFC"


def _exportable(model: Any, max_seq_len: int) -> Any:
    """`model` wrapped as forward(tokens [1, T], input_pos [1]) -> logits [1, T, V] over a static KV cache."""
    import torch
    from transformers import StaticCache

    class StaticCacheDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            cfg = model.config.get_text_config()
            self.cache = StaticCache(config=cfg, max_cache_len=max_seq_len)
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
            self.cache.early_initialization(1, kv_heads, head_dim, torch.float32, "cpu")
            for i, layer in enumerate(
                self.cache.layers
            ):  # the cache tensors become the program's mutable buffers
                self.register_buffer(f"key_cache_{i}", layer.keys, persistent=False)
                self.register_buffer(f"value_cache_{i}", layer.values, persistent=False)
                self.register_buffer(f"cache_length_{i}", layer.cumulative_length, persistent=False)

        def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
            for layer in self.cache.layers:  # the tokens go at input_pos: a new prompt restarts at 0
                layer.cumulative_length.copy_(input_pos[0])
            out = self.model(input_ids=tokens, cache=self.cache, use_cache=True, attention_mask=None)
            return out.logits

    return StaticCacheDecoder()


def _swap_modules(model: Any, kind: type, make: Any) -> None:
    """Replace every submodule of type `kind` by `make(submodule)`, in place."""
    for name, child in list(model.named_children()):
        if isinstance(child, kind):
            setattr(model, name, make(child))
        else:
            _swap_modules(child, kind, make)


def _int8_weight_only_linears(model: Any) -> None:
    """Every nn.Linear -> int8 weights with one fp32 scale per output channel (symmetric), computed as
    `linear(x, w_int8.to(float)) * scale + bias`: ExecuTorch's own int8 weight-only recipe (its llama example's
    WeightOnlyInt8Linear), keeping the bias Qwen2's q/k/v projections have."""
    import torch

    class Int8WeightOnlyLinear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            w = linear.weight.detach().float()
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
            self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))
            self.register_buffer("scales", scale)
            self.bias = (
                None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.linear(x, self.weight.to(x.dtype)) * self.scales
            return y if self.bias is None else y + self.bias

    _swap_modules(model, torch.nn.Linear, Int8WeightOnlyLinear)


def _int8_embeddings(model: Any) -> None:
    """Every nn.Embedding -> int8 rows with one fp32 scale per row, looked up by ExecuTorch's quantized kernel
    `quantized_decomposed::embedding_byte` (as its llama example's QuantizedGroupEmbedding)."""
    import executorch.kernels.quantized  # noqa: F401 - registers quantized_decomposed ops for export
    import torch

    class Int8Embedding(torch.nn.Module):
        def __init__(self, emb: torch.nn.Embedding) -> None:
            super().__init__()
            w = emb.weight.detach().float()
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
            self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))
            self.register_buffer("scales", scale)

        def forward(self, indices: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized_decomposed.embedding_byte.dtype(
                self.weight, self.scales, None, -128, 127, indices, dtype=torch.float32
            )

    _swap_modules(model, torch.nn.Embedding, Int8Embedding)


def _weights_report(model: Any) -> dict[str, Any]:
    """Bits per weight of the quantized torch model, tensor by tensor (int4 counted at 4 bits, as XNNPACK packs
    it, plus its group scales), in the shape of exporters.quantize's GGUF/ONNX reports."""
    import torch

    from exporters.quantize import _report

    tensors: list[tuple[str, str, int, int]] = []
    for name, b in model.named_buffers():
        if b.dtype == torch.int8:  # _int8_weight_only_linears, _int8_embeddings: int8 + an fp32 scale per row
            scales = model.get_buffer(name.rsplit(".", 1)[0] + ".scales")
            tensors.append((name, "int8", b.numel(), b.numel() + scales.numel() * 4))
    for name, p in model.named_parameters(remove_duplicate=True):
        if p.dim() < 2:
            tensors.append((name, "f32", p.numel(), p.numel() * 4))
            continue
        qdata = getattr(p, "qdata", None)
        if qdata is None:
            tensors.append((name, "f32", p.numel(), p.numel() * 4))
            continue
        bits = {"torch.int4": 4, "torch.int8": 8}.get(str(getattr(p, "target_dtype", "torch.int8")), 8)
        scale = getattr(p, "scale", None)
        scale_bytes = scale.numel() * scale.element_size() if scale is not None else 0
        zero = getattr(p, "zero_point", None)
        zero_bytes = zero.numel() * zero.element_size() if zero is not None else 0
        n = qdata.numel()
        block = n // max(1, scale.numel()) if scale is not None else n
        typ = f"int{bits}" + (f"/g{block}" if bits == 4 else "")
        tensors.append((name, typ, n, n * bits // 8 + scale_bytes + zero_bytes))
    names = {t[0] for t in tensors}
    embd = next((n for n in names if n.endswith("embed_tokens.weight")), None)
    head = next((n for n in names if n.endswith("lm_head.weight")), None)
    return _report(tensors, head or embd, embd, tied=head is None)


def build_pte(model_dir: Path, out_file: Path, quant: str, *, max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
              threads: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Load `model_dir` (fp32), quantize, export and lower to `out_file`; returns the quantization report."""
    if quant not in EXECUTORCH_QUANTS:
        raise ExportError(f"executorch quant {quant!r}: choose one of {list(EXECUTORCH_QUANTS)}")
    _require_executorch()
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().requires_grad_(False)
    if model.config.get_text_config().tie_word_embeddings and quant != "fp32":
        # quantized apart: the LM head as a linear, the embedding as a lookup table
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
    recipe = RECIPES[quant]
    if recipe is not None:
        from executorch.extension.llm.export.quantize import quantize_model_

        linear, group = recipe
        if linear == "int8-weight-only":
            _int8_weight_only_linears(model)
        else:
            quantize_model_(model, qlinear_config=linear, qlinear_group_size=group)
        _int8_embeddings(model)
    report = _weights_report(model)
    with torch.no_grad():
        wrapped = _exportable(model, max_seq_len)
        if recipe is not None:
            from torchao.utils import unwrap_tensor_subclass

            unwrap_tensor_subclass(wrapped)
        seq = torch.export.Dim("seq", min=1, max=max_seq_len - 1)
        example = (torch.tensor([[1, 2, 3]], dtype=torch.long), torch.tensor([0], dtype=torch.long))
        try:
            program = torch.export.export(wrapped, example, dynamic_shapes=({1: seq}, None), strict=True)
        except Exception as e:  # torch.export's errors are long; the first lines say which op
            raise ExportError(f"torch.export of {model_dir} failed: {str(e).strip()[:600]}") from e
        eos = tokenizer.eos_token_id
        metadata = {
            "get_max_seq_len": max_seq_len,
            "get_max_context_len": max_seq_len,
            "get_vocab_size": int(model.config.get_text_config().vocab_size),
            "get_n_layers": int(model.config.get_text_config().num_hidden_layers),
            "use_kv_cache": True,
            "use_sdpa_with_kv_cache": False,
            "enable_dynamic_shape": True,
        }
        if eos is not None:
            metadata["get_eos_ids"] = [int(eos)]
        if tokenizer.bos_token_id is not None:
            metadata["get_bos_id"] = int(tokenizer.bos_token_id)
        edge = to_edge_transform_and_lower(
            program,
            partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False),
            constant_methods=metadata,
        )
        # the cache starts zeroed in the file, so no position the mask hides can hold NaN garbage
        et = edge.to_executorch(
            config=_backend_config(InitializedMutableBufferPass(["key_cache", "value_cache", "cache_length"]))
        )
    from edge_distill.io import atomic_path

    with atomic_path(out_file) as tmp:
        Path(tmp).write_bytes(et.buffer)
    return report


def _backend_config(init_pass: Any) -> Any:
    """No constant propagation: it would fold the int8 weight-only linears' `weight.to(float)` back into fp32
    constants (measured: the int8 file came out as large as the fp32 one)."""
    from executorch.exir import ExecutorchBackendConfig

    return ExecutorchBackendConfig(passes=[init_pass], do_quant_fusion_and_const_prop=False)
