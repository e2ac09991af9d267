"""Tiny, hermetic models for benchmarks and tests: a random Llama and a byte-level BPE tokenizer built locally.

Hidden and intermediate sizes are multiples of 256 so llama.cpp's k-quants apply to every tensor,
which makes torch vs GGUF vs ONNX parity checks meaningful on a model that builds in a second.
Benchmarks import it as a sibling module (a script's own directory is on sys.path); the tests reach it
through `tests/tiny_models.py`, which adds one tiny model per supported architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import edge_distill

# The shipped GSM8K sample (MIT; see assets/gsm8k/LICENSE) is the tokenizer's training text: its first rows,
# after two lines that give the student/teacher format tokens their own merges.
GSM8K_TRAIN = Path(edge_distill.__file__).parent / "assets" / "gsm8k" / "train.jsonl"
CORPUS_HEADER = [
    "Question: Solution: [cot]: [l2m]: [pot]: The answer is answer = print( ) def return Sub-question Answer",
    "0123456789 + - * / = ( ) . , $ % ** // #### <<  >>",
]


def tokenizer_corpus(rows: int = 300) -> list[str]:
    """The header lines + "question\nanswer" of the first `rows` GSM8K sample rows."""
    out = list(CORPUS_HEADER)
    with open(GSM8K_TRAIN, encoding="utf-8") as f:
        for line in f:
            if len(out) >= rows + len(CORPUS_HEADER):
                break
            row = json.loads(line)
            out.append(f"{row['question']}\n{row['answer']}")
    return out


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2 style, like SmolLM2's) trained on a small math corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(
    out_dir: str | Path,
    *,
    hidden_size: int = 256,
    num_layers: int = 2,
    vocab_size: int = 512,
    intermediate_size: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random LlamaForCausalLM + tokenizer to `out_dir` (an HF directory) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        # 3x, not 2x: with vocab 512 a 512-wide MLP makes onnxruntime-genai's builder mistake it for lm_head
        intermediate_size=intermediate_size or 3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger-than-default init so greedy decoding is not a constant token: parity tests then compare
    # varied sequences instead of "the same token 20 times".
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
