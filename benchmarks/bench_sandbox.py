"""PoT sandbox throughput: programs per second and per minute, by workload and worker count.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sandbox.py [--n 600] [--workers 1 2 4]

Before/after comparisons: run the same command on two checkouts (PYTHONPATH=<checkout>) with the same
--n and --workers; `s_per_1000` is the figure the issue's budget is stated in (seconds per 1,000
programs). The load average is recorded next to the numbers because the cores may be shared.

Workloads: `trivial` (answer = i * 2), `gsm8k` (the recorded teacher's PoT programs for the shipped GSM8K
sample), `sympy` (solve_it on a linear equation), `hostile10` (gsm8k with every 10th program an infinite
loop, at timeout 0.5 s). Prints a markdown table and writes benchmarks/results/bench_sandbox.json.
Startup (spawning workers and importing sympy) is measured separately from steady-state throughput.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import psutil

from edge_distill.data import load_problems
from edge_distill.io import write_json
from edge_distill.sandbox import SandboxPool
from edge_distill.teachers.recorded import RecordedTeacher
from edge_distill.types import Strategy

log = logging.getLogger("bench_sandbox")


def workloads(n: int) -> dict[str, tuple[list[str], float]]:
    problems = load_problems("builtin:gsm8k-sample")
    gsm8k = [
        c[0].text
        for c in RecordedTeacher().generate(problems, Strategy.POT, 1)
        if c[0].finish_reason == "stop"
    ]
    gsm8k = (gsm8k * (n // len(gsm8k) + 1))[:n]
    return {
        "trivial": ([f"answer = {i} * 2" for i in range(n)], 2.0),
        "gsm8k": (gsm8k, 2.0),
        "sympy": (
            [f"x = sympy.Symbol('x')\nanswer = solve_it(sympy.Eq(3 * x + {i}, 100), x)[x]" for i in range(n)],
            2.0,
        ),
        "hostile10": ([("while True: pass" if i % 10 == 0 else p) for i, p in enumerate(gsm8k)], 0.5),
    }


def workers_cpu_s(pool: SandboxPool) -> float:
    """CPU seconds used by the workers and their (reaped) per-program children: unlike wall time, this
    does not depend on how many other processes share the cores."""
    total = 0.0
    for pid in pool.worker_pids():
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="programs per workload")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", default="benchmarks/results/bench_sandbox.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    loads = workloads(args.n)
    rows = []
    load_before = os.getloadavg()
    for workers in args.workers:
        t0 = time.perf_counter()
        with SandboxPool(workers=workers) as pool:
            getattr(pool, "wait_ready", lambda: None)()  # every worker started (older versions: no such call)
            pool.run(["answer = 1"] * workers)  # waits until every worker has imported its modules
            startup = time.perf_counter() - t0
            layers = getattr(pool, "layers", None)  # the OS boundary in force (None: a version without one)
            for name, (programs, timeout) in loads.items():
                cpu0, t0 = workers_cpu_s(pool), time.perf_counter()
                results = pool.run(programs, timeout_s=timeout)
                dt = time.perf_counter() - t0
                cpu_ms = 1000 * (workers_cpu_s(pool) - cpu0) / len(programs)
                rows.append(
                    {
                        "workload": name,
                        "workers": workers,
                        "programs": len(programs),
                        "ok": sum(r.ok for r in results),
                        "seconds": round(dt, 3),
                        "programs_per_s": round(len(programs) / dt, 1),
                        "programs_per_min": round(60 * len(programs) / dt),
                        "s_per_1000": round(1000 * dt / len(programs), 2),
                        "startup_s": round(startup, 2),
                        "cpu_ms_per_program": round(cpu_ms, 2),
                        "layers": layers,
                    }
                )
                log.info("%s", rows[-1])
    log.info("")
    log.info(
        "| workload | workers | programs | ok | seconds | programs/s | s/1000 | CPU ms/program | startup s |"
    )
    log.info("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        log.info(
            "| %s | %d | %d | %d | %.2f | %.0f | %.2f | %.1f | %.1f |", r["workload"], r["workers"], r["programs"],
            r["ok"], r["seconds"], r["programs_per_s"], r["s_per_1000"], r["cpu_ms_per_program"], r["startup_s"],
        )  # fmt: skip
    load_after = os.getloadavg()
    log.info("load average before %s, after %s; OS boundary: %s", load_before, load_after, rows[-1]["layers"])
    write_json(
        args.out,
        {
            "rows": rows,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
    )
    log.info("wrote %s (cpu_count=%s; numbers depend on how busy the cores are)", args.out, os.cpu_count())


if __name__ == "__main__":
    main()
