"""Device profiles as validated data: one YAML per target, pydantic models with unknown keys forbidden.

Profiles are looked up by name in (first match wins): `extra_dirs`, `$EDGE_DISTILL_PROFILES` (os.pathsep
separated), `~/.config/edge-distill/profiles/`, then the profiles shipped in this package. A user adds a device
by dropping `<name>.yaml` into one of those directories. Errors name the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_distill.config import MAX_CONFIG_BYTES, format_validation_error, load_yaml_text
from edge_distill.errors import ConfigError
from edge_distill.io import read_utf8

SHIPPED_DIR = Path(__file__).parent / "profiles"
USER_DIR = Path("~/.config/edge-distill/profiles").expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemoryBandwidth(_Section):
    """Memory bandwidth in GB/s. `measure` (host only): a cached copy benchmark at bench time.

    `gbs` is the figure of `kind` (often the datasheet peak); `sustained_gbs` what a program actually gets
    (a copy benchmark, or a published memory-bound decode), which the estimate's memory term uses."""

    gbs: float | Literal["measure"] = Field(description="GB/s, or 'measure'")
    kind: Literal["measured", "theoretical"]
    source: str = Field(min_length=3, description="where the figure comes from (datasheet, benchmark URL)")
    sustained_gbs: float | None = Field(default=None, gt=0, description="sustained GB/s (estimates use it)")
    sustained_source: str | None = Field(
        default=None, min_length=3, description="where sustained_gbs comes from"
    )

    @model_validator(mode="after")
    def _sustained_has_source(self) -> MemoryBandwidth:
        if self.sustained_gbs is not None and not self.sustained_source:
            raise ValueError(
                "sustained_source: say where sustained_gbs comes from (benchmark URL, measurement)"
            )
        return self


class Hardware(_Section):
    cpu: str
    arch: Literal["x86_64", "aarch64", "auto"]
    cores: int | Literal["auto"] = Field(description="CPU cores usable by the runtime")
    ram_gb: float | Literal["auto"]
    memory_bandwidth: MemoryBandwidth
    # Peak fp32 GFLOPS of the CPU cores the runtime uses: scales prefill (compute bound) for estimates.
    compute_gflops: float | Literal["measure"]
    compute_source: str = Field(min_length=3)
    accelerator: str | None = None


class Budget(_Section):
    """What the package must meet on this device. A line left out (null) is not gated."""

    max_package_mb: float | None = Field(default=None, gt=0)
    max_peak_rss_mb: float | None = Field(default=None, gt=0)
    min_decode_tok_s: float | None = Field(default=None, gt=0)
    max_ttft_s: float | None = Field(default=None, gt=0, description="time to first token, typical prompt")
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(default=None, ge=0, le=1, description="vs unquantized student")


class Detect(_Section):
    """How a bench recognizes that it runs on this device (then its numbers are *measured*)."""

    machine: str | None = Field(default=None, description="platform.machine(), e.g. aarch64")
    model_contains: str | None = Field(default=None, description="substring of the board/phone model")


