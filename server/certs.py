"""Development TLS certificate for localhost (``alcove certs dev``).

A self-signed ECDSA P-256 certificate with a subjectAltName for each hostname (DNS names and IP addresses),
valid for a few days. It is for development and tests only; production uses a real certificate (ACME through a
reverse proxy, or ``ALCOVE_TLS_CERT``/``ALCOVE_TLS_KEY``). The private key is written with mode 0600.

No side effects on import.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEV_CERT_NAME = "dev-cert.pem"
DEV_KEY_NAME = "dev-key.pem"
DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
RENEW_BEFORE = dt.timedelta(days=1)
"""ensure_dev_certificate makes a new certificate when the old one has less than this left."""


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, mode)


def make_dev_certificate(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    days: int = 30,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Write a new self-signed certificate (PEM, 0644) and its private key (PEM PKCS#8, 0600)."""
    if not hostnames:
        raise ValueError("at least one hostname is required")
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Alcove development"),
        x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0]),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san_entry(h) for h in hostnames]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key first: a certificate never exists on disk without its key.
    _write_atomic(Path(key_path), key_pem, 0o600)
    _write_atomic(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert


def _usable(cert_path: Path, key_path: Path, hostnames: Sequence[str], now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE <= now or cert.not_valid_before_utc > now:
        return False
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, pub) != cert.public_key().public_bytes(
        serialization.Encoding.PEM, pub
    ):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(map(_san_entry, hostnames)) <= set(san)


def ensure_dev_certificate(
    directory: str | os.PathLike[str],
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    days: int = 30,
    *,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """``<dir>/dev-cert.pem`` and ``<dir>/dev-key.pem``: reused while valid (and matching), else made anew."""
    directory = Path(directory)
    cert_path, key_path = directory / DEV_CERT_NAME, directory / DEV_KEY_NAME
    now = now or dt.datetime.now(dt.UTC)
    if not _usable(cert_path, key_path, hostnames, now):
        make_dev_certificate(cert_path, key_path, hostnames, days, now=now)
    return cert_path, key_path
