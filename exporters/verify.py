"""`edge-distill verify`: check an export package against its manifest, treating both as untrusted input.

A package arrives from elsewhere (a download, a shared drive), so its manifest may be hostile. Rules:
- manifest.json is a regular file of at most 1 MiB whose schema is validated; any schema error is one
  problem line, never a traceback;
- every listed path is confined to the package: relative, `/`-separated, no `..`/`.`/empty parts, no
  backslash, colon or control character, and no symlink anywhere on the way (each part is lstat-ed; the
  file is opened with O_NOFOLLOW); so no byte outside the package is ever read or reported on;
- sizes are compared before hashing, so reading is bounded by what the manifest declares;
- the format's essential files must be listed (its row's `essential`, `Format.package_problems`): GGUF one
  top-level .gguf and prompt_template.json; ONNX model.onnx, genai_config.json, tokenizer.json,
  tokenizer_config.json and prompt_template.json, and every file genai_config.json names must be a listed file
  (`genai_config_problems`); ExecuTorch model.pte, tokenizer.json, tokenizer_config.json and prompt_template.json;
- files present but not listed are refused (the runtime could pick them up, e.g. a second .gguf or a
  tokenizer file ORT GenAI looks for by name), except manifest.sig; so is any symlink or special file;
- with a public key, manifest.sig must be a valid ed25519 signature of the manifest bytes just checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from exporters.formats import FORMATS, MANIFEST, SIGNATURE
from exporters.signing import SIGNATURE_BYTES, load_public_key, signature_problem

MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 10_000
MAX_NAME = 1024


class _FileEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Manifest(BaseModel):
    # the exporter adds parity numbers, timings, sources...: only what verify relies on is checked
    model_config = ConfigDict(strict=True, extra="allow")
    format: str
    quant: str = Field(min_length=1, max_length=64)
    runtime: str
    files: dict[str, _FileEntry] = Field(min_length=1, max_length=MAX_FILES)

    @model_validator(mode="after")
    def _known_format_and_runtime(self) -> _Manifest:
        if self.format not in FORMATS:  # the exporter's table decides; a new format needs no change here
            raise ValueError(f"format {self.format[:40]!r} is not one of {list(FORMATS)}")
        if self.runtime != FORMATS[self.format].runtime:
            raise ValueError(
                f"runtime {self.runtime[:40]!r} is not {FORMATS[self.format].runtime!r} for {self.format}"
            )
        return self


@dataclass
class VerifyResult:
    package: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    manifest: dict[str, Any] | None = None  # the validated manifest (what was checked), when readable
    signed: bool | None = None  # None: no public key given


def name_problem(name: str) -> str | None:
    """Why a manifest key is not a safe package-relative path (None if it is)."""
    if not name or len(name) > MAX_NAME:
        return "empty or longer than 1024 characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "contains a control character"
    if "\\" in name or ":" in name:
        return "contains a backslash or colon (package paths are relative, '/'-separated)"
    if name.startswith("/"):
        return "absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' part"
    if name in (MANIFEST, SIGNATURE):
        return "the manifest cannot list itself or its signature"
    return None


def _show(name: str) -> str:
    return repr(name[:120]) if name != name.strip() or not name.isprintable() or len(name) > 120 else name


def _read_capped(root: Path, name: str, cap: int) -> tuple[bytes | None, str | None]:
    """Bytes of a regular, non-symlink file directly in `root`, if at most `cap` bytes."""
    try:
        st = os.lstat(root / name)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{name}: unreadable ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{name}: not a regular file (a symlink or special file)"
    if st.st_size > cap:
        return None, f"{name}: {st.st_size} bytes, more than the {cap} allowed"
    try:
        fd = os.open(root / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            return f.read(cap + 1)[:cap], None
    except OSError as e:
        return None, f"{name}: unreadable ({e.strerror})"


def _schema_problem(e: ValidationError) -> str:
    errs = e.errors(include_url=False, include_input=False)
    if any(err["type"] == "json_invalid" for err in errs):
        return f"{MANIFEST}: not valid JSON (UTF-8, nesting depth): {errs[0]['msg'][:120]}"
    loc = ".".join(str(p)[:60] for p in errs[0]["loc"]) or "top level"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{MANIFEST}: invalid manifest at {loc}: {errs[0]['msg'][:160]}{more}; re-export the package"


def _check_file(root: Path, name: str, entry: _FileEntry) -> str | None:
    """Walk `name` part by part with lstat (no symlink on the way), then hash at most entry.bytes bytes."""
    path = root
    parts = name.split("/")
    for i, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return f"{name}: missing"
        except OSError as e:
            return f"{name}: unreadable ({e.strerror})"
        if stat.S_ISLNK(st.st_mode):
            return f"{name}: {'/'.join(parts[: i + 1])} is a symlink (not allowed in a package)"
        last = i == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            return f"{name}: {'/'.join(parts[: i + 1])} is not a directory"
        if last and not stat.S_ISREG(st.st_mode):
            return f"{name}: not a regular file"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        return f"{name}: unreadable ({e.strerror})"
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != entry.bytes:
            return f"{name}: {size} bytes, manifest says {entry.bytes}"
        h = hashlib.sha256()
        left = entry.bytes
        while left > 0 and (block := f.read(min(1 << 20, left))):
            h.update(block)
            left -= len(block)
    return None if h.hexdigest() == entry.sha256 else f"{name}: sha256 mismatch"


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    """Everything in the package the manifest does not vouch for: unlisted files, symlinks, special files."""
    problems: list[str] = []
    seen = 0

    def unreadable(e: OSError) -> None:  # os.walk would skip a directory it cannot list, silently
        where = Path(e.filename).relative_to(root).as_posix() if e.filename else "?"
        problems.append(f"{_show(where)}: cannot list ({e.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        for n in sorted(dirnames + filenames):
            seen += 1
            if seen > 2 * MAX_FILES:
                return [*problems, f"more than {2 * MAX_FILES} entries in the package: stopped looking"]
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            try:
                st = os.lstat(p)
            except OSError as e:
                problems.append(f"{_show(rel)}: unreadable ({e.strerror})")
                continue
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"{_show(rel)}: symlink (not allowed in a package)")
            elif stat.S_ISDIR(st.st_mode):
                continue
            elif not stat.S_ISREG(st.st_mode):
                problems.append(f"{_show(rel)}: not a regular file")
            elif rel not in listed and rel not in (MANIFEST, SIGNATURE):
                problems.append(f"{_show(rel)}: not in manifest")
    return problems


def _genai_filenames(obj: Any, depth: int = 0) -> list[str]:
    if depth > 32:
        return []
    if isinstance(obj, dict):
        out = [v for k, v in obj.items() if k == "filename" and isinstance(v, str)]
        return out + [n for v in obj.values() for n in _genai_filenames(v, depth + 1)]
    if isinstance(obj, list):
        return [n for v in obj for n in _genai_filenames(v, depth + 1)]
    return []


def genai_config_problems(root: Path, files: Mapping[str, Any]) -> list[str]:
    """The onnx row's package check: every file genai_config.json names is a listed file."""
    if "genai_config.json" not in files:
        return []  # an essential file: reported missing already
    raw, _ = _read_capped(root, "genai_config.json", MAX_MANIFEST_BYTES)
    try:
        cfg = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        cfg = None
    return [
        f"genai_config.json: names {_show(ref)}, which is not a file of this package"
        for ref in _genai_filenames(cfg)
        if ref not in files
    ]


