"""The vocabulary contract of logit distillation: teacher and student share one tokenizer, by content.

Two tokenizers are the same when their content is: the token strings in id order, the BPE merges and the
ids of the special tokens (`TokenizerContent`, hashed by `fingerprint`). Names and paths prove nothing (a
"Qwen2.5" tokenizer has 151,646 tokens in models whose embeddings hold 151,936 or 152,064 rows). Padding is
not content: trailing unused GGUF entries and embedding rows past the tokenizer are ignored here and
sliced off the logits in the loss (objectives/kd.py). A mismatch is one `ConfigError` naming both sides
and the first difference.

Readers: a transformers tokenizer (the student, a transformers teacher, `train.kd.teacher_tokenizer`) and a
GGUF file's header (the llama.cpp teacher), read with the `gguf` package without loading tensors.
Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import ConfigError

GGUF_CONTROL, GGUF_UNUSED = 3, 5  # gguf.TokenType values


@dataclass(frozen=True)
class TokenizerContent:
    """What makes two tokenizers interchangeable for distillation."""

    name: str  # where it came from, for messages only
    tokens: tuple[str, ...]  # token string of each id, 0..size-1 ("" for an id with no token)
    merges: tuple[str, ...]  # "left right" BPE merges in priority order (empty for non-BPE models)
    special: tuple[int, ...]  # sorted ids of special/control tokens

    @property
    def size(self) -> int:
        return len(self.tokens)

    def fingerprint(self) -> str:
        blob = json.dumps([self.tokens, self.merges, self.special], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.name} ({self.size} tokens, content {self.fingerprint()})"


def _merge_text(m: Any) -> str:
    return " ".join(m) if isinstance(m, (list, tuple)) else str(m)


def hf_content(tokenizer: Any, name: str | None = None) -> TokenizerContent:
    """The content of a transformers (fast) tokenizer: vocabulary incl. added tokens, merges, specials."""
    vocab = tokenizer.get_vocab()
    size = len(tokenizer)
    tokens = [""] * size
    for tok, i in vocab.items():
        if 0 <= i < size:
            tokens[i] = tok
    merges: list[str] = []
    special = set(int(i) for i in tokenizer.all_special_ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str())
        merges = [_merge_text(m) for m in model.get("model", {}).get("merges", []) or []]
        special |= {int(a["id"]) for a in model.get("added_tokens", []) if a.get("special")}
    return TokenizerContent(
        name or str(getattr(tokenizer, "name_or_path", "tokenizer")),
        tuple(tokens),
        tuple(merges),
        tuple(sorted(special)),
    )


def gguf_content(path: str | Path) -> TokenizerContent:
    """The tokenizer content of a GGUF file's header (tokens, merges, CONTROL-type ids); trailing UNUSED
    entries (vocabulary padding written by the converter) are dropped."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the GGUF header ({e})") from None

    def field(key: str) -> list[Any]:
        f = reader.get_field(key)
        return list(f.contents()) if f is not None else []

    tokens = [str(t) for t in field("tokenizer.ggml.tokens")]
    if not tokens:
        raise ConfigError(f"{path}: the GGUF holds no tokenizer (tokenizer.ggml.tokens)")
    types = [int(t) for t in field("tokenizer.ggml.token_type")] or [1] * len(tokens)
    size = len(tokens)
    while size and types[size - 1] == GGUF_UNUSED:
        size -= 1
    special = tuple(i for i in range(size) if types[i] == GGUF_CONTROL)
    merges = tuple(str(m) for m in field("tokenizer.ggml.merges"))
    return TokenizerContent(str(path), tuple(tokens[:size]), merges, special)


def first_difference(a: TokenizerContent, b: TokenizerContent) -> str:
    if a.size != b.size:
        return f"{a.size} vs {b.size} tokens"
    for i, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=True)):
        if x != y:
            return f"token {i} is {x!r} vs {y!r}"
    if a.merges != b.merges:
        n = next((i for i, (x, y) in enumerate(zip(a.merges, b.merges, strict=False)) if x != y), None)
        return (
            f"merge {n} is {a.merges[n]!r} vs {b.merges[n]!r}"
            if n is not None
            else f"{len(a.merges)} vs {len(b.merges)} merges"
        )
    return f"special token ids {list(a.special)[:8]} vs {list(b.special)[:8]}"


def require_same(teacher: TokenizerContent, student: TokenizerContent) -> None:
    """ConfigError naming both tokenizers unless their content is identical."""
    if teacher.fingerprint() == student.fingerprint():
        return
    raise ConfigError(
        f"train.kd: the teacher's tokenizer {teacher.describe()} is not the student's {student.describe()}: "
        f"{first_difference(teacher, student)}. Logit distillation compares distributions over one shared "
        "vocabulary; use a teacher of the student's model family (same tokenizer), or set train.kd.enabled=false "
        "to distill text only"
    )


def teacher_content(spec: str | Path) -> TokenizerContent:
    """The tokenizer content of a teacher given as a GGUF file or a local transformers directory."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return gguf_content(path)
    if path.is_dir():
        from transformers import AutoTokenizer

        try:
            return hf_content(AutoTokenizer.from_pretrained(path), str(path))
        except (OSError, ValueError) as e:
            raise ConfigError(f"train.kd: cannot load the teacher's tokenizer from {path}: {e}") from None
    raise ConfigError(
        f"train.kd: {spec!s} is neither a .gguf file nor a local transformers directory; cannot read the "
        "teacher's tokenizer"
    )


def piece_map(tokenizer: Any) -> dict[str, int]:
    """Text of each id -> id, for ids whose text is unique and not a special token (the text a server's
    `logprobs` name tokens by). Byte fragments of one character decode alike and are left out."""
    special = set(tokenizer.all_special_ids)
    seen: dict[str, int] = {}
    dup: set[str] = set()
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        if not text or "\ufffd" in text:
            continue
        if text in seen:
            dup.add(text)
        seen[text] = i
    return {t: i for t, i in seen.items() if t not in dup}
