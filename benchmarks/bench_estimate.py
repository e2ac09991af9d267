"""Fit the estimate's calibration factor on this host and show what it does to the device estimates.

    python benchmarks/bench_estimate.py PKG [PKG ...] [--threads 2] [--new-tokens 64] [--repetitions 3]
        [--profiles raspberry-pi-5,pixel-8,iphone-15,jetson-orin-nano]

For each package (export/<format>-<quant>/): host decode through `device_profiles.worker.measure` (the bench's
own child-process measurement), this host's copy bandwidth, the roofline and the calibration factor
(decode / roofline); then one factor fitted over all packages (geometric mean) and, per profile, the
estimate max(memory, compute/overhead) next to the old bandwidth-ratio estimate (host decode x target peak /
host bandwidth). Prints a table and writes benchmarks/results/estimate.json. Timing lives here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from device_profiles import load_profile
from device_profiles.bandwidth import host_hardware
from device_profiles.estimate import calibration_factor, figures_for, fit_calibration, roofline_tok_s
from device_profiles.package import read_package
from device_profiles.worker import measure

log = logging.getLogger("bench_estimate")
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("packages", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--profiles", default="raspberry-pi-5,pixel-8,iphone-15,jetson-orin-nano")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "estimate.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    host = host_hardware(args.threads, refresh=True)
    profiles = [load_profile(p) for p in args.profiles.split(",") if p]
    rows, points = [], []
    for pkg in [read_package(d) for d in args.packages]:  # a bad package fails before any measurement
        m = measure(pkg.runtime, pkg.model_path, args.threads, pkg.prompt(QUESTION), new_tokens=args.new_tokens,
                    repetitions=args.repetitions)  # fmt: skip
        decode, w = m.decode_tok_s.median, pkg.weights_bytes
        points.append((decode, host.bandwidth_gbs, w))
        row = {
            "package": pkg.name,
            "weights_mib": round(w / 2**20, 1),
            "bits_per_weight": (pkg.manifest.get("quantization") or {}).get("bits_per_weight"),
            "host_decode_tok_s": round(decode, 2),
            "host_decode_range": [round(m.decode_tok_s.min, 2), round(m.decode_tok_s.max, 2)],
            "host_roofline_tok_s": round(roofline_tok_s(host.bandwidth_gbs, w), 1),
            "calibration": round(calibration_factor(decode, host.bandwidth_gbs, w), 3),
            "estimates": {},
        }
        for p in profiles:
            f = figures_for(p, m, host, package_bytes=pkg.size_bytes, weight_bytes=w, on_target=False)
            peak = p.hardware.memory_bandwidth.gbs
            old = (
                decode * float(peak) / host.bandwidth_gbs
            )  # the previous estimate: bandwidth ratio, peak figure
            row["estimates"][p.name] = {"decode_tok_s": round(f.decode_tok_s, 1), "bound": f.bound,
                                        "old_bandwidth_ratio_tok_s": round(old, 1),
                                        "old_over_new": round(old / f.decode_tok_s, 2)}  # fmt: skip
        rows.append(row)
    fitted = fit_calibration(points)
    print(f"host: {host.cpu}, {args.threads} threads, copy bandwidth {host.bandwidth_gbs} GB/s, "
          f"{host.compute_gflops} GFLOPS fp32; load avg {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'package':<16} {'MiB':>6} {'bpw':>5} {'decode':>7} {'roof':>6} {'calib':>6}  "
          + "  ".join(f"{p.name} new/old (bound)" for p in profiles))  # fmt: skip
    for r in rows:
        est = "  ".join(
            f"{e['decode_tok_s']:.0f}/{e['old_bandwidth_ratio_tok_s']:.0f} ({e['bound']})"
            for e in r["estimates"].values()
        )
        print(f"{r['package']:<16} {r['weights_mib']:>6} {r['bits_per_weight'] or 0:>5.2f} {r['host_decode_tok_s']:>7.1f} "
              f"{r['host_roofline_tok_s']:>6.0f} {r['calibration']:>6.3f}  {est}")  # fmt: skip
    print(f"fitted calibration (geometric mean over {len(points)} package(s)): {fitted:.3f}")
    result = {"host": asdict(host), "threads": args.threads, "load_avg": os.getloadavg(), "rows": rows,
              "fitted_calibration": round(fitted, 4)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
