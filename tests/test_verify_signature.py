"""Detached ed25519 package signatures: keygen, export/sign, verify and bench with --public-key."""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_verify import _package

from device_profiles.package import PackageError, read_package
from edge_distill.cli import main
from exporters import ExportError, verify
from exporters.signing import generate_keypair, load_private_key, sign_manifest


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    code, out = run("keygen", str(tmp_path / "keys" / "release"))
    assert code == 0, out
    return tmp_path / "keys" / "release", tmp_path / "keys" / "release.pub"


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    keys: tuple[Path, Path],
) -> None:
    priv, pub = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = priv.read_bytes()
    code, out = run("keygen", str(priv))
    assert code == 2 and "exists" in out and priv.read_bytes() == before


def test_sign_then_verify_with_the_public_key(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    pkg = _package(tmp_path, "gguf")
    code, out = run("verify", str(pkg), "--public-key", str(pub))
    assert code == 1 and "MISMATCH manifest.sig: missing (the package is not signed)" in out
    code, out = run("sign", str(pkg), "--key", str(priv))
    assert code == 0 and (pkg / "manifest.sig").stat().st_size == 64
    code, out = run("verify", str(pkg), "--public-key", str(pub))
    assert code == 0 and "signature valid" in out
    assert verify(pkg).ok and verify(pkg).signed is None  # without a key the signature is not judged

    other_priv, other_pub = generate_keypair(tmp_path / "other")
    assert not verify(pkg, public_key=other_pub).ok  # another signer
    # any change to the manifest (here: a file re-hashed into it) breaks the signature
    (pkg / "README.md").write_text("# a different card\n")
    from exporters.package import write_manifest

    write_manifest(pkg, fmt="gguf", quant="f16", source_run=None, config_digest=None, source_accuracy=None)
    assert verify(pkg).ok
    assert verify(pkg, public_key=pub).problems == [
        "manifest.sig: not a valid signature of manifest.json by the given public key"
    ]
    (pkg / "manifest.sig").write_bytes(b"\0" * 10)
    assert verify(pkg, public_key=pub).problems == ["manifest.sig: 10 bytes, an ed25519 signature has 64"]


def test_signing_refuses_a_package_that_does_not_verify(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    pkg = _package(tmp_path, "gguf")
    (pkg / "tokenizer.json").write_text("changed")
    code, out = run("sign", str(pkg), "--key", str(keys[0]))
    assert code == 1 and "MISMATCH tokenizer.json" in out and not (pkg / "manifest.sig").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b"x" * 100_000],
)
def test_a_bad_key_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    pkg = _package(tmp_path, "gguf")
    code, out = run("verify", str(pkg), "--public-key", str(bad))
    assert code == 2 and out.startswith(f"error: public key {bad}")
    with pytest.raises(ExportError, match="signing key"):
        load_private_key(bad)


def test_an_rsa_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = tmp_path / "rsa.pem"
    p.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))  # fmt: skip
    with pytest.raises(ExportError, match="expected an ed25519 key"):
        load_private_key(p)


def test_the_bench_refuses_unsigned_and_badly_signed_packages(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    priv, pub = keys
    pkg = _package(tmp_path, "gguf")
    code, out = run("bench", str(pkg), "--public-key", str(pub), "--out", str(tmp_path / "bench"))
    assert code == 2 and "manifest.sig: missing (the package is not signed)" in out
    assert not (tmp_path / "bench").exists()  # refused before any measurement
    sign_manifest(pkg, load_private_key(priv))
    assert read_package(pkg, public_key=pub).format == "gguf"
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(PackageError, match="not a valid signature"):
        read_package(pkg, public_key=other_pub)


def test_an_openssh_public_key_line_is_accepted(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from cryptography.hazmat.primitives import serialization

    priv, _ = keys
    pkg = _package(tmp_path, "gguf")
    key = load_private_key(priv)
    sign_manifest(pkg, key)
    ssh = tmp_path / "id.pub"
    ssh.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" me@host\n"
    )
    assert verify(pkg, public_key=ssh).signed is True


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_openssl_checks_the_same_signature(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """The documented openssl commands interoperate: a key pair made by openssl signs, openssl verifies ours."""
    priv, pub = keys
    pkg = _package(tmp_path, "gguf")
    sign_manifest(pkg, load_private_key(priv))
    check = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
             "-in", str(pkg / "manifest.json"), "-sigfile", str(pkg / "manifest.sig")]  # fmt: skip
    proc = subprocess.run(check, capture_output=True, text=True, check=False)
    if "rawin" in proc.stderr and proc.returncode != 0:
        pytest.skip(f"this openssl has no -rawin: {proc.stderr[:100]}")
    assert proc.returncode == 0, proc.stderr
    ossl = tmp_path / "ossl.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ossl)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(ossl), "-pubout", "-out", str(ossl) + ".pub"], check=True)
    sign_manifest(pkg, load_private_key(ossl))
    assert verify(pkg, public_key=str(ossl) + ".pub").signed is True


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_a_real_export_signed_in_its_atomic_step(
    tiny_model_dir: Path, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    from exporters import export_model

    out = export_model(tiny_model_dir, tmp_path / "export" / "gguf-f16", "gguf", "f16", threads=1,
                       parity_tokens=2, parity_prompts=1, check_transformers=False,
                       sign_key=load_private_key(keys[0]))  # fmt: skip
    result = verify(out, public_key=keys[1])
    assert result.ok and result.signed, result.problems
    assert "manifest.sig" not in json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["gguf-f16"]  # no work dirs left
