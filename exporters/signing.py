"""Detached ed25519 signatures over a package's manifest.json (the `cryptography` package).

The manifest holds the sha256 of every file and `verify` refuses files it does not list, so one signature
over its exact bytes covers the whole package. `manifest.sig` is the raw 64-byte signature, which openssl
checks too:

    openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in manifest.json -sigfile manifest.sig

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), as `edge-distill keygen` or openssl write:

    openssl genpkey -algorithm ed25519 -out KEY && openssl pkey -in KEY -pubout -out KEY.pub

A public key may also be an OpenSSH `ssh-ed25519 AAAA...` line.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_distill.io import atomic_path
from exporters.errors import ExportError
from exporters.formats import MANIFEST, SIGNATURE

SIGNATURE_BYTES = 64
MAX_KEY_BYTES = 16 << 10  # a PEM ed25519 key is ~120 bytes; anything large is not a key


def _read_key_file(path: str | Path, what: str) -> bytes:
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_KEY_BYTES + 1)
    except OSError as e:
        raise ExportError(f"{what} {p}: cannot read it ({e.strerror or e})") from None
    if len(data) > MAX_KEY_BYTES:
        raise ExportError(f"{what} {p}: larger than {MAX_KEY_BYTES} bytes, not a key file")
    return data


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ExportError(
            f"signing key {path}: encrypted; give an unencrypted ed25519 PEM key (keep it in a protected "
            "location instead) or decrypt it with `openssl pkey -in KEY -out KEY.plain`"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ExportError(f"signing key {path}: not a PEM private key ({str(e)[:120]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ExportError(f"signing key {path}: a {type(key).__name__}, expected an ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    data = _read_key_file(path, "public key")
    try:
        key = (
            serialization.load_ssh_public_key(data.strip())
            if data.lstrip().startswith(b"ssh-")
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ExportError(f"public key {path}: not a PEM or OpenSSH public key ({str(e)[:120]})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ExportError(f"public key {path}: a {type(key).__name__}, expected an ed25519 key")
    return key


def generate_keypair(private_path: str | Path) -> tuple[Path, Path]:
    """Write a new ed25519 key pair: PRIVATE (PEM, mode 0600) and PRIVATE.pub. Never overwrites a file."""
    priv = Path(private_path).expanduser()
    pub = priv.with_name(priv.name + ".pub")
    for p in (priv, pub):
        if p.exists() or p.is_symlink():
            raise ExportError(f"{p} exists: choose another name (a key is never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    priv.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + 0600: the private key is never readable by others, not even for a moment
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with atomic_path(pub) as tmp:
        tmp.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return priv, pub


def sign_manifest(pkg: str | Path, key: Ed25519PrivateKey) -> Path:
    """Write `pkg/manifest.sig` over the current bytes of `pkg/manifest.json` (atomically)."""
    pkg = Path(pkg)
    try:
        raw = (pkg / MANIFEST).read_bytes()
    except OSError as e:
        raise ExportError(f"{pkg}: cannot read manifest.json to sign it ({e.strerror or e})") from None
    with atomic_path(pkg / SIGNATURE) as tmp:
        tmp.write_bytes(key.sign(raw))
    return pkg / SIGNATURE


def signature_problem(manifest_raw: bytes, sig: bytes | None, key: Ed25519PublicKey) -> str | None:
    """None when `sig` is a valid signature of `manifest_raw` by `key`, else the problem in a few words."""
    if sig is None:
        return f"{SIGNATURE}: missing (the package is not signed)"
    if len(sig) != SIGNATURE_BYTES:
        return f"{SIGNATURE}: {len(sig)} bytes, an ed25519 signature has {SIGNATURE_BYTES}"
    try:
        key.verify(sig, manifest_raw)
    except InvalidSignature:
        return f"{SIGNATURE}: not a valid signature of manifest.json by the given public key"
    return None
