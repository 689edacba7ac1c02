"""A throwaway certificate authority for tests: a CA and the certificates it issues.

Keys are ECDSA P-256, so making a CA and a server certificate takes milliseconds.
Every file is PEM; private keys are unencrypted and written with mode 600.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_LIFETIME = datetime.timedelta(days=30)
# Certificates start a minute in the past so that small clock steps do not
# make a fresh certificate "not yet valid".
BACKDATE = datetime.timedelta(minutes=1)


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    cert_path: Path
    directory: Path


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    cert_path: Path
    key_path: Path


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)


def write_cert(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_ca(directory: Path, name: str = "authops test CA") -> Authority:
    """Create a self-signed CA and write DIRECTORY/ca.pem (its certificate)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = now() - BACKDATE
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "ca.pem"
    write_cert(certificate, cert_path)
    return Authority(key, certificate, cert_path, directory)


def subject_alternative_names(names: list[str]) -> list[x509.GeneralName]:
    """Return an IP address entry for each address in `names` and a DNS entry for the rest."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def issue(
    ca: Authority,
    names: list[str],
    *,
    not_after: datetime.datetime | None = None,
    stem: str | None = None,
) -> Issued:
    """Issue a TLS server certificate for `names` and write STEM.pem and STEM.key.

    The files go to the CA's directory; STEM defaults to the first name.
    `not_after` sets the expiry (default: 30 days from now); a date in the
    past gives an expired certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start = now() - BACKDATE
    end = not_after or start + DEFAULT_LIFETIME
    if end <= start:
        start = end - DEFAULT_LIFETIME
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(subject_alternative_names(names)),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    stem = stem or names[0]
    cert_path = ca.directory / f"{stem}.pem"
    key_path = ca.directory / f"{stem}.key"
    write_cert(certificate, cert_path)
    write_key(key, key_path)
    return Issued(certificate, cert_path, key_path)