def verify(package: str | Path, *, public_key: str | Path | Ed25519PublicKey | None = None) -> VerifyResult:
    """Re-hash every file listed in manifest.json under the rules above; a public key also checks
    manifest.sig. Raises ExportError only for an unreadable public key (the caller's input)."""
    pkg = Path(package)
    key = load_public_key(public_key) if public_key is not None and not isinstance(public_key, Ed25519PublicKey) else public_key  # fmt: skip
    if not pkg.is_dir():
        return VerifyResult(pkg, False, [f"{pkg}: not a directory"])
    root = pkg.resolve()  # the package directory the user named may itself be a link; nothing below it
    raw, err = _read_capped(root, MANIFEST, MAX_MANIFEST_BYTES)
    if raw is None:
        return VerifyResult(pkg, False, [err or f"{MANIFEST}: missing"])
    try:
        m = _Manifest.model_validate_json(raw)
    except ValidationError as e:
        return VerifyResult(pkg, False, [_schema_problem(e)])
    except (RecursionError, ValueError) as e:  # never a traceback, whatever the bytes
        return VerifyResult(pkg, False, [f"{MANIFEST}: unreadable ({type(e).__name__})"])
    bad_names = [f"{_show(n)}: {why}" for n in m.files if (why := name_problem(n))]
    if bad_names:  # one hostile key is enough to distrust the manifest: nothing else is read
        return VerifyResult(pkg, False, [f"{MANIFEST}: unsafe path {bad_names[0]}" + (
            f" (+{len(bad_names) - 1} more)" if len(bad_names) > 1 else "")])  # fmt: skip
    problems = [p for name, entry in m.files.items() if (p := _check_file(root, name, entry))]
    problems += FORMATS[m.format].package_problems(root, m.files)
    problems += _unlisted(root, set(m.files))
    signed = None
    if key is not None:
        sig, sig_err = _read_capped(root, SIGNATURE, SIGNATURE_BYTES + 1)
        why = sig_err or signature_problem(raw, sig, key)
        signed = why is None
        if why:
            problems.append(why)
    manifest = json.loads(raw)  # validated above: a JSON object of bounded size and depth
    return VerifyResult(pkg, not problems, problems, len(m.files), manifest, signed)
