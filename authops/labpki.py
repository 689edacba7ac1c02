"""The lab's certificate authority and the certificates it issues.

Only the lab and the tests use this module, because production certificates come
from a real CA (Let's Encrypt) and reach HAProxy through certs.combine. Keys are
ECDSA P-256, so making a CA and a server certificate takes a few milliseconds.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 90  # like Let's Encrypt, so the lab rehearses renewals
RENEW_BEFORE_DAYS = 30
# Certificates start a few minutes in the past so that a small clock step
# does not make a fresh certificate "not yet valid".
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return cert_pem(self.certificate)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    """Encode `key` as PKCS#8 PEM, encrypted with `password` when one is given."""
    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def make_authority(common_name: str = "authops lab CA") -> Authority:
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - BACKDATE)
        .not_valid_after(now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def load_or_create_authority(cert_path: Path, key_path: Path) -> Authority:
    """Load the CA from its files, or create it when either file is missing."""
    if cert_path.is_file() and key_path.is_file():
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return Authority(certificate, key)
    authority = make_authority()
    write_private(key_path, key_pem(authority.key))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(authority.pem)
    return authority


def subject_alternative_names(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def resolve_validity(
    not_before: datetime.datetime | None, not_after: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    """Fill in a leaf's missing validity dates.

    The defaults run from BACKDATE ago for LEAF_DAYS. When only `not_after` is
    given and it lies in the past, the start moves back to LEAF_DAYS before it,
    so the result is an expired certificate rather than an invalid one.
    """
    lifetime = datetime.timedelta(days=LEAF_DAYS)
    if not_before is None:
        not_before = now() - BACKDATE
        if not_after is not None and not_after <= not_before:
            not_before = not_after - lifetime
    if not_after is None:
        not_after = now() + lifetime
    return not_before, not_after


def issue(
    authority: Authority,
    names: list[str],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue a server certificate for `names` (DNS names, wildcards or IP addresses).

    The first name becomes the common name. Missing dates are filled in by
    `resolve_validity`, and a new key is generated unless `key` is given.
    """
    key = key or generate_key()
    not_before, not_after = resolve_validity(not_before, not_after)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(subject_alternative_names(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority.key.public_key()
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return certificate, key


def needs_renewal(cert_path: Path, names: list[str]) -> bool:
    """Return True when the certificate is missing, expiring soon, or lacks a name."""
    if not cert_path.is_file():
        return True
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if certificate.not_valid_after_utc - now() < datetime.timedelta(
        days=RENEW_BEFORE_DAYS
    ):
        return True
    wanted = subject_alternative_names(names)
    present = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    return set(wanted) != set(present)


def write_lineage_files(
    directory: Path,
    certificate: x509.Certificate,
    chain: x509.Certificate,
    private_key: bytes,
) -> None:
    """Write a certbot live folder (cert.pem, chain.pem, fullchain.pem, privkey.pem).

    `private_key` is PEM bytes, written as given with mode 600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert_pem(certificate))
    (directory / "chain.pem").write_bytes(cert_pem(chain))
    (directory / "fullchain.pem").write_bytes(cert_pem(certificate) + cert_pem(chain))
    write_private(directory / "privkey.pem", private_key)


def write_lineage(authority: Authority, names: list[str], directory: Path) -> bool:
    """Issue a certificate for `names` into a certbot live folder unless it is current.

    Returns True when it wrote new files.
    """
    if not needs_renewal(directory / "cert.pem", names):
        return False
    certificate, key = issue(authority, names)
    write_lineage_files(directory, certificate, authority.certificate, key_pem(key))
    return True
