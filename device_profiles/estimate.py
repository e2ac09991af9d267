"""Turn a runtime measurement on this host into the figures for a profile: *measured* when the bench runs
on the target itself, *estimated* otherwise.

The decode model (per generated token):

    step time = max(memory time, compute/overhead time)
    memory time   = weight bytes / (target SUSTAINED bandwidth x calibration)
    compute time  = host step time x host GFLOPS / target GFLOPS

- A decoder reads every weight once per token, so `sustained bandwidth / weight bytes` is the roofline.
  Profiles give a *sustained* figure (a measured copy benchmark or a published memory-bound decode), not
  only the datasheet peak; without one the peak is used and the estimate says so.
- The **calibration factor** is fitted on this host: measured decode / the host's own roofline (its measured
  copy bandwidth). It folds in what the roofline ignores -- kernel efficiency, per-token overhead (graph
  build, sampling, thread sync), KV-cache reads. On a 135M model it is ~0.3: decode there is overhead, not
  memory. Applying it on the target assumes the runtime reaches the same fraction of roofline there.
- The compute/overhead term scales the host's whole step time by the fp32 compute ratio: the part of a step
  that is not memory runs on the CPU cores, so a slower core makes it slower. Prefill (many tokens per weight
  read) is compute bound and scales by the same ratio.

Every estimated figure carries its assumptions (`Figures.assumptions`), printed under the row in bench.md.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from device_profiles.bandwidth import HostHardware, device_model
from device_profiles.loader import DeviceProfile
from device_profiles.worker import RuntimeMeasurement

MEASURED, ESTIMATED = "measured", "estimated"
MEMORY, COMPUTE = "memory", "compute/overhead"


@dataclass(frozen=True)
class Figures:
    basis: str  # "measured" | "estimated"
    package_mb: float  # exact in both cases
    decode_tok_s: float
    prefill_tok_s: float
    ttft_s: float
    peak_rss_mb: float
    bandwidth_gbs: float  # the bandwidth the roofline uses (target sustained, or this host's measured copy)
    roofline_tok_s: float  # bandwidth / weight bytes per token
    roofline_fraction: float  # decode_tok_s / roofline_tok_s
    note: str
    calibration: float | None = None  # host decode / host roofline (see module doc)
    bound: str | None = None  # which term of max(memory, compute/overhead) set the estimate
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roofline_tok_s(bandwidth_gbs: float, weight_bytes: int) -> float:
    """Upper bound on decode speed: each token reads all weights once (KV-cache reads ignored: small here)."""
    return bandwidth_gbs * 1e9 / weight_bytes if weight_bytes else math.inf


def calibration_factor(host_decode_tok_s: float, host_bandwidth_gbs: float, weight_bytes: int) -> float:
    """Measured decode over the host's own roofline: the share of memory-bound speed the runtime reaches."""
    return host_decode_tok_s / roofline_tok_s(host_bandwidth_gbs, weight_bytes)


def fit_calibration(points: list[tuple[float, float, int]]) -> float:
    """One factor from several (decode tok/s, host GB/s, weight bytes) measurements: the geometric mean of
    their calibration factors (ratios, so a mean of logs). Used by benchmarks/bench_estimate.py."""
    if not points:
        raise ValueError("fit_calibration needs at least one measurement")
    logs = [math.log(calibration_factor(d, bw, w)) for d, bw, w in points]
    return math.exp(sum(logs) / len(logs))


@dataclass(frozen=True)
class DecodeEstimate:
    tok_s: float
    memory_s: float  # per token
    compute_s: float  # per token
    bound: str


def estimate_decode(
    weight_bytes: int,
    *,
    host_decode_tok_s: float,
    calibration: float,
    target_bandwidth_gbs: float,
    compute_ratio: float,
) -> DecodeEstimate:
    """step = max(weights / (target bandwidth x calibration), host step x host/target compute)."""
    memory_s = weight_bytes / (target_bandwidth_gbs * 1e9 * calibration)
    compute_s = (1.0 / host_decode_tok_s) / compute_ratio
    step = max(memory_s, compute_s)
    return DecodeEstimate(1.0 / step, memory_s, compute_s, MEMORY if memory_s >= compute_s else COMPUTE)


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
    host_decode = m.decode_tok_s.median
    calib = calibration_factor(host_decode, host.bandwidth_gbs, weight_bytes)
    if on_target:
        roof = roofline_tok_s(host.bandwidth_gbs, weight_bytes)
        return Figures(
            MEASURED, package_mb, host_decode, m.prefill_tok_s.median, m.ttft_s.median, m.peak_rss_mb,
            host.bandwidth_gbs, roof, host_decode / roof,
            f"measured on this machine ({host.cpu}, {m.threads} threads, median of {m.repetitions})",
            calibration=calib,
        )  # fmt: skip
    hw = profile.hardware
    bw_spec = hw.memory_bandwidth
    peak, gflops = bw_spec.gbs, hw.compute_gflops
    assert isinstance(peak, float) and isinstance(
        gflops, float
    )  # the loader allows 'measure' only for the host
    sustained = bw_spec.sustained_gbs
    bw = sustained if sustained is not None else peak
    compute_ratio = gflops / host.compute_gflops
    d = estimate_decode(
        weight_bytes,
        host_decode_tok_s=host_decode,
        calibration=calib,
        target_bandwidth_gbs=bw,
        compute_ratio=compute_ratio,
    )
    prefill = m.prefill_tok_s.median * compute_ratio
    ttft = m.prompt_tokens / prefill + 1 / d.tok_s
    roof = roofline_tok_s(bw, weight_bytes)
    assumptions = [
        "decode per token = max(memory time, compute/overhead time); "
        f"here {1e3 * d.memory_s:.1f} ms vs {1e3 * d.compute_s:.1f} ms -> {d.bound} bound",
        (
            f"memory time: {weight_bytes / 2**20:.1f} MiB weights / ({bw:g} GB/s sustained x calibration {calib:.2f}); "
            f"sustained: {bw_spec.sustained_source}"
            if sustained is not None
            else f"memory time: {weight_bytes / 2**20:.1f} MiB weights / ({bw:g} GB/s x calibration {calib:.2f}); "
            f"NO sustained figure in the profile, the {bw_spec.kind} peak is used: optimistic"
        ),
        f"calibration {calib:.2f} = this host's decode {host_decode:.1f} tok/s / its roofline "
        f"{roofline_tok_s(host.bandwidth_gbs, weight_bytes):.0f} tok/s ({host.bandwidth_gbs:g} GB/s copy "
        "benchmark); assumes the runtime reaches the same share of roofline on the target",
        f"compute/overhead time: host step {1e3 / host_decode:.1f} ms x {host.compute_gflops:g} / {gflops:g} "
        f"GFLOPS (fp32, {hw.compute_source}); prefill scaled by the same ratio",
        "thermal throttling, other runtimes' builds (NEON/dotprod kernels) and OS load are not modelled; "
        "peak RSS as on the host",
    ]
    return Figures(
        ESTIMATED, package_mb, d.tok_s, prefill, ttft, m.peak_rss_mb, bw, roof, d.tok_s / roof,
        f"estimated from this host ({host.cpu}): decode {d.tok_s:.1f} tok/s, {d.bound} bound "
        f"(sustained {bw:g} GB/s, calibration {calib:.2f}, compute x{compute_ratio:.2f})",
        calibration=calib, bound=d.bound, assumptions=assumptions,
    )  # fmt: skip
