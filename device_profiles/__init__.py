"""Device profiles (validated YAML data) and the on-device bench/gate. Torch-free.

Public API (the CLI and the pipeline call only these):
- `list_profiles(extra_dirs=()) -> list[DeviceProfile]`
- `load_profile(name_or_path, extra_dirs=()) -> DeviceProfile`
- `profiles_text(show=None) -> str` (what `edge-distill profiles [--show NAME]` prints)
- `bench_packages(package_dirs, profiles, ...) -> list[BenchReport]`, `bench_package(package_dir, profile, ...)`,
  `bench_summary(reports) -> dict` (lazy: importing this package loads no runtime)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from device_profiles.loader import DeviceProfile, list_profiles, load_profile, profile_dirs, profiles_text

if TYPE_CHECKING:
    from device_profiles.bench import BenchReport, bench_package, bench_packages, bench_summary

__all__ = [
    "BenchReport",
    "DeviceProfile",
    "bench_package",
    "bench_packages",
    "bench_summary",
    "list_profiles",
    "load_profile",
    "profile_dirs",
    "profiles_text",
]


def __getattr__(name: str) -> Any:
    # The bench pulls in subprocess/runtime plumbing; `edge-distill profiles` should not pay for it.
    if name in ("BenchReport", "bench_package", "bench_packages", "bench_summary"):
        from device_profiles import bench

        return getattr(bench, name)
    raise AttributeError(f"module 'device_profiles' has no attribute {name!r}")
