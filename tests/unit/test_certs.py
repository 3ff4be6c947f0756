"""Development certificate: ECDSA P-256, SAN entries, key mode 0600, reuse while valid."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from server.certs import ensure_dev_certificate, make_dev_certificate


def _load(cert_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_path.read_bytes())


def test_dev_certificate_is_p256_with_dns_and_ip_names(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    make_dev_certificate(cert_path, key_path, days=30)
    cert = _load(cert_path)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    }
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=10)


def test_key_file_is_private(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    make_dev_certificate(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644


def test_ensure_creates_once_and_reuses_while_valid(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    cert_path, key_path = ensure_dev_certificate(certs)
    assert (cert_path.name, key_path.name) == ("dev-cert.pem", "dev-key.pem")
    first = cert_path.read_bytes()
    assert ensure_dev_certificate(certs) == (cert_path, key_path)
    assert cert_path.read_bytes() == first


def test_ensure_renews_an_expiring_or_broken_certificate(tmp_path: Path) -> None:
    cert_path, key_path = ensure_dev_certificate(tmp_path)
    first = cert_path.read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=29, hours=12)  # less than a day left
    ensure_dev_certificate(tmp_path, now=later)
    second = cert_path.read_bytes()
    assert second != first
    key_path.write_text("garbage")
    ensure_dev_certificate(tmp_path)
    assert cert_path.read_bytes() != second
    serialization.load_pem_private_key(key_path.read_bytes(), password=None)


def test_ensure_renews_when_a_hostname_is_missing(tmp_path: Path) -> None:
    cert_path, _ = ensure_dev_certificate(tmp_path)
    ensure_dev_certificate(tmp_path, hostnames=("localhost", "127.0.0.1", "::1", "alcove.test"))
    san = _load(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "alcove.test" in san.get_values_for_type(x509.DNSName)
