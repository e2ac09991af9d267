"""A new export format is one row of `exporters/formats.py` plus the module that row names.

This test adds a fake format "raw" at run time: its module (`raw_format.py`, written into a temp dir on the
import path, the way a new `exporters/<format>.py` would be) and its row (monkeypatched into `FORMATS`), and
nothing else. Then the ordinary code paths export it (writer, parity, prompt files, manifest, model card),
verify it, and bench it on the host profile through the device bench's worker process. Its model file is an
f16 GGUF named `model.raw`, so the parity check and the bench run a real runtime (llama.cpp), not a stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from exporters.errors import ExportError
from exporters.formats import FORMATS, PROMPT_TEMPLATE, Format, get_format

RAW_MODULE = '''
"""The fake "raw" format's own module: writer, source check, writer options, bench session, card text."""
import dataclasses
from pathlib import Path

from device_profiles.runtimes import LlamaCppSession
from exporters import parity
from exporters.errors import ExportError
from exporters.gguf_writer import write_gguf
from exporters.quantize import gguf_quant_report

MODEL_FILE = "model.raw"


@dataclasses.dataclass(frozen=True)
class RawOptions:
    label: str = "raw"


def check_source(config_dir):
    if not (Path(config_dir) / "config.json").is_file():
        raise ExportError(f"{config_dir}: the raw format needs a config.json")


def write_raw_package(full, pkg, work, quant, model, tokenizer, ref, options):
    write_gguf(full, pkg / MODEL_FILE, quant, model=model, name=options.model_name, chat_template=options.chat_template)
    rt = parity.LlamaCppRuntime(pkg / MODEL_FILE, options.threads)
    try:
        report = parity.compare(rt, ref, name="raw-llama.cpp", quant=quant)
    finally:
        rt.close()
    parity.enforce(report)
    tokenizer.save_pretrained(pkg)
    numbers = {"export_s": 0.0, "export_cpu_s": 0.0, "quantization": gguf_quant_report(pkg / MODEL_FILE),
               "greedy": report.as_dict(), "raw_options": dataclasses.asdict(options.format)}
    return MODEL_FILE, numbers


class RawSession(LlamaCppSession):
    runtime = "raw-llama.cpp"


def card(model_file):
    return f"Run `{model_file}` with the raw runner."
'''

RAW_ROW = Format(
    name="raw",
    runtime="raw-llama.cpp",
    quants=("f16", "f32"),
    lossless=("f16", "f32"),
    model_entry="model.raw",
    model_is_dir=False,
    weight_suffixes=(".raw",),
    writer="raw_format:write_raw_package",
    needs_torch_model=True,
    check_source="raw_format:check_source",
    parity_runtime="exporters.parity:LlamaCppRuntime",
    bench_session="raw_format:RawSession",
    runtime_modules=("llama_cpp",),
    runtime_dists=("llama-cpp-python",),
    card_run="raw_format:card",
    chat_frontends="`chat_template.jinja`, read by the raw chat front end",
    essential=("model.raw", PROMPT_TEMPLATE),
    options="raw_format:RawOptions",
)


@pytest.fixture
def raw_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Format:
    pytest.importorskip("llama_cpp")
    code = tmp_path / "code"
    code.mkdir()
    (code / "raw_format.py").write_text(RAW_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(code))
    # the bench's worker child imports the row's session class from the same place
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.setitem(FORMATS, "raw", RAW_ROW)
    return RAW_ROW


@pytest.mark.slow
@pytest.mark.integration
def test_a_new_format_is_its_row_and_its_module(raw_format, tiny_model_dir, tmp_path):
    from device_profiles import bench_packages
    from device_profiles.package import read_package
    from device_profiles.remote_bundle import remote_job
    from exporters import archs
    from exporters.api import export_model
    from exporters.package import write_manifest
    from exporters.verify import verify

    out = tmp_path / "export"
    with pytest.raises(ExportError, match=r"raw export options \['blocks'\].*known: \['label'\]"):
        export_model(tiny_model_dir, out / "raw-f16", "raw", "f16", format_options={"blocks": 4})
    assert not (out / "raw-f16").exists()  # refused before any work

    pkg = export_model(
        tiny_model_dir, out / "raw-f16", "raw", "f16", parity_prompts=1, format_options={"label": "x"}
    )
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert (manifest["format"], manifest["runtime"], manifest["model_file"]) == (
        "raw",
        "raw-llama.cpp",
        "model.raw",
    )
    assert manifest["parity"]["raw_options"] == {"label": "x"}  # the row's options type reached its writer
    assert manifest["parity"]["greedy"]["identical_prompts"] == 1  # lossless: llama.cpp matched torch
    # the model card: the row's own "how to run" text and chat front ends; no GGUF-only Ollama section
    card = (pkg / "README.md").read_text()
    assert "# edge-distill student — raw f16" in card and "Run `model.raw` with the raw runner." in card
    assert "read by the raw chat front end" in card and "Ollama" not in card
    assert not (pkg / "Modelfile").exists() and (pkg / "chat_template.jinja").is_file()

    # verify: hashes, and the row's essential files
    assert verify(pkg).ok, verify(pkg).problems
    broken = tmp_path / "broken"
    shutil.copytree(pkg, broken)
    (broken / "model.raw").unlink()
    write_manifest(broken, fmt="raw", quant="f16", source_run=None, config_digest=None, source_accuracy=None)
    assert verify(broken).problems == ["model.raw: missing from the manifest (raw essential file)"]

    # the device bench: package read through the row, session opened in the worker child from the row
    (report,) = bench_packages([pkg], ["host"], accuracy_limit=2, repetitions=1, new_tokens=8)
    m = report.measurement
    assert (report.format, m.runtime, m.new_tokens) == ("raw", "raw-llama.cpp", 8)
    assert m.decode_tok_s.median > 0 and report.weights_bytes == (pkg / "model.raw").stat().st_size
    assert report.accuracy is not None and report.accuracy.n == 2
    # a remote bench asks the device for the row's runtime modules
    job = remote_job(read_package(pkg), [], threads=1, timing_question="q", repetitions=1, new_tokens=4,
                     strategy=None, timeout_s=600, max_new_tokens=8)  # fmt: skip
    assert (job["runtime_modules"], job["runtime_dists"]) == (["llama_cpp"], ["llama-cpp-python"])

    # an architecture table that does not name the new format refuses every architecture for it
    with pytest.raises(ExportError, match="not supported for RAW export; supported: none yet"):
        archs.check_architecture(tiny_model_dir, "raw")


def test_the_shipped_rows_say_everything_outside_code_asks():
    """Every row names importable references for everything the code outside the table asks a format."""
    for f in FORMATS.values():
        for field in ("writer", "check_source", "parity_runtime", "bench_session", "card_run"):
            assert callable(f.load(field)), (f.name, field)
        assert f.check_package == "" or callable(f.load("check_package"))
        assert PROMPT_TEMPLATE in f.essential and f.runtime_modules and f.runtime_dists and f.chat_frontends
        assert isinstance(f.card("model" + f.model_entry.lstrip("*")), str)
    assert get_format("onnx").writer_options({"block_size": 64}).block_size == 64
    assert get_format("gguf").writer_options(None) is None
    with pytest.raises(ExportError, match="gguf export takes no format options"):
        get_format("gguf").writer_options({"block_size": 64})
