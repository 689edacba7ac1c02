"""Test certificates held in memory: a CA and leaves with chosen names and dates.

The keys and certificates come from authops.labpki. This module adds what only
tests need: a leaf that carries its CA and PEM bytes, and a live folder whose
private key may be replaced by a wrong or encrypted one.
"""

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from authops import labpki
from authops.labpki import Authority

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Leaf:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca: Authority

    @property
    def fullchain(self) -> bytes:
        return labpki.cert_pem(self.certificate) + self.ca.pem

    @property
    def privkey(self) -> bytes:
        return labpki.key_pem(self.key)


def make_ca() -> Authority:
    return labpki.make_authority("authops test CA")


def issue(
    ca: Authority,
    names: list[str],
    *,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Leaf:
    """Issue a leaf for `names`, with missing dates filled in by labpki."""
    certificate, key = labpki.issue(
        ca, names, not_before=not_before, not_after=not_after
    )
    return Leaf(certificate, key, ca)


def write_lineage(directory: Path, leaf: Leaf, key: bytes | None = None) -> Path:
    """Write `leaf` as a certbot live folder, storing `key` (PEM) if one is given."""
    private_key = key if key is not None else leaf.privkey
    labpki.write_lineage_files(
        directory, leaf.certificate, leaf.ca.certificate, private_key
    )
    return directory
