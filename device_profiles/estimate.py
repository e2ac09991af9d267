"""Turn a runtime measurement on this host into the figures for a profile: *measured* when the bench runs
on the target itself, *estimated* otherwise (decode scaled by memory bandwidth, prefill by compute).

Why these scalings: a quantized decoder reads every weight once per generated token, so decode speed is
memory bound (roofline = bandwidth / weight bytes); prefill processes many tokens per weight read and is
compute bound. Both ratios compare *peak* target figures with *measured* host figures, so estimates are
optimistic for targets whose sustained bandwidth is well below peak — they are labelled as estimates.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass
from typing import Any

from device_profiles.bandwidth import HostHardware, device_model
from device_profiles.loader import DeviceProfile
from device_profiles.worker import RuntimeMeasurement

MEASURED, ESTIMATED = "measured", "estimated"


@dataclass(frozen=True)
class Figures:
    basis: str  # "measured" | "estimated"
    package_mb: float  # exact in both cases
    decode_tok_s: float
    prefill_tok_s: float
    ttft_s: float
    peak_rss_mb: float
    bandwidth_gbs: float
    roofline_tok_s: float  # bandwidth / weight bytes per token
    roofline_fraction: float  # decode_tok_s / roofline_tok_s
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roofline_tok_s(bandwidth_gbs: float, weight_bytes: int) -> float:
    """Upper bound on decode speed: each token reads all weights once (KV-cache reads ignored: small here)."""
    return bandwidth_gbs * 1e9 / weight_bytes if weight_bytes else math.inf


def runs_on(profile: DeviceProfile) -> bool:
    """Whether this machine is the profile's device (host profile, or its `detect` rule matches)."""
    if profile.is_host:
        return True
    d = profile.detect
    if d is None or (d.machine is None and d.model_contains is None):
        return False
    machine_ok = d.machine is None or platform.machine().lower() in (
        d.machine.lower(),
        d.machine.lower().replace("aarch64", "arm64"),
    )
    model_ok = d.model_contains is None or d.model_contains.lower() in device_model().lower()
    return machine_ok and model_ok


def figures_for(
    profile: DeviceProfile,
    m: RuntimeMeasurement,
    host: HostHardware,
    *,
    package_bytes: int,
    weight_bytes: int,
    on_target: bool,
) -> Figures:
    """Figures for `profile` from measurement `m` taken on `host` (`on_target`: host is the device)."""
    package_mb = package_bytes / 2**20
    if on_target:
        roof = roofline_tok_s(host.bandwidth_gbs, weight_bytes)
        return Figures(
            MEASURED, package_mb, m.decode_tok_s.median, m.prefill_tok_s.median, m.ttft_s.median, m.peak_rss_mb,
            host.bandwidth_gbs, roof, m.decode_tok_s.median / roof,
            f"measured on this machine ({host.cpu}, {m.threads} threads, median of {m.repetitions})",
        )  # fmt: skip
    hw = profile.hardware
    bw, gflops = hw.memory_bandwidth.gbs, hw.compute_gflops
    assert isinstance(bw, float) and isinstance(
        gflops, float
    )  # the loader allows 'measure' only for the host
    bw_ratio, compute_ratio = bw / host.bandwidth_gbs, gflops / host.compute_gflops
    decode = m.decode_tok_s.median * bw_ratio
    prefill = m.prefill_tok_s.median * compute_ratio
    ttft = m.prompt_tokens / prefill + 1 / decode
    roof = roofline_tok_s(bw, weight_bytes)
    return Figures(
        ESTIMATED, package_mb, decode, prefill, ttft, m.peak_rss_mb, bw, roof, decode / roof,
        f"estimated from this host ({host.cpu}): decode x{bw_ratio:.2f} (bandwidth {bw:g} {hw.memory_bandwidth.kind} "
        f"/ {host.bandwidth_gbs:g} GB/s measured), prefill x{compute_ratio:.2f} (compute {gflops:g} / "
        f"{host.compute_gflops:g} GFLOPS), peak RSS as on the host",
    )  # fmt: skip
