"""Test certificates made with `cryptography`: a CA and leaves with chosen names and dates."""

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return cert_pem(self.certificate)


@dataclass
class Leaf:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    ca: Authority

    @property
    def fullchain(self) -> bytes:
        return cert_pem(self.certificate) + self.ca.pem

    @property
    def privkey(self) -> bytes:
        return key_pem(self.key)


def make_ca() -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authops test CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - DAY)
        .not_valid_after(now() + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, certificate)


def issue(
    ca: Authority,
    names: list[str],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Leaf:
    """Issue a leaf for DNS `names`, valid from a day ago for 90 days unless given."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now() - DAY)
        .not_valid_after(not_after or now() + 90 * DAY)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Leaf(key, certificate, ca)


def write_lineage(directory: Path, leaf: Leaf, key: bytes | None = None) -> Path:
    """Write fullchain.pem and privkey.pem as certbot lays out a live folder."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fullchain.pem").write_bytes(leaf.fullchain)
    private = directory / "privkey.pem"
    private.touch(mode=0o600)
    private.write_bytes(key if key is not None else leaf.privkey)
    return directory
