"""The built-in student's HF tokenizer vs SmolLM2's own (llama.cpp, vocab of the shipped GGUF) on a whole GSM8K.

    python benchmarks/tokenizer_fidelity.py                                   # /work/shared/datasets/gsm8k
    python benchmarks/tokenizer_fidelity.py --gsm8k edge_distill/assets/gsm8k # the shipped sample

Per problem six texts: question, answer, socratic answer, the student prompt, the CoT and L2M training targets.
Two HF tokenizers: transformers' GGUF loader as is, and with the pre-tokenizer restored
(`edge_distill.models.restore_pre_tokenizer`, what the conversion saves). Then onnxruntime-genai's tokenizer
reading the restored tokenizer.json as is and as the ONNX package ships it (`exporters.ort_tokenizer`), next to
a tiny ONNX model (ORT GenAI builds a tokenizer only from a model directory). Prints a table, writes
benchmarks/results/tokenizer_fidelity.json. tests/test_tokenizer_fidelity.py runs the shipped sample.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def texts(gsm8k: Path) -> list[str]:
    from edge_distill.strategies import format_response, gsm8k_cot, gsm8k_l2m, student_prompt

    out: list[str] = []
    for split in ("train", "test"):
        plain = [json.loads(x) for x in (gsm8k / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        soc = [
            json.loads(x)
            for x in (gsm8k / f"{split}_socratic.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        for row, s in zip(plain, soc, strict=True):
            gold = row["answer"].rsplit("####", 1)[-1].strip()
            out += [row["question"], row["answer"], s["answer"], student_prompt(row["question"]),
                    format_response("cot", gsm8k_cot(row["answer"]), gold),
                    format_response("l2m", gsm8k_l2m(s["answer"]), gold)]  # fmt: skip
    return out


def ort_genai_encoders(tokenizer, work: Path):
    """(name, encode) for ORT GenAI reading `tokenizer`'s files as saved, and as the ONNX package ships them."""
    import onnxruntime_genai as og
    from _fixtures import build_tiny_llama  # benchmarks/_fixtures.py, beside this script

    from exporters.onnx_export import build_onnx
    from exporters.ort_tokenizer import rewrite_for_ort

    model = build_onnx(
        build_tiny_llama(work / "hf", vocab_size=384), work / "onnx", "fp32", work_dir=work, threads=1
    )
    for name, rewrite in (("ort-as-is", False), ("ort-package", True)):
        pkg = work / name
        shutil.copytree(model, pkg)
        for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            (pkg / f).unlink(missing_ok=True)
        tokenizer.save_pretrained(pkg)
        if rewrite:
            rewrite_for_ort(pkg / "tokenizer.json")
        tok = og.Tokenizer(og.Model(str(pkg)))
        yield name, lambda corpus, tok=tok: [[int(i) for i in tok.encode(x)] for x in corpus]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--gsm8k", type=Path, default=Path("/work/shared/datasets/gsm8k"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tokenizer_fidelity.json"))
    args = ap.parse_args()

    import llama_cpp
    from transformers import AutoTokenizer

    from edge_distill.io import write_json
    from edge_distill.models import gguf_pre_tokenizer, restore_pre_tokenizer, smollm2_gguf_path

    gguf = smollm2_gguf_path()
    corpus = texts(args.gsm8k)
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    t0 = time.perf_counter()
    ref = [llm.tokenize(x.encode("utf-8"), add_bos=False, special=False) for x in corpus]
    llama_s = time.perf_counter() - t0
    loader = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    restored = restore_pre_tokenizer(
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), gguf_pre_tokenizer(gguf), source=gguf
    )
    rows = []

    def row(name: str, ids: list) -> None:
        bad = [i for i, (a, b) in enumerate(zip(ids, ref, strict=True)) if list(a) != list(b)]
        rows.append({
            "tokenizer": name, "texts": len(corpus), "mismatching_texts": len(bad),
            "mismatching_questions": sum(1 for i in bad if i % 6 == 0), "questions": len(corpus) // 6,
            "first_mismatch": corpus[bad[0]][:120] if bad else None,
        })  # fmt: skip

    for name, tok in (("gguf-loader", loader), ("restored", restored)):
        row(name, tok(corpus, add_special_tokens=False)["input_ids"])
    with tempfile.TemporaryDirectory() as work:
        for name, encode in ort_genai_encoders(restored, Path(work)):
            row(name, encode(corpus))
    print(f"{'tokenizer':<12} {'texts':>7} {'mismatch':>9} {'questions':>10} {'mismatch':>9}")
    for r in rows:
        print(f"{r['tokenizer']:<12} {r['texts']:>7} {r['mismatching_texts']:>9} {r['questions']:>10} "
              f"{r['mismatching_questions']:>9}")  # fmt: skip
    write_json(args.out, {"gsm8k": str(args.gsm8k), "llama_cpp_tokenize_s": round(llama_s, 1), "rows": rows})


if __name__ == "__main__":
    main()
