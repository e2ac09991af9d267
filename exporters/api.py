"""One call per export: source (full model or LoRA) -> verified package directory `export/<format>-<quant>/`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.io import atomic_path, check_replaceable, make_dirs
from exporters import chat_template, gguf_checks, ort_tokenizer, package, parity
from exporters.errors import ExportError
from exporters.formats import PROMPT_TEMPLATE, Format, get_format
from exporters.gguf_writer import write_gguf
from exporters.merge import check_tokenizer, is_lora_dir, lora_base, prepare_full_model
from exporters.onnx_export import build_onnx
from exporters.quantize import (
    GGUF_FLOATS,
    LLAMA_LOG,
    fallback_tensors,
    gguf_quant_report,
    llama_log_to,
    onnx_quant_report,
    quantize_gguf,
    summary_line,
)

logger = logging.getLogger(__name__)

PARITY_QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]


def default_parity_prompts(n: int = 3, template: dict[str, Any] | None = None) -> list[str]:
    tpl = (template or package.default_prompt_template())["student_prompt"]
    return [tpl.format(question=q) for q in PARITY_QUESTIONS[:n]]


def check_request(source: Path, fmt: str, quant: str) -> None:
    """Everything that can be refused before a single file is written."""
    f = get_format(fmt)  # an unknown format is an error listing the known ones
    f.check_quant(quant)  # "auto" passes for formats with auto candidates
    if not Path(source).is_dir():
        raise ExportError(f"{source}: not a model directory")
    if is_lora_dir(source):
        base = lora_base(source)
        check_tokenizer(source if (Path(source) / "tokenizer.json").is_file() else base)
        config_dir = base
    else:
        check_tokenizer(source)
        config_dir = Path(source)
    f.load("check_source")(config_dir)


@dataclass(frozen=True)
class WriteOptions:
    """What every format writer is given; `format` holds the writer's own options (its row's `options` type,
    e.g. `OnnxOptions`; None for a format without any)."""

    threads: int | None = None
    check_transformers: bool = True
    model_name: str | None = None  # GGUF general.name / general.basename (the run's name)
    chat_template: str | None = None  # the package's chat template (the GGUF carries it)
    format: Any = None


@dataclass(frozen=True)
class OnnxOptions:
    """The onnx row's writer options: onnxruntime-genai builder's int4/int8 MatMulNBits settings."""

    block_size: int = 32
    accuracy_level: int = 4


def run_metadata(run_dir: str | Path) -> dict[str, Any]:
    """source_run, config_digest (sha256 of config.yaml) and source_accuracy (eval/dev.json) of a run directory."""
    run = Path(run_dir)
    cfg = run / "config.yaml"
    meta: dict[str, Any] = {"source_run": str(run), "config_digest": None, "source_accuracy": None}
    if cfg.is_file():
        meta["config_digest"] = "sha256:" + hashlib.sha256(cfg.read_bytes()).hexdigest()
    dev = run / "eval" / "dev.json"
    if dev.is_file():
        d = json.loads(dev.read_text(encoding="utf-8"))
        meta["source_accuracy"] = {"dev": d.get("accuracy"), "n": d.get("n")}
    return meta


def resolve_source(run_or_model: str | Path) -> tuple[Path, dict[str, Any]]:
    """`edge-distill export RUN_OR_MODEL`: a run directory (its train/final model + run metadata) or a model dir."""
    path = Path(run_or_model)
    if (path / "train" / "final").is_dir():
        return path / "train" / "final", run_metadata(path)
    if (path / "config.json").is_file() or is_lora_dir(path):
        return path, {"source_run": None, "config_digest": None, "source_accuracy": None}
    raise ExportError(f"{path}: neither a run directory (with train/final/) nor a model directory")


def _stored_source(source: Path, out_dir: Path) -> str:
    """The source model as the manifest records it: relative to the package when both live in the same run
    directory (export/<format>-<quant>/ next to train/final), so a copied run names its own model."""
    run = out_dir.resolve().parent.parent
    src = source.resolve()
    if src.is_relative_to(run):
        return os.path.relpath(src, out_dir.resolve())
    return str(src)


def export_targets(
    source: str | Path, export_dir: str | Path, targets: list[dict[str, str]], **kwargs: Any
) -> list[Path]:
    """Export every `{"format", "quant"}` target into `export_dir/<format>-<quant>/` (the run stage, which
    replaces its own earlier packages there: `overwrite` defaults to True)."""
    kwargs.setdefault("overwrite", True)
    for t in targets:  # refuse a bad target before spending minutes on the good ones
        check_request(Path(source), t["format"], t["quant"])
    return [
        export_model(
            source, Path(export_dir) / f"{t['format']}-{t['quant']}", t["format"], t["quant"], **kwargs
        )
        for t in targets
    ]


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the ONNX builder): on a shared machine wall time
    says more about the neighbours than about the export."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _export_times(t0: float, c0: float) -> dict[str, float]:
    """Wall and CPU seconds since `t0 = time.perf_counter()`, `c0 = _cpu_s()` (a writer's export step)."""
    return {"export_s": round(time.perf_counter() - t0, 2), "export_cpu_s": round(_cpu_s() - c0, 2)}


def _runtime_parity(rt: Any, ref: parity.Reference, tokenizer: Any, quant: str, *, name: str,
                    tokenizer_name: str) -> tuple[parity.ParityReport, dict[str, Any]]:  # fmt: skip
    """Every writer's check of its package: teacher-forced parity against torch and the tokenizer check, both
    through the package's own runtime `rt` (closed afterwards)."""
    try:
        report = parity.compare(rt, ref, name=name, quant=quant)
        return report, parity.check_tokenizer_parity(rt.tokenize, tokenizer, name=tokenizer_name)
    finally:
        rt.close()


def write_gguf_package(full: Path, pkg: Path, work: Path, quant: str, model: Any, tokenizer: Any,
                       ref: parity.Reference, options: WriteOptions) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The "gguf" row's writer: f16/f32 GGUF (+ llama.cpp quantizer), read-back checks, llama.cpp parity.

    llama.cpp's log (quantizer warnings, model loads) goes to `llama.log` in the package, not the terminal;
    the quantization report (`numbers["quantization"]`) is read back from the written file.
    """
    threads, check_transformers = options.threads, options.check_transformers
    t0, c0 = time.perf_counter(), _cpu_s()
    float_type = quant if quant in GGUF_FLOATS else "f16"
    name = f"model-{quant}.gguf"
    f_path = pkg / name if quant in GGUF_FLOATS else work / "model-f16.gguf"
    summary = write_gguf(
        full, f_path, float_type, model=model, name=options.model_name, chat_template=options.chat_template
    )
    with open(pkg / LLAMA_LOG, "a", encoding="utf-8") as log:
        path = (
            f_path
            if quant in GGUF_FLOATS
            else quantize_gguf(f_path, pkg / name, quant, threads=threads, log=log)
        )
        numbers: dict[str, Any] = _export_times(t0, c0)
        summary.path = path
        numbers["gguf_readback"] = gguf_checks.check_gguf_readback(
            path, summary, exact_types=quant in GGUF_FLOATS
        )
        log.flush()
        fallbacks = fallback_tensors((pkg / LLAMA_LOG).read_text(encoding="utf-8", errors="replace"))
        numbers["quantization"] = {**gguf_quant_report(path), "log": LLAMA_LOG, "fallback": fallbacks}
        with llama_log_to(log):
            report, numbers["tokenizer_llama_cpp"] = _runtime_parity(
                parity.LlamaCppRuntime(path, threads), ref, tokenizer, quant, name="llama.cpp",
                tokenizer_name="llama.cpp",
            )  # fmt: skip
    parity.enforce(report)
    numbers["greedy"] = report.as_dict()
    if check_transformers:
        numbers["transformers_gguf"] = gguf_checks.check_transformers_gguf(
            path, ref.text_ids, ref.nll, tokenizer, parity.TOKENIZER_CHECK_STRINGS
        )
    tokenizer.save_pretrained(pkg)  # the GGUF embeds its vocab; ship the HF tokenizer too for other runtimes
    return name, numbers


def write_onnx_package(full: Path, pkg: Path, work: Path, quant: str, model: Any, tokenizer: Any,
                       ref: parity.Reference, options: WriteOptions) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The "onnx" row's writer: onnxruntime-genai's builder, then ORT GenAI parity (`model` is None)."""
    onnx = options.format or OnnxOptions()
    threads, block_size, accuracy_level = options.threads, onnx.block_size, onnx.accuracy_level
    t0, c0 = time.perf_counter(), _cpu_s()
    build_onnx(
        full, pkg, quant, block_size=block_size, accuracy_level=accuracy_level, work_dir=work, threads=threads
    )
    # onnxruntime-extensions ignores `Digits` pre-tokenizer steps: give the package's copy the equivalent Splits
    pre_rewritten = ort_tokenizer.rewrite_for_ort(pkg / "tokenizer.json")
    numbers: dict[str, Any] = _export_times(t0, c0)
    if quant in ("int4", "int8"):
        numbers["onnx_options"] = {"block_size": block_size, "accuracy_level": accuracy_level}
    numbers["quantization"] = onnx_quant_report(pkg / "model.onnx")
    report, tok = _runtime_parity(
        parity.OrtGenaiRuntime(pkg),
        ref,
        tokenizer,
        quant,
        name="onnxruntime-genai",
        tokenizer_name="ORT GenAI",
    )
    # pre_tokenizer_rewritten_for_ort: see exporters/ort_tokenizer.py
    numbers["tokenizer_ort_genai"] = {**tok, "pre_tokenizer_rewritten_for_ort": pre_rewritten}
    parity.enforce(report)
    numbers["greedy"] = report.as_dict()
    return "model.onnx", numbers


def write_pte_package(full: Path, pkg: Path, work: Path, quant: str, model: Any, tokenizer: Any,
                      ref: parity.Reference, options: WriteOptions) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """The "executorch" row's writer: model.pte (exporters/executorch_pte.py, built in ExecuTorch's own process:
    edge_distill/runtimes/executorch.py), then parity in ExecuTorch's runtime and a tokenizer check through the
    runners' C++ tokenizer (pytorch-tokenizers' HFTokenizer) on the package's tokenizer.json, rewritten first where
    that tokenizer mis-implements a step (`executorch_pte.runner_tokenizer_json`).
    `model` is None: the writer quantizes its own copy, so `quant: auto` candidates never share weights."""
    from edge_distill.runtimes.executorch import ExecuTorchError, export_pte
    from exporters import executorch_pte as et

    del model, work
    t0, c0 = time.perf_counter(), _cpu_s()
    try:
        report = export_pte(
            full, pkg / et.MODEL_FILE, quant, max_seq_len=et.DEFAULT_MAX_SEQ_LEN, threads=options.threads
        )
    except ExecuTorchError as e:
        # torch.export / lowering failed in the worker: an export error like any other
        raise ExportError(str(e)) from None
    tokenizer.save_pretrained(pkg)  # tokenizer.json: what the Android/iOS runners load
    dropped = et.runner_tokenizer_json(pkg / "tokenizer.json")
    numbers: dict[str, Any] = _export_times(t0, c0)  # CPU: the finished ExecuTorch worker included
    report["file_bytes"] = (pkg / et.MODEL_FILE).stat().st_size
    report["file_bits_per_weight"] = round(8 * report["file_bytes"] / report["params"], 3)
    numbers["quantization"] = report
    numbers["executorch_options"] = {"max_seq_len": et.DEFAULT_MAX_SEQ_LEN, "backend": "XNNPACK",
                                     "recipe": et.RECIPES[quant]}  # fmt: skip
    report_parity, tok = _runtime_parity(
        parity.ExecuTorchRuntime(pkg / et.MODEL_FILE, options.threads, pkg / "tokenizer.json"), ref, tokenizer,
        quant, name="executorch", tokenizer_name="ExecuTorch HFTokenizer",
    )  # fmt: skip
    # normalizer_dropped_for_runner: see exporters/executorch_pte.py
    numbers["tokenizer_executorch"] = {**tok, "normalizer_dropped_for_runner": dropped}
    parity.enforce(report_parity)
    numbers["greedy"] = report_parity.as_dict()
    return et.MODEL_FILE, numbers


AUTO = "auto"
# `--quant auto` thresholds (config: export.auto.min_top1_agreement / max_nll_ratio), on the held-out fidelity
# text of exporters.parity: the export's top-1 next token must equal the source model's at >= 95 % of positions,
# and its mean NLL must stay within 5 % of the source's.
AUTO_MIN_TOP1 = 0.95
AUTO_MAX_NLL_RATIO = 1.05
FIDELITY_KEYS = ("fidelity_tokens", "top1_agreement", "nll_ratio", "fidelity_nll_ref", "fidelity_nll_export")


def choose_quant(writer: Any, candidates: tuple[str, ...], full: Path, work: Path, model: Any, tokenizer: Any,
                 ref: parity.Reference, options: WriteOptions, *, min_top1: float,
                 max_nll_ratio: float) -> dict[str, Any]:  # fmt: skip
    """Export each candidate quant into `work`, measure its size and fidelity; the smallest that meets both
    thresholds wins. Returns the record the manifest keeps (`quant_auto`); ExportError when none qualifies."""
    from dataclasses import replace

    from exporters.errors import ParityError

    rows = []
    fast = replace(options, check_transformers=False)  # the chosen one is re-exported with every check
    for q in candidates:
        cand, cand_work = work / f"auto-{q}", work / f"auto-{q}.work"
        cand.mkdir()
        cand_work.mkdir()
        try:
            _, numbers = writer(full, cand, cand_work, q, model, tokenizer, ref, fast)
            parity_numbers, error = numbers["greedy"], None
        except ParityError as e:  # a candidate that fails the export's own parity bar is just not chosen
            parity_numbers, error, numbers = e.numbers, str(e), {"quantization": None}
        qr = numbers.get("quantization") or {}
        fid = {k: parity_numbers.get(k) for k in FIDELITY_KEYS}
        ok = (
            error is None
            and fid["top1_agreement"] is not None
            and fid["top1_agreement"] >= min_top1
            and fid["nll_ratio"] <= max_nll_ratio
        )
        rows.append({"quant": q, "bits_per_weight": qr.get("bits_per_weight"), "weight_bytes": qr.get("weight_bytes"),
                     **fid, "meets_threshold": ok, "error": error})  # fmt: skip
        logger.info(
            "auto candidate %s: %s bpw, top-1 %s, NLL ratio %s -> %s", q, qr.get("bits_per_weight"),
            *(f"{v:.4f}" if v is not None else "n/a" for v in (fid["top1_agreement"], fid["nll_ratio"])),
            "meets" if ok else "below threshold",
        )  # fmt: skip
        shutil.rmtree(cand, ignore_errors=True)
        shutil.rmtree(cand_work, ignore_errors=True)
    passing = sorted((r for r in rows if r["meets_threshold"]), key=lambda r: r["weight_bytes"])
    thresholds = {"min_top1_agreement": min_top1, "max_nll_ratio": max_nll_ratio}
    if not passing:
        table = "; ".join(
            f"{r['quant']}: top-1 {r['top1_agreement']}, NLL ratio {r['nll_ratio']}" for r in rows
        )
        raise ExportError(
            f"--quant auto: no candidate meets top-1 >= {min_top1} and NLL ratio <= {max_nll_ratio} ({table}). "
            "Lower export.auto thresholds or export a float type (gguf f16, onnx fp32)."
        )
    return {"chosen": passing[0]["quant"], "thresholds": thresholds, "candidates": rows,
            "metric": "teacher-forced over exporters.parity.fidelity_texts()"}  # fmt: skip


def _finish_package(pkg: Path, f: Format, template: dict[str, Any], meta: dict[str, Any], extra: dict[str, Any],
                    sign_key: Any, eos_token: str | None) -> None:  # fmt: skip
    """Prompt template, manifest, model card (then the manifest again, so it covers the card), signature."""
    (pkg / PROMPT_TEMPLATE).write_text(
        json.dumps(template, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    package.write_prompt_files(pkg, template, extra["model_file"], eos_token, f)
    manifest = package.write_manifest(pkg, **meta, extra=extra)
    (pkg / "README.md").write_text(
        package.model_card(manifest, extra["model_file"], template), encoding="utf-8"
    )
    package.write_manifest(pkg, **meta, extra=extra)
    if sign_key is not None:
        from exporters.signing import sign_manifest

        sign_manifest(pkg, sign_key)


def _torch_reference(
    source: Path, work: Path, prompts: list[str], parity_tokens: int
) -> tuple[Path, Any, Any, Any]:
    """The full model (a LoRA merged into `work`), its torch weights and tokenizer, and the parity reference."""
    full = prepare_full_model(source, work)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(full)
    model = AutoModelForCausalLM.from_pretrained(full, dtype=torch.float32)
    return full, model, tokenizer, parity.torch_reference(model, tokenizer, prompts, parity_tokens)


def _write_model(f: Format, quant: str, args: tuple[Any, ...], options: WriteOptions, auto_min_top1: float,
                 auto_max_nll_ratio: float) -> tuple[str, str, dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """Run the row's writer on `args` = (full, pkg, work, model, tokenizer, ref), choosing the quant first for
    `quant: auto`; returns (quant, model file, the writer's numbers, the auto record or None)."""
    full, pkg, work, model, tokenizer, ref = args
    writer = f.load("writer")
    auto = None
    if quant == AUTO:
        auto = choose_quant(
            writer, f.auto_quants, full, work, model, tokenizer, ref, options,
            min_top1=auto_min_top1, max_nll_ratio=auto_max_nll_ratio,
        )  # fmt: skip
        quant = auto["chosen"]
    model_file, numbers = writer(full, pkg, work, quant, model, tokenizer, ref, options)
    return quant, model_file, numbers, auto


def _template_and_prompts(prompt_template: dict[str, Any] | None, decoding: dict[str, Any] | None, strategy: str,
                          parity_prompts: list[str] | int | None) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """The package's prompt template (with its own chat template) and the parity prompts in its format."""
    template = dict(prompt_template or package.default_prompt_template(decoding, strategy))
    template["chat_template"] = chat_template.jinja_template(template)  # always the prompt's own
    if isinstance(parity_prompts, list):
        return template, parity_prompts
    return template, default_parity_prompts(parity_prompts or 3, template)


def _manifest_extra(numbers: dict[str, Any], quant: str, model_file: str, auto: dict[str, Any] | None,
                    source_model: str, reference_s: float, t_start: float) -> dict[str, Any]:  # fmt: skip
    """The manifest's record of the export: model file, source, quantization (read back), fidelity, parity
    numbers, timings and the `quant: auto` candidates."""
    quantization = {"requested": AUTO if auto else quant, **numbers.pop("quantization")}
    quantization["summary"] = summary_line(quant, quantization)
    timings = {
        "export_s": numbers.pop("export_s"),
        "export_cpu_s": numbers.pop("export_cpu_s"),
        "torch_reference_s": reference_s,
        "total_s": round(time.perf_counter() - t_start, 2),
    }
    extra = {
        "model_file": model_file,
        "source_model": source_model,
        "quantization": quantization,
        "fidelity": {k: numbers["greedy"].get(k) for k in FIDELITY_KEYS},
        "parity": numbers,
        "timings": timings,
    }
    if auto is not None:
        extra["quant_auto"] = auto
    return extra


def export_model(
    source: str | Path,
    out_dir: str | Path,
    fmt: str,
    quant: str,
    *,
    prompt_template: dict[str, Any] | None = None,
    decoding: dict[str, Any] | None = None,
    strategy: str = "auto",
    source_run: str | None = None,
    config_digest: str | None = None,
    source_accuracy: dict[str, Any] | None = None,
    parity_prompts: list[str] | int | None = None,
    parity_tokens: int = 16,
    archive: bool = False,
    threads: int | None = None,
    format_options: Mapping[str, Any] | None = None,
    check_transformers: bool = True,
    sign_key: Any = None,
    auto_min_top1: float = AUTO_MIN_TOP1,
    auto_max_nll_ratio: float = AUTO_MAX_NLL_RATIO,
    overwrite: bool = False,
) -> Path:
    """Export `source` (HF dir or LoRA adapter) to a verified package at `out_dir`; returns `out_dir`.

    An existing `out_dir` is replaced only if it is an empty directory, a link, or an edge-distill package
    and `overwrite` is set (StorageError naming what is there otherwise, before any work).

    The package appears only after every parity check passed (ParityError otherwise, with the numbers);
    any failure leaves nothing at `out_dir`. `parity_prompts` is a list of prompts or a count of built-in
    GSM8K-style prompts in the student format (default 3). `sign_key` (an ed25519 private key, see
    exporters.signing) adds manifest.sig inside the same atomic step. `strategy` is the run's
    `eval.strategy`: "auto", or cot/l2m/pot forced after the prompt (the package's chat templates too).
    `format_options` are the format writer's own knobs (its row's `options` type, e.g. onnx `block_size`,
    `accuracy_level`); a key the format does not have is refused before any work.

    `quant="auto"` exports every candidate of the format (`Format.auto_quants`), measures its fidelity, and
    packages the smallest (by weight bytes) with teacher-forced top-1 agreement >= `auto_min_top1` and NLL
    ratio <= `auto_max_nll_ratio`; the manifest's `quant_auto` records every candidate's numbers.
    """
    source, out_dir = Path(source), Path(out_dir)
    check_replaceable(out_dir, package.PACKAGE_KIND, overwrite=overwrite)  # before minutes of work
    check_request(source, fmt, quant)
    f = get_format(fmt)
    own_options = f.writer_options(format_options)
    template, prompts = _template_and_prompts(prompt_template, decoding, strategy, parity_prompts)
    t_start = time.perf_counter()
    make_dirs(out_dir.parent)
    with (
        tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.work.", dir=out_dir.parent) as work_s,
        atomic_path(out_dir, kind=package.PACKAGE_KIND, overwrite=overwrite) as pkg,
    ):
        work = Path(work_s)
        full, model, tokenizer, ref = _torch_reference(source, work, prompts, parity_tokens)
        reference_s = round(time.perf_counter() - t_start, 2)
        pkg.mkdir()
        if not f.needs_torch_model:
            model = None  # frees the torch weights before a builder that loads its own copy
        name = Path(source_run or source).resolve().name  # the run's name, never "merged" or "final"
        options = WriteOptions(threads, check_transformers, name, template["chat_template"], own_options)
        quant, model_file, numbers, auto = _write_model(
            f, quant, (full, pkg, work, model, tokenizer, ref), options, auto_min_top1, auto_max_nll_ratio
        )
        extra = _manifest_extra(numbers, quant, model_file, auto, _stored_source(source, out_dir),
                                reference_s, t_start)  # fmt: skip
        meta = dict(fmt=fmt, quant=quant, source_run=source_run, config_digest=config_digest,
                    source_accuracy=source_accuracy)  # fmt: skip
        _finish_package(pkg, f, template, meta, extra, sign_key, tokenizer.eos_token)
    quantization = extra["quantization"]
    log_file = quantization.get(
        "log"
    )  # the one line that says what the quant really is, and where the log went
    logger.info(
        "%s%s", quantization["summary"], f"; log: {(out_dir / log_file).as_posix()}" if log_file else ""
    )
    logger.info("exported %s (%s %s) in %.1fs", out_dir, fmt, quant, time.perf_counter() - t_start)
    if archive:
        package.write_archive(out_dir)
    return out_dir
