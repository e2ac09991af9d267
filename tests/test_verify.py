"""`verify` treats a package as hostile: paths confined, no symlinks, essential files, one-line schema errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_distill.cli import main
from exporters import verify
from exporters.package import default_prompt_template, write_manifest


def _package(root: Path, fmt: str) -> Path:
    """A small package of the exporter's layout (files as the exporter names them, contents made up)."""
    pkg = root / f"{fmt}-pkg"
    pkg.mkdir(parents=True)
    (pkg / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    (pkg / "prompt_template.json").write_text(json.dumps(default_prompt_template()))
    (pkg / "README.md").write_text("# card\n")
    if fmt == "gguf":
        (pkg / "model-f16.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    elif fmt == "executorch":
        (pkg / "model.pte").write_bytes(os.urandom(4096))
        (pkg / "tokenizer_config.json").write_text("{}")
    else:
        (pkg / "model.onnx").write_bytes(os.urandom(2048))
        (pkg / "model.onnx.data").write_bytes(os.urandom(4096))
        (pkg / "tokenizer_config.json").write_text("{}")
        (pkg / "genai_config.json").write_text(json.dumps({"model": {"decoder": {"filename": "model.onnx"}}}))
    write_manifest(pkg, fmt=fmt, quant={"gguf": "f16", "executorch": "8da4w"}.get(fmt, "int4"), source_run=None,
                   config_digest=None, source_accuracy=None)  # fmt: skip
    return pkg


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return _package(tmp_path, "gguf")


def _edit_manifest(pkg: Path, change) -> None:  # type: ignore[no-untyped-def]
    m = json.loads((pkg / "manifest.json").read_text())
    change(m)
    (pkg / "manifest.json").write_text(json.dumps(m))


def _cli_verify(pkg: Path, *extra: str) -> tuple[int, list[str]]:
    r = CliRunner().invoke(main, ["verify", str(pkg), *extra])
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), (
        r.output
    )
    return r.exit_code, [line for line in r.output.splitlines() if line.strip()]


@pytest.mark.parametrize("fmt", ["gguf", "onnx", "executorch"])
def test_exporter_layout_verifies(tmp_path: Path, fmt: str) -> None:
    pkg = _package(tmp_path, fmt)
    result = verify(pkg)
    assert result.ok, result.problems
    assert result.checked == len(json.loads((pkg / "manifest.json").read_text())["files"])
    code, lines = _cli_verify(pkg)
    assert code == 0 and lines[-1].startswith(f"ok: {result.checked} files match")


# ------------------------------------------------------------------ confinement
UNSAFE = ["/etc/hostname", "../outside.txt", "sub/../../outside.txt", "./tokenizer.json", "a//b", "a/",
          "a\\b", "C:/x", "x\ny", "", "manifest.json", "manifest.sig", "a" * 2000]  # fmt: skip


@pytest.mark.parametrize("name", UNSAFE, ids=[repr(n[:20]) for n in UNSAFE])
def test_unsafe_manifest_paths_are_refused_before_anything_is_read(gguf: Path, name: str) -> None:
    outside = gguf.parent / "outside.txt"
    outside.write_text("secret outside the package " * 100)
    size = outside.stat().st_size

    def add(m: dict) -> None:  # type: ignore[type-arg]
        m["files"][name] = {"bytes": size, "sha256": "0" * 64}

    _edit_manifest(gguf, add)
    result = verify(gguf)
    assert not result.ok and len(result.problems) == 1
    assert result.problems[0].startswith("manifest.json: unsafe path"), result.problems
    assert str(size) not in result.problems[0]  # nothing about the outside file is reported
    code, lines = _cli_verify(gguf)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("MISMATCH manifest.json: unsafe path")


def test_a_listed_file_that_is_a_symlink_out_of_the_package_is_refused(gguf: Path) -> None:
    outside = gguf.parent / "elsewhere.json"
    os.replace(gguf / "tokenizer.json", outside)  # same bytes: the hash alone would still match
    (gguf / "tokenizer.json").symlink_to(outside)
    problems = verify(gguf).problems
    assert "tokenizer.json: tokenizer.json is a symlink (not allowed in a package)" in problems
    assert "tokenizer.json: symlink (not allowed in a package)" in problems


def test_a_symlinked_directory_on_the_path_is_refused(gguf: Path) -> None:
    real = gguf.parent / "real-sub"
    real.mkdir()
    (real / "extra.txt").write_text("x")
    (gguf / "sub").symlink_to(real, target_is_directory=True)

    def add(m: dict) -> None:  # type: ignore[type-arg]
        from exporters.package import sha256_file

        m["files"]["sub/extra.txt"] = {"bytes": 1, "sha256": sha256_file(real / "extra.txt")}

    _edit_manifest(gguf, add)
    problems = verify(gguf).problems
    assert "sub/extra.txt: sub is a symlink (not allowed in a package)" in problems


def test_unlisted_files_symlinks_and_fifos_are_refused_but_the_root_may_be_a_link(gguf: Path) -> None:
    link = gguf.parent / "link-to-pkg"
    link.symlink_to(gguf, target_is_directory=True)
    assert verify(link).ok  # the directory the user names may be a link; nothing below it
    (gguf / "notes.txt").write_text("sneaked in")
    (gguf / "evil").symlink_to("/etc/hostname")
    os.mkfifo(gguf / "pipe")
    problems = verify(gguf).problems
    assert sorted(problems) == ["evil: symlink (not allowed in a package)", "notes.txt: not in manifest",
                                "pipe: not a regular file"]  # fmt: skip


# ------------------------------------------------------------------ schema: one line, never a traceback
def _deep(n: int) -> bytes:
    return b'{"format": "gguf", "files": ' + b"[" * n + b"]" * n + b"}"


MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not json", b"<html>"),
    ("not utf-8", b'{"format": "\xff"}'),
    ("top-level list", b"[]"),
    ("top-level string", b'"manifest"'),
    ("top-level null", b"null"),
    ("files missing", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp"}'),
    ("files list", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": ["a.gguf"]}'),
    ("files null", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": null}'),
    ("files empty", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {}}'),
    ("entry string", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {"a.gguf": "x"}}'),
    ("entry no sha", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {"a.gguf": {"bytes": 1}}}'),
    ("bytes negative", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {"a.gguf": {"bytes": -1, "sha256": "' + b"0" * 64 + b'"}}}'),
    ("bytes string", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {"a.gguf": {"bytes": "1", "sha256": "' + b"0" * 64 + b'"}}}'),
    ("sha short", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {"a.gguf": {"bytes": 1, "sha256": "abc"}}}'),
    ("entry extra key", b'{"format": "gguf", "quant": "f16", "runtime": "llama.cpp", "files": {"a.gguf": {"bytes": 1, "sha256": "' + b"0" * 64 + b'", "path": "/etc"}}}'),
    ("format unknown", b'{"format": "tflite", "quant": "f16", "runtime": "x", "files": {"a": {"bytes": 1, "sha256": "' + b"0" * 64 + b'"}}}'),
    ("runtime mismatch", b'{"format": "gguf", "quant": "f16", "runtime": "onnxruntime-genai", "files": {"a.gguf": {"bytes": 1, "sha256": "' + b"0" * 64 + b'"}}}'),
    ("quant int", b'{"format": "gguf", "quant": 4, "runtime": "llama.cpp", "files": {"a.gguf": {"bytes": 1, "sha256": "' + b"0" * 64 + b'"}}}'),
    ("nesting bomb", _deep(100_000)),
    ("over 1 MiB", b'{"format": "gguf", "pad": "' + b"x" * (1 << 20) + b'"}'),
]  # fmt: skip


@pytest.mark.parametrize("name, raw", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_manifest_is_one_mismatch_line(gguf: Path, name: str, raw: bytes) -> None:
    (gguf / "manifest.json").write_bytes(raw)
    result = verify(gguf)
    assert not result.ok and len(result.problems) == 1 and result.problems[0].startswith("manifest.json: ")
    assert "\n" not in result.problems[0] and len(result.problems[0]) < 400
    code, lines = _cli_verify(gguf)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("MISMATCH manifest.json: "), lines


@pytest.mark.parametrize("kind", ["symlink", "directory", "missing"])
def test_a_manifest_that_is_not_a_regular_file(gguf: Path, kind: str) -> None:
    real = gguf.parent / "real-manifest.json"
    os.replace(gguf / "manifest.json", real)
    if kind == "symlink":
        (gguf / "manifest.json").symlink_to(real)
    elif kind == "directory":
        (gguf / "manifest.json").mkdir()
    problems = verify(gguf).problems
    assert len(problems) == 1 and problems[0].startswith("manifest.json: "), problems


# ------------------------------------------------------------------ essential files
def test_essential_files_are_required(tmp_path: Path) -> None:
    g = _package(tmp_path / "a", "gguf")
    (g / "prompt_template.json").unlink()
    (g / "second.gguf").write_bytes(b"GGUF")
    write_manifest(g, fmt="gguf", quant="f16", source_run=None, config_digest=None, source_accuracy=None)
    assert sorted(verify(g).problems) == [
        "expected exactly one top-level .gguf file in the manifest, found ['model-f16.gguf', 'second.gguf']",
        "prompt_template.json: missing from the manifest (gguf essential file)",
    ]
    o = _package(tmp_path / "b", "onnx")
    (o / "tokenizer_config.json").unlink()
    (o / "genai_config.json").write_text(json.dumps({"model": {"decoder": {"filename": "../model.onnx"}}}))
    write_manifest(o, fmt="onnx", quant="int4", source_run=None, config_digest=None, source_accuracy=None)
    assert sorted(verify(o).problems) == [
        "genai_config.json: names ../model.onnx, which is not a file of this package",
        "tokenizer_config.json: missing from the manifest (onnx essential file)",
    ]
    e = _package(tmp_path / "c", "executorch")
    (e / "model.pte").unlink()
    write_manifest(
        e, fmt="executorch", quant="8da4w", source_run=None, config_digest=None, source_accuracy=None
    )
    assert verify(e).problems == ["model.pte: missing from the manifest (executorch essential file)"]


def test_sizes_are_checked_before_hashing_and_bound_the_read(gguf: Path) -> None:
    with open(gguf / "model-f16.gguf", "ab") as f:
        f.write(b"\0" * 10)
    assert verify(gguf).problems == ["model-f16.gguf: 4110 bytes, manifest says 4100"]


def _set_template(pkg: Path, **fields: str) -> None:
    """Change prompt_template.json and re-hash: a package verified by its manifest, hostile in content."""
    tpl = json.loads((pkg / "prompt_template.json").read_text())
    tpl.update(fields)
    (pkg / "prompt_template.json").write_text(json.dumps(tpl))
    m = json.loads((pkg / "manifest.json").read_text())
    (pkg / "manifest.json").unlink()
    write_manifest(
        pkg, fmt=m["format"], quant=m["quant"], source_run=None, config_digest=None, source_accuracy=None
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("student_prompt", "Q: {question:>1500000000}"),  # str.format made a 1.5 GB string of this
        ("student_prompt", "Q: {question.__class__.__mro__}"),
        ("student_prompt", "Q: {question[0]}{question}"),
        ("student_prompt", "Q: {question} {0}"),
        ("student_prompt", "Q: {question!r}"),
        ("student_prompt", "Q: {question} {"),
        ("student_prompt", "Q: {question}" + "x" * 5000),
        ("forced_strategy_suffix", " [{strategy:>999999999}]:"),
        ("forced_strategy_suffix", " [{strategy.upper}]:"),
        ("forced_strategy_suffix", " [{question}]:"),
    ],
)
def test_package_templates_fill_only_question_and_strategy(gguf: Path, field: str, value: str) -> None:
    import resource

    from device_profiles.package import PackageError, read_package

    _set_template(gguf, **{field: value})
    assert verify(gguf).ok  # the hashes match: integrity is not intent
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PackageError, match=field):
        read_package(gguf)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000  # KiB: nothing was expanded
    res = CliRunner().invoke(main, ["bench", str(gguf), "--profile", "host"])
    assert res.exit_code == 2 and field in res.output and "Traceback" not in res.output, res.output


def test_package_templates_keep_escaped_braces(gguf: Path) -> None:
    from device_profiles.package import read_package

    _set_template(gguf, student_prompt="{{json}} Q: {question}", forced_strategy_suffix=" [{strategy}]:")
    assert read_package(gguf).prompt("2+2?", "cot") == "{json} Q: 2+2? [cot]:"
