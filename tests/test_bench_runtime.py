"""The bench through the real runtimes on tiny packages built by the exporters (llama.cpp GGUF, ORT GenAI ONNX)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device_profiles import bench_package, bench_packages, load_profile
from device_profiles.accuracy import load_eval_problems, score
from device_profiles.package import PackageError
from edge_distill.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("llama_cpp")
    from exporters.api import export_model
    from tests.tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("bench-packages")
    # vocab != intermediate size (512): the ONNX builder would take that projection for the LM head
    tiny_model_dir = build_tiny_llama(root / "tiny", vocab_size=384)
    out = {}
    for fmt, quant in [("gguf", "q4_k_m"), ("onnx", "int4")]:
        out[fmt] = export_model(
            tiny_model_dir, root / f"{fmt}-{quant}", fmt, quant, source_accuracy={"dev": 0.0, "n": 10},
            parity_prompts=1, check_transformers=False,
        )  # fmt: skip
    return out


def test_bench_host_and_estimate(packages, tmp_path):
    out = tmp_path / "bench"
    reports = bench_packages(
        [packages["gguf"], packages["onnx"]], ["host", "raspberry-pi-5"], accuracy_limit=3, repetitions=2,
        new_tokens=16, out_dir=out, source_correct={p.id: False for p in load_eval_problems(limit=3)},
    )  # fmt: skip
    assert [(r.package_name, r.profile, r.figures.basis) for r in reports] == [
        ("gguf-q4_k_m", "host", "measured"), ("gguf-q4_k_m", "raspberry-pi-5", "estimated"),
        ("onnx-int4", "host", "measured"), ("onnx-int4", "raspberry-pi-5", "estimated"),
    ]  # fmt: skip
    for r in reports:
        m = r.measurement
        assert m.runtime == ("llama.cpp" if r.format == "gguf" else "onnxruntime-genai")
        assert m.repetitions == 2 and len(m.decode_tok_s.values) == 2 and m.new_tokens == 16
        # estimates measure this host with the threads its `host` profile says
        assert m.threads == load_profile("host").resolved_threads()
        assert m.decode_tok_s.median > 0 and m.prefill_tok_s.median > 0 and 0 < m.ttft_s.median < 60
        assert m.peak_rss_mb > m.baseline_rss_mb > 0
        # no upper bound here: this ~1 MB model fits in CPU cache, so it can beat the DRAM roofline
        assert 0 < r.figures.roofline_fraction < float("inf")
        assert r.accuracy is not None and r.accuracy.n == 3 and r.accuracy.source_accuracy == 0.0
    data = json.loads((out / "bench.json").read_text())
    assert len(data["reports"]) == 4 and isinstance(data["all_passed"], bool)
    assert "(ESTIMATED)" in (out / "bench.md").read_text() and (out / "bench.png").stat().st_size > 1000
    # The reported accuracy is exactly the judge applied to what the runtime generated.
    preds = [json.loads(x) for x in (out / "gguf-q4_k_m.predictions.jsonl").read_text().splitlines()]
    again = score([p["raw"] for p in preds], load_eval_problems(limit=3))
    assert again.correct == reports[0].accuracy.correct


def test_broken_packages_are_refused(packages, tmp_path):
    def broken(edit) -> Path:
        pkg = tmp_path / f"pkg{len(list(tmp_path.iterdir()))}"
        shutil.copytree(packages["gguf"], pkg)
        edit(pkg)
        return pkg

    missing = broken(lambda p: (p / "prompt_template.json").unlink())
    with pytest.raises(PackageError, match="prompt_template.json: missing"):
        bench_package(missing, "host", accuracy_limit=0)

    def flip_byte(p: Path) -> None:
        f = p / "model-q4_k_m.gguf"
        data = bytearray(f.read_bytes())
        data[-1] ^= 0xFF
        f.write_bytes(bytes(data))

    with pytest.raises(PackageError, match="model-q4_k_m.gguf: sha256 mismatch"):
        bench_package(broken(flip_byte), "host", accuracy_limit=0)
    with pytest.raises(PackageError, match="manifest.json missing"):
        bench_package(broken(lambda p: (p / "manifest.json").unlink()), "host", accuracy_limit=0)
    with pytest.raises(PackageError, match="not a directory"):
        bench_package(tmp_path / "nope", "host", accuracy_limit=0)


def test_unknown_profile_fails_before_measuring(packages):
    with pytest.raises(ConfigError, match="unknown device profile 'raspbery-pi-5'"):
        bench_package(packages["gguf"], "raspbery-pi-5")


def test_bench_gguf_without_torch(packages, tmp_path):
    code = (
        "import sys\nfrom device_profiles import bench_package\n"
        f"r = bench_package({str(packages['gguf'])!r}, 'host', accuracy_limit=2, repetitions=1, new_tokens=8, "
        f"out_dir={str(tmp_path)!r})\n"
        "assert r.figures.basis == 'measured' and r.accuracy.n == 2\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