class DeviceProfile(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    threads: int | Literal["auto"] = Field(description="threads the runtime uses ('auto' = all cores)")
    runtime: str = Field(description="the format table's runtime of `format` (exporters.formats)")
    format: str = Field(description="a row of exporters.formats.FORMATS, e.g. gguf, onnx, executorch")
    hardware: Hardware
    budget: Budget
    is_host: bool = Field(
        default=False, description="this machine: every figure is measured, never estimated"
    )
    detect: Detect | None = None
    source_file: str = Field(default="", description="set by the loader")

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        from exporters.errors import ExportError
        from exporters.formats import get_format

        try:
            fmt = get_format(self.format)
        except ExportError as e:
            raise ValueError(f"format: {e}") from None
        if fmt.runtime != self.runtime:
            raise ValueError(f"runtime: {self.format} packages run on {fmt.runtime}, not {self.runtime!r}")
        cores = self.hardware.cores
        if isinstance(self.threads, int) and isinstance(cores, int) and not 1 <= self.threads <= cores:
            raise ValueError(f"threads: {self.threads} must be between 1 and hardware.cores={cores}")
        if not self.is_host and "measure" in (
            self.hardware.memory_bandwidth.gbs,
            self.hardware.compute_gflops,
        ):
            raise ValueError("hardware: 'measure' is only possible for the host profile (is_host: true)")
        return self

    def resolved_threads(self) -> int:
        if isinstance(self.threads, int):
            return self.threads
        cores = self.hardware.cores
        return cores if isinstance(cores, int) else max(1, os.cpu_count() or 1)


def profile_dirs(extra_dirs: Iterable[str | Path] = ()) -> list[Path]:
    env = [Path(p) for p in os.environ.get("EDGE_DISTILL_PROFILES", "").split(os.pathsep) if p]
    return [Path(d) for d in extra_dirs] + env + [USER_DIR, SHIPPED_DIR]


def _format_error(err: ValidationError, path: Path) -> str:
    return format_validation_error(
        err, f"invalid device profile {path}:", "check the spelling; see device_profiles/profiles/host.yaml"
    )


def load_profile_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    # the config's reader: size cap, UTF-8 errors with line, no YAML aliases (a 1 kB alias bomb is gigabytes)
    raw = load_yaml_text(
        read_utf8(path, max_bytes=MAX_CONFIG_BYTES, error=ConfigError), f"device profile {path}"
    )
    if not isinstance(raw, dict):
        raise ConfigError(f"device profile {path}: expected a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    if raw["name"] != path.stem:
        raise ConfigError(
            f"device profile {path}: name: {raw['name']!r} must equal the file name {path.stem!r}"
        )
    try:
        return DeviceProfile.model_validate({**raw, "source_file": str(path)})
    except ValidationError as e:
        raise ConfigError(_format_error(e, path)) from e


def _profile_files(extra_dirs: Iterable[str | Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in profile_dirs(extra_dirs):
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                found.setdefault(f.stem, f)  # earlier directories win: a user profile shadows a shipped one
    return found


def list_profiles(extra_dirs: Iterable[str | Path] = ()) -> list[DeviceProfile]:
    """Every profile found, validated (an invalid file raises ConfigError naming it), sorted by name."""
    return [load_profile_file(f) for _, f in sorted(_profile_files(extra_dirs).items())]


def load_profile(name_or_path: str | Path, extra_dirs: Iterable[str | Path] = ()) -> DeviceProfile:
    """A profile by name (`raspberry-pi-5`) or by path to a YAML file."""
    if (
        isinstance(name_or_path, Path)
        or str(name_or_path).endswith((".yaml", ".yml"))
        or os.sep in str(name_or_path)
    ):
        return load_profile_file(name_or_path)
    files = _profile_files(extra_dirs)
    if name_or_path not in files:
        known = ", ".join(sorted(files)) or "(none)"
        raise ConfigError(
            f"unknown device profile {name_or_path!r}; known: {known}. Add your own as "
            f"{USER_DIR}/{name_or_path}.yaml (copy a shipped one: edge-distill profiles --show host)"
        )
    return load_profile_file(files[name_or_path])


def profile_summary(p: DeviceProfile) -> str:
    """One line for `edge-distill profiles`."""
    hw, b = p.hardware, p.budget
    bw = hw.memory_bandwidth.gbs
    bw_s = "measured at bench" if bw == "measure" else f"{bw:g} GB/s {hw.memory_bandwidth.kind}"
    return (
        f"{p.name:<22} {p.runtime:<18} threads={p.threads!s:<4} ram={hw.ram_gb!s:<5}GB bw={bw_s:<24} "
        f"budget: pkg<={b.max_package_mb}MB rss<={b.max_peak_rss_mb}MB decode>={b.min_decode_tok_s}tok/s "
        f"ttft<={b.max_ttft_s}s acc>={b.min_accuracy} drop<={b.max_accuracy_drop}"
    )


def profile_yaml(p: DeviceProfile) -> str:
    """The profile as YAML (for `edge-distill profiles --show NAME`)."""
    return yaml.safe_dump(p.model_dump(mode="json", exclude={"source_file"}), sort_keys=False)


def profiles_text(show: str | None = None, extra_dirs: Iterable[str | Path] = ()) -> str:
    """`edge-distill profiles`: one line per profile (with its file), or one profile as YAML (`--show NAME`)."""
    if show is not None:
        p = load_profile(show, extra_dirs)
        return f"# {p.source_file}\n{profile_yaml(p)}"
    lines = [f"{profile_summary(p)}\n    {p.source_file}" for p in list_profiles(extra_dirs)]
    dirs = ", ".join(str(d) for d in profile_dirs(extra_dirs))
    return "\n".join(lines) + f"\n(searched: {dirs})"
