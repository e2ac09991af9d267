"""Read an export package as the bench sees it: verified hashes, runtime, model path, prompt template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_distill.errors import EdgeDistillError
from edge_distill.types import Strategy
from exporters.chat_template import fill_template, forced_suffix
from exporters.errors import ExportError
from exporters.formats import FORMATS, MANIFEST, PROMPT_TEMPLATE, get_format


class PackageError(EdgeDistillError):
    """The package directory is incomplete or was modified after export."""


@dataclass(frozen=True)
class Package:
    path: Path
    manifest: dict[str, Any]
    template: dict[str, Any]
    model_path: Path  # the .gguf file, or the ONNX directory holding genai_config.json

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    @property
    def runtime(self) -> str:
        return str(self.manifest["runtime"])

    @property
    def size_bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.manifest["files"].values())

    @property
    def weights_bytes(self) -> int:
        """Bytes of model weights: what one decode step reads (roofline numerator)."""
        suffixes = get_format(self.format).weight_suffixes
        return sum(int(f["bytes"]) for n, f in self.manifest["files"].items() if n.endswith(suffixes))

    @property
    def source_accuracy(self) -> tuple[float | None, int | None]:
        acc = self.manifest.get("source_accuracy") or {}
        dev = acc.get("dev")
        return (float(dev) if dev is not None else None, int(acc["n"]) if acc.get("n") is not None else None)

    @property
    def decoding(self) -> dict[str, Any]:
        """How the student decodes (`edge_distill.decoding`); packages exported before the "decoding" key
        carried a CasCoD section instead, read here as the two-stage description it stood for."""
        from edge_distill.decoding import SINGLE_PASS, two_stage
        from edge_distill.strategies import ANSWER_MARKER

        if isinstance(self.template.get("decoding"), dict):
            return dict(self.template["decoding"])
        legacy = self.template.get("cascod")
        if isinstance(legacy, dict) and legacy.get("stages") == 2:
            marker = str(legacy.get("answer_marker") or self.template.get("answer_marker") or ANSWER_MARKER)
            return {**two_stage(marker), "stop_at_answer": False}  # decoded to EOS when it was exported
        return {**SINGLE_PASS, "stop_at_answer": False}

    @property
    def strategy(self) -> Strategy | None:
        """The strategy the package's prompt forces (the run's eval.strategy), None for "auto"."""
        value = self.template.get("strategy", "auto")
        return None if value in (None, "auto") else Strategy(value)

    def prompt(self, question: str, strategy: str | None = None) -> str:
        """The packaged student prompt; a forced strategy appends the packaged tag suffix."""
        text = fill_template(
            self.template["student_prompt"], f"{PROMPT_TEMPLATE}: student_prompt", question=question
        )
        if strategy is not None:
            where = f"{PROMPT_TEMPLATE}: forced_strategy_suffix"
            text += fill_template(forced_suffix(self.template), where, strategy=strategy)
        return text


def _verify(pkg: Path, public_key: str | Path | None = None) -> tuple[list[str], dict[str, Any] | None]:
    # exporters.verify is torch-free; it owns the manifest format, so the bench re-hashes through it.
    from exporters.verify import verify

    result = verify(pkg, public_key=public_key)
    return result.problems, result.manifest


def read_package(
    package_dir: str | Path, *, verify: bool = True, public_key: str | Path | None = None
) -> Package:
    """Load and (by default) re-hash a package; PackageError names every problem found. With a
    `public_key`, an unsigned or badly signed package is refused too."""
    pkg = Path(package_dir)
    if not pkg.is_dir():
        raise PackageError(
            f"package {pkg}: not a directory (expected export/<format>-<quant>/ from the exporter)"
        )
    if not (pkg / MANIFEST).exists():
        raise PackageError(f"package {pkg}: {MANIFEST} missing; re-export the package")
    if verify or public_key is not None:  # the checked (and signed) bytes are the ones used: no second read
        problems, checked = _verify(pkg, public_key)
        if problems:
            raise PackageError(
                f"package {pkg} failed verification (re-export it):\n  " + "\n  ".join(problems)
            )
        manifest: dict[str, Any] = checked or {}
    else:
        try:
            manifest = json.loads((pkg / MANIFEST).read_text(encoding="utf-8"))
        except OSError as e:
            raise PackageError(f"package {pkg}: {MANIFEST} unreadable ({e.strerror or e})") from None
        except (ValueError, RecursionError) as e:
            raise PackageError(f"package {pkg}: {MANIFEST} is not valid JSON ({str(e)[:200]})") from None
        missing = [
            k for k in ("format", "runtime", "files") if not isinstance(manifest, dict) or k not in manifest
        ]
        if missing:
            raise PackageError(f"package {pkg}: {MANIFEST} lacks {', '.join(missing)}")
    try:
        template = json.loads((pkg / PROMPT_TEMPLATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise PackageError(f"package {pkg}: {PROMPT_TEMPLATE} missing or invalid ({str(e)[:200]})") from None
    if not isinstance(template, dict) or "{question}" not in str(template.get("student_prompt", "")):
        raise PackageError(f"package {pkg}: {PROMPT_TEMPLATE}: student_prompt must contain {{question}}")
    package = Package(pkg, manifest, template, _model_path(pkg, manifest))
    try:  # refused now, before any runtime starts: only {question} and {strategy}, bounded
        package.prompt("q", "cot")
    except ExportError as e:
        raise PackageError(f"package {pkg}: {e}") from None
    return package


def _model_path(pkg: Path, manifest: dict[str, Any]) -> Path:
    try:
        fmt = get_format(str(manifest["format"]))
    except ExportError:
        raise PackageError(
            f"package {pkg}: format {manifest['format']!r}: the bench runs {', '.join(FORMATS)}"
        ) from None
    entry = fmt.model_file(list(manifest["files"]))
    if entry is None:
        raise PackageError(f"package {pkg}: expected one {fmt.model_entry} file in the manifest")
    return (pkg / entry).parent if fmt.model_is_dir else pkg / entry
