"""The consortium's small certificate authority: one CA, TLS server certificates signed by it.

The SuperLink and the release service present a server certificate; sites and researchers trust
the CA file. The subject alternative names must hold every name a client dials (the most common
TLS failure in Flower deployments is a certificate without the address that is used), so the
loopback address and `localhost` are always added next to the host names asked for.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import check_writable, write_public, write_secret

CA_DAYS = 3650
SERVER_DAYS = 397


@dataclass(frozen=True)
class ServerCertificate:
    cert_pem: bytes
    key_pem: bytes
    names: tuple[str, ...]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedkr consortium"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_ca(common_name: str = "fedkr consortium CA", days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) of a new self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def subject_names(hosts: list[str]) -> tuple[str, ...]:
    """The names a server certificate covers: those asked for, plus loopback, without repeats."""
    names: list[str] = []
    for host in [*hosts, "localhost", "127.0.0.1"]:
        host = host.strip()
        if host and host not in names:
            names.append(host)
    return tuple(names)


def new_server_certificate(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: list[str], days: int = SERVER_DAYS) -> ServerCertificate:
    """A TLS server certificate signed by the CA, valid for `hosts` (DNS names or IP addresses)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    names = subject_names(hosts)
    sans: list[x509.GeneralName] = []
    for host in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return ServerCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), names)


def write_server_certificate(directory: Path, stem: str, cert: ServerCertificate, *, overwrite: bool = False) -> tuple[Path, Path]:
    """`<stem>.pem` and `<stem>.key` in `directory`, both checked before either is written (`keys.write_file_atomic`)."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    check_writable(cert_path, overwrite=overwrite)
    check_writable(key_path, overwrite=overwrite)
    write_public(cert_path, cert.cert_pem, overwrite=overwrite)
    write_secret(key_path, cert.key_pem, overwrite=overwrite)
    return cert_path, key_path


def certificate_names(cert_pem: bytes) -> list[str]:
    """The subject alternative names of a certificate, for troubleshooting messages."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in sans.get_values_for_type(x509.DNSName)] + [str(v) for v in sans.get_values_for_type(x509.IPAddress)]


def certificate_expiry(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
