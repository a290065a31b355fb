"""HTTPS for the web app: browsers give WebCrypto (which signs annotations) only to a secure
context, so anything but localhost is served over TLS.

An operator gives a certificate and key (`--tls-cert`, `--tls-key`), or the node makes a
self-signed one (ECDSA P-256, a year, for the host names and addresses it is asked to serve)
and keeps it in its data folder, so the fingerprint a user checked stays the same across
restarts. The SHA-256 fingerprint is what a user compares with the browser's before they
accept the certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["TlsError", "TlsFiles", "check_plain_http", "fingerprint", "self_signed", "tls_files"]

CERT_NAME, KEY_NAME = "web-cert.pem", "web-key.pem"
VALID_DAYS = 365


class TlsError(ValueError):
    """TLS cannot be set up as asked; one line."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the certificate (DER), colon-separated hex
    created: bool  # made now (self-signed), not given or reused


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plain_http(host: str) -> None:
    """Plain http only on a loopback address: elsewhere browsers refuse WebCrypto, and
    passwords would cross the network in the clear."""
    if not is_loopback(host):
        raise TlsError(f"plain http is served on localhost only; for host {host[:60]} give "
                       f"--tls-cert and --tls-key, or --tls-self-signed")


def fingerprint(cert_pem: bytes) -> str:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsError("the certificate file is not a PEM certificate") from None
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if host in ("", "0.0.0.0", "::", "localhost", "127.0.0.1"):
        return names
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names


def self_signed(folder: Path, host: str, now: datetime.datetime | None = None) -> TlsFiles:
    """The folder's self-signed certificate, made on first use (the key readable by its owner
    only); reused as long as it is valid."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_NAME, folder / KEY_NAME
    now = now or datetime.datetime.now(datetime.UTC)
    if cert_path.exists() and key_path.exists():
        pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        if cert.not_valid_after_utc > now + datetime.timedelta(days=1):
            return TlsFiles(cert_path, key_path, fingerprint(pem), created=False)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "phalanx annotation node")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(pem)
    return TlsFiles(cert_path, key_path, fingerprint(pem), created=True)


def tls_files(cert: Path | None, key: Path | None, *, self_signed_in: Path | None,
              host: str) -> TlsFiles | None:
    """The operator's files, a self-signed pair in `self_signed_in`, or None (plain http,
    allowed on loopback only)."""
    if (cert is None) != (key is None):
        raise TlsError("--tls-cert and --tls-key go together")
    if cert is not None and key is not None:
        for path in (cert, key):
            if not path.is_file():
                raise TlsError(f"{str(path)[:200]}: no such file")
        return TlsFiles(cert, key, fingerprint(cert.read_bytes()), created=False)
    if self_signed_in is not None:
        return self_signed(self_signed_in, host)
    check_plain_http(host)
    return None
