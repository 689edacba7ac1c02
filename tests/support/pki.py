"""Test certificates on disk, for servers and clients that take file paths.

make_ca writes DIRECTORY/ca.pem, and issue writes STEM.pem and STEM.key (mode
600) next to it. The keys and certificates come from authops.labpki.
"""

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from authops import labpki


@dataclass(frozen=True)
class Authority(labpki.Authority):
    """A CA stored at `cert_path`, whose leaves are written to `directory`."""

    cert_path: Path
    directory: Path


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    cert_path: Path
    key_path: Path


def make_ca(directory: Path, name: str = "authops test CA") -> Authority:
    """Create a self-signed CA and write DIRECTORY/ca.pem (its certificate)."""
    authority = labpki.make_authority(name)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "ca.pem"
    cert_path.write_bytes(authority.pem)
    return Authority(authority.certificate, authority.key, cert_path, directory)


def issue(
    ca: Authority,
    names: list[str],
    *,
    not_after: datetime.datetime | None = None,
    stem: str | None = None,
) -> Issued:
    """Issue a TLS server certificate for `names` and write STEM.pem and STEM.key.

    The files go to the CA's directory; STEM defaults to the first name.
    A `not_after` in the past gives an expired certificate.
    """
    certificate, key = labpki.issue(ca, names, not_after=not_after)
    stem = stem or names[0]
    cert_path = ca.directory / f"{stem}.pem"
    key_path = ca.directory / f"{stem}.key"
    cert_path.write_bytes(labpki.cert_pem(certificate))
    labpki.write_private(key_path, labpki.key_pem(key))
    return Issued(certificate, cert_path, key_path)
