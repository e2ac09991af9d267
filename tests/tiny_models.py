"""Tiny, hermetic models for tests: a random Llama and a byte-level BPE tokenizer built locally
(`benchmarks/_fixtures.py`, shared with the benchmarks), plus one tiny random model per architecture the
exporters support and a tiny Llama trained to answer.

Hidden and intermediate sizes are multiples of 256 so llama.cpp's k-quants apply to every tensor,
which makes torch vs GGUF vs ONNX parity checks meaningful on a model that builds in a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks._fixtures import (
    CHAT_TEMPLATE,
    CORPUS_HEADER,
    GSM8K_TRAIN,
    SPECIAL_TOKENS,
    build_tiny_llama,
    build_tiny_tokenizer,
    tokenizer_corpus,
)

__all__ = [
    "CHAT_TEMPLATE",
    "CORPUS_HEADER",
    "GSM8K_TRAIN",
    "SPECIAL_TOKENS",
    "TINY_ARCHS",
    "build_answering_llama",
    "build_tiny_arch",
    "build_tiny_llama",
    "build_tiny_tokenizer",
    "tokenizer_corpus",
]

# One tiny random model per architecture the exporters support (exporters/archs.py): hidden 256 (so k-quants
# apply and q4_k_m really holds Q4_K tensors), 2 layers
# (Gemma 3: 6, so its every-6th global-attention layer exists), the tiny BPE tokenizer above. Each config keeps
# what makes the family different: Qwen2 q/k/v biases, Qwen3 q/k norms and head_dim != hidden/heads, Gemma 3
# norm offset, embedding scale, sliding-window layers (window 8, shorter than the parity prompts) and local rope
# base, Phi-3 fused qkv/gate_up (tokenizer_class GPT2Tokenizer, as Phi-4-mini), LFM2 short-conv + attention.
TINY_ARCHS = ("llama", "qwen2", "qwen3", "gemma3_text", "phi3", "lfm2")


def _tiny_config(arch: str, tokenizer, hidden: int):
    import transformers

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)}  # fmt: skip
    common = {"hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 2048, **ids}  # fmt: skip
    if arch == "llama":
        return transformers.LlamaConfig(**common, intermediate_size=3 * hidden, tie_word_embeddings=True)
    if arch == "qwen2":
        return transformers.Qwen2Config(**common, intermediate_size=3 * hidden, tie_word_embeddings=True)
    if arch == "qwen3":
        return transformers.Qwen3Config(
            **common, intermediate_size=3 * hidden, head_dim=32, tie_word_embeddings=True
        )
    if arch == "gemma3_text":
        return transformers.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 6}, intermediate_size=3 * hidden, head_dim=32,
            query_pre_attn_scalar=32, sliding_window=8,
        )  # fmt: skip
    if arch == "phi3":
        # 4 kv heads (as Phi-3-mini): with 2, the fused qkv width (256 + 2 * 128) equals the vocabulary (512),
        # which onnxruntime-genai's builder mistakes for the LM head (refused by check_builder_compatible)
        common = {**common, "num_key_value_heads": 4}
        return transformers.Phi3Config(**common, intermediate_size=3 * hidden, original_max_position_embeddings=2048,
                                       tie_word_embeddings=False)  # fmt: skip
    if arch == "lfm2":
        return transformers.Lfm2Config(
            **common,
            intermediate_size=4 * hidden,
            block_multiple_of=64,
            layer_types=["conv", "full_attention"],
        )
    raise ValueError(f"no tiny builder for {arch!r}; known: {TINY_ARCHS}")


def build_tiny_arch(out_dir: str | Path, arch: str, *, hidden_size: int = 256, seed: int = 0) -> Path:
    """Write a tiny random model of `arch` (a config.json model_type in TINY_ARCHS) + tokenizer to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer()
    config = _tiny_config(arch, tokenizer, hidden_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # As build_tiny_llama: varied greedy tokens; 1-D tensors (norms, biases) moved off their defaults too.
    # Gemma 3 multiplies embeddings by sqrt(hidden): at std 0.08 they swamp every layer (one token forever).
    emb_std = 0.08 / hidden_size**0.5 if arch == "gemma3_text" else 0.08
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, emb_std if "embed_tokens" in name else 0.08)
            else:
                p.add_(torch.randn_like(p) * 0.05)
            # f16-representable weights: the f16 GGUF then holds exactly the torch weights, and greedy parity
            # tests the conversion rather than f16 rounding (measured: Qwen3 seed 0 has a 3e-4 logit near-tie
            # that f32 and f16-rounded weights decide differently; torch with f16-rounded weights = llama.cpp).
            p.copy_(p.half().float())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if arch == "phi3":  # llama.cpp's converter reads a Phi-3 vocab as BPE only for this class (Phi-4-mini)
        path = out_dir / "tokenizer_config.json"
        tok_cfg = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(
            json.dumps({**tok_cfg, "tokenizer_class": "GPT2Tokenizer"}, indent=2), encoding="utf-8"
        )
    return out_dir


def build_answering_llama(
    out_dir: str | Path,
    pairs: list[tuple[str, str]],
    *,
    steps: int = 400,
    vocab_size: int = 384,
    seed: int = 0,
) -> Path:
    """A tiny Llama (as `build_tiny_llama`) trained on (prompt, continuation) pairs until greedy decoding after
    each prompt reproduces its continuation: a model whose output is known, so a decoding loop can be checked
    on real text (a finished answer followed by what a student writes when it misses EOS).

    The loss is on the continuation tokens (+ EOS) only; training stops early once every continuation token
    is the argmax by a margin, so f16 GGUF weights decode the same tokens. vocab 384: with 512 the ONNX
    builder can mistake a projection for the LM head (see tests/test_bench_runtime.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_llama(out_dir, vocab_size=vocab_size, seed=seed)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = []
    for prompt, continuation in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(continuation, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p + c, len(p)))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, n) in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        labels[i, n : len(r)] = torch.tensor(r[n:])
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    target = labels[:, 1:]
    for _ in range(steps):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        with torch.no_grad():  # margin of the wanted token over the best other, at every continuation step
            logits = out.logits[:, :-1].float()
            want = logits.gather(-1, target.clamp(min=0)[..., None])[..., 0]
            other = logits.scatter(-1, target.clamp(min=0)[..., None], float("-inf")).max(-1).values
            if bool(((want - other)[target >= 0] > 2.0).all()):
                break
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    else:
        raise RuntimeError(
            f"build_answering_llama: not memorized in {steps} steps (loss {out.loss.item():.4f})"
        )
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    return path
