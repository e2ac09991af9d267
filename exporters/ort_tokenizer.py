"""The ONNX package's `tokenizer.json`, in a form onnxruntime-genai tokenizes exactly like the HF tokenizer.

onnxruntime-genai tokenizes with onnxruntime-extensions' BPE, which reads `tokenizer.json` but implements
only one kind of pre-tokenizer step: `Split` with a `Regex` pattern. Any other step inside a `Sequence`
(`Digits`, `ByteLevel`'s own regex) is accepted and ignored, and the text is split with the built-in GPT-2
regex instead. Measured on SmolLM2 (`Sequence[Digits(individual_digits=True), ByteLevel]`, onnxruntime-genai
0.18): 10 of 30 whitespace/digit/unicode probes and 218 of 52,752 GSM8K texts (benchmarks/tokenizer_fidelity.py)
differ, e.g. `"x  12"` -> `x|Ġ|Ġ|1|2` instead of `x|ĠĠ|1|2`: without the digit split first, the GPT-2 regex
leaves one blank to join the number.

`ort_pre_tokenizer` rewrites such a pre-tokenizer into the `Split` steps it stands for, which both libraries
run identically:

- `Digits(individual_digits=True)` -> `Split(\\p{N}, Isolated)` (`Digits` tests Rust's `char::is_numeric`,
  the Unicode categories Nd, Nl and No, which is `\\p{N}`); `individual_digits=False` -> `Split(\\p{N}+)`;
- `ByteLevel(use_regex=True)` -> `Split(<the GPT-2 regex ByteLevel applies>, Isolated)` followed by
  `ByteLevel(use_regex=False)` (byte-to-unicode mapping only).

Only the package's copy is rewritten (the training tokenizer stays as it is), and only when a step
onnxruntime-extensions ignores would change the split; a lone `ByteLevel` is its native case and is kept.
The export then checks the result (`exporters.parity.check_tokenizer_parity`, fatal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_distill.io import write_text

# The regex `tokenizers`' ByteLevel pre-tokenizer splits with when `use_regex` is true (GPT-2's).
BYTE_LEVEL_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Pre-tokenizer steps onnxruntime-extensions' BPE ignores inside a Sequence and that we can express as Splits.
_IGNORED_BY_ORT = {"Digits"}


def _split(regex: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def ort_pre_tokenizer(pre: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `Split`-only equivalent of HF pre-tokenizer `pre` (a `tokenizer.json` node), or None to keep it."""
    if not pre:
        return None
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not any(step.get("type") in _IGNORED_BY_ORT for step in steps):
        return None
    out: list[dict[str, Any]] = []
    for step in steps:
        kind = step.get("type")
        if kind == "Digits":
            out.append(_split(r"\p{N}" if step.get("individual_digits") else r"\p{N}+"))
        elif kind == "ByteLevel" and step.get("use_regex", True):
            out += [_split(BYTE_LEVEL_REGEX), {**step, "use_regex": False}]
        else:  # kept as is; the export's tokenizer check catches a step that still splits differently
            out.append(step)
    return {"type": "Sequence", "pretokenizers": out}


def rewrite_for_ort(tokenizer_json: Path) -> bool:
    """Rewrite `tokenizer_json`'s pre-tokenizer with `ort_pre_tokenizer` (atomically); True if it changed.
    No file (a tokenizer the builder wrote in another form) is left to the export's tokenizer check."""
    if not tokenizer_json.is_file():
        return False
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    pre = ort_pre_tokenizer(data.get("pre_tokenizer"))
    if pre is None:
        return False
    data["pre_tokenizer"] = pre
    write_text(tokenizer_json, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return True
