"""Device profiles: every shipped YAML validates; typos, bad values and unknown names give clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from device_profiles import list_profiles, load_profile
from device_profiles.loader import SHIPPED_DIR, profile_summary, profile_yaml
from edge_distill.errors import ConfigError

REQUIRED = {"host", "raspberry-pi-5", "raspberry-pi-5-4gb", "pixel-8", "iphone-15", "jetson-orin-nano"}


def test_every_shipped_profile_loads():
    profiles = {p.name: p for p in list_profiles()}
    assert REQUIRED <= set(profiles)
    for p in profiles.values():
        assert p.source_file.endswith(f"{p.name}.yaml")
        assert p.hardware.memory_bandwidth.source and p.hardware.compute_source
        assert p.resolved_threads() >= 1
        assert p.name in profile_summary(p)
        assert yaml.safe_load(profile_yaml(p))["runtime"] == p.runtime
    assert profiles["host"].is_host and not profiles["raspberry-pi-5"].is_host
    assert profiles["raspberry-pi-5-4gb"].hardware.ram_gb == 4
    assert profiles["pixel-8"].runtime == "onnxruntime-genai" and profiles["pixel-8"].format == "onnx"


def _write(tmp_path: Path, name: str, edit) -> Path:
    raw = yaml.safe_load((SHIPPED_DIR / "raspberry-pi-5.yaml").read_text())
    edit(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_typo_names_file_and_key(tmp_path):
    path = _write(tmp_path, "my-board", lambda r: r["budget"].update(min_decode_toks=5))
    with pytest.raises(ConfigError) as e:
        load_profile(path)
    assert str(path) in str(e.value) and "budget.min_decode_toks: unknown key" in str(e.value)


def test_bad_values_are_named(tmp_path):
    path = _write(tmp_path, "b1", lambda r: r.update(threads=16))
    with pytest.raises(ConfigError, match="threads: 16 must be between 1 and hardware.cores=4"):
        load_profile(path)
    path = _write(tmp_path, "b2", lambda r: r.update(format="onnx"))
    with pytest.raises(ConfigError, match="runtime: onnx packages run on onnxruntime-genai, not 'llama.cpp'"):
        load_profile(path)
    path = _write(tmp_path, "b5", lambda r: r.update(format="pte"))  # formats come from exporters.formats
    with pytest.raises(
        ConfigError, match=r"format: export format 'pte': choose one of \['gguf', 'onnx', 'executorch'\]"
    ):
        load_profile(path)
    # a profile names the ExecuTorch format with its runtime (a phone app on ExecuTorch's XNNPACK CPU backend)
    ok = load_profile(
        _write(tmp_path, "phone-et", lambda r: r.update(format="executorch", runtime="executorch"))
    )
    assert (ok.format, ok.runtime) == ("executorch", "executorch")
    path = _write(tmp_path, "b3", lambda r: r["budget"].update(min_accuracy=1.5))
    with pytest.raises(ConfigError, match=r"budget.min_accuracy: .*\(got 1.5\)"):
        load_profile(path)
    path = _write(tmp_path, "b4", lambda r: r["hardware"]["memory_bandwidth"].update(gbs="measure"))
    with pytest.raises(ConfigError, match="only possible for the host profile"):
        load_profile(path)
    (tmp_path / "b5.yaml").write_text("threads: [1,\n")
    with pytest.raises(ConfigError, match="b5.yaml: not valid YAML"):
        load_profile(tmp_path / "b5.yaml")
    path = _write(tmp_path, "b6", lambda r: r.update(name="other"))
    with pytest.raises(ConfigError, match="must equal the file name 'b6'"):
        load_profile(path)
    path = _write(tmp_path, "b7", lambda r: r["hardware"]["memory_bandwidth"].pop("sustained_source"))
    with pytest.raises(ConfigError, match="sustained_source: say where sustained_gbs comes from"):
        load_profile(path)


def test_unknown_profile_lists_known():
    with pytest.raises(ConfigError, match=r"unknown device profile 'raspbery-pi-5'; known: .*raspberry-pi-5"):
        load_profile("raspbery-pi-5")


def test_user_profiles_are_found_and_shadow_shipped(tmp_path, monkeypatch):
    _write(tmp_path, "my-board", lambda r: r.update(description="mine"))
    _write(tmp_path, "raspberry-pi-5", lambda r: r.update(description="patched pi"))
    monkeypatch.setenv("EDGE_DISTILL_PROFILES", str(tmp_path))
    assert load_profile("my-board").description == "mine"
    assert load_profile("raspberry-pi-5").description == "patched pi"
    assert {"my-board", "host"} <= {p.name for p in list_profiles()}


def test_device_profiles_is_torch_free():
    code = (
        "import sys, device_profiles, device_profiles.bench, device_profiles.runtimes, device_profiles.report, "
        "device_profiles.accuracy, device_profiles.worker\n"
        "device_profiles.list_profiles()\n"
        "bad = [m for m in ('torch', 'transformers', 'matplotlib', 'llama_cpp', 'onnxruntime_genai') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_profiles_text_lists_and_shows():
    from device_profiles import profiles_text

    listing = profiles_text()
    assert all(name in listing for name in REQUIRED) and "(searched:" in listing
    shown = profiles_text("raspberry-pi-5")
    assert shown.startswith("# ") and yaml.safe_load(shown)["hardware"]["cores"] == 4
