"""This host's memory bandwidth (copy benchmark) and fp32 compute, measured once and cached.

Decode of a quantized LLM is memory bound: every generated token reads (almost) all weights once, so
`bandwidth / bytes_per_token` is the roofline decode speed. Prefill is compute bound, hence the GFLOPS figure
used to scale prefill to other devices. Both figures are conservative (simple kernels, not tuned STREAM).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_distill.io import write_json

log = logging.getLogger(__name__)

CACHE_FILE = Path(os.environ.get("EDGE_DISTILL_CACHE", "~/.cache/edge-distill")).expanduser() / "host_hw.json"


@dataclass(frozen=True)
class HostHardware:
    cpu: str
    arch: str
    cores: int
    ram_gb: float
    bandwidth_gbs: float  # copy benchmark, bytes read + written per second (STREAM "copy" convention)
    compute_gflops: float  # fp32 matmul
    threads: int  # threads used by the copy benchmark
    method: str


def cpu_model() -> str:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    # x86: "model name"; arm boards: "Hardware"/"Model"; else whatever platform knows
    return fields.get("model name") or fields.get("hardware") or platform.processor() or platform.machine()


def device_model() -> str:
    """The board/phone model where the OS exposes it (device tree on boards, getprop on Android)."""
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(p).read_text(errors="replace").strip("\x00\n ")
        except OSError:
            continue
    return os.environ.get("EDGE_DISTILL_DEVICE_MODEL", "")


def copy_bandwidth_gbs(size_mb: int = 128, threads: int = 1, repeats: int = 5) -> tuple[float, str]:
    """Best-of-`repeats` copy of a `size_mb` buffer split over `threads` threads. Returns (GB/s, method)."""
    n = size_mb * 1024 * 1024
    try:
        import numpy as np
    except ImportError:  # the device install may lack numpy: a memoryview copy is a plain memcpy
        src, dst = bytearray(b"\x01") * n, bytearray(n)
        best = min(
            _timed(lambda: memoryview(dst).__setitem__(slice(None), memoryview(src))) for _ in range(repeats)
        )
        return 2 * n / best / 1e9, "memoryview memcpy, 1 thread"
    src_a, dst_a = np.ones(n, dtype=np.uint8), np.zeros(n, dtype=np.uint8)
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]

    def copy_part(b: tuple[int, int]) -> None:
        np.copyto(dst_a[b[0] : b[1]], src_a[b[0] : b[1]])  # numpy releases the GIL for plain copies

    with ThreadPoolExecutor(threads) as pool:
        best = min(_timed(lambda: list(pool.map(copy_part, bounds))) for _ in range(repeats))
    return 2 * n / best / 1e9, f"numpy copyto, {threads} thread(s), {size_mb} MiB"


def matmul_gflops(n: int = 1024, repeats: int = 7) -> float:
    try:
        import numpy as np
    except ImportError:
        return float("nan")
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up (BLAS thread pool start)
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def host_hardware(
    threads: int | None = None, *, refresh: bool = False, cache_file: Path = CACHE_FILE
) -> HostHardware:
    """Measure (or read from the cache) this host's hardware figures for `threads` copy threads."""
    import psutil

    threads = threads or os.cpu_count() or 1
    key = f"{platform.node()}|{cpu_model()}|{threads}"
    cache: dict[str, dict[str, object]] = {}
    if cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable hardware cache %s", cache_file)
    if key in cache and not refresh:
        return HostHardware(**cache[key])  # type: ignore[arg-type]
    log.info(
        "measuring host memory bandwidth and compute once (%d threads); cached in %s", threads, cache_file
    )
    bw, method = copy_bandwidth_gbs(threads=threads)
    hw = HostHardware(
        cpu=cpu_model(),
        arch=platform.machine(),
        cores=os.cpu_count() or 1,
        ram_gb=round(psutil.virtual_memory().total / 2**30, 1),
        bandwidth_gbs=round(bw, 2),
        compute_gflops=round(matmul_gflops(), 1),
        threads=threads,
        method=method,
    )
    cache[key] = asdict(hw)
    write_json(cache_file, cache)
    return hw
