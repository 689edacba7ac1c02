"""Checks of a TLS certificate chain and its private key, with `cryptography`.

A chain passes when its first certificate is valid now, its public key
matches the private key, and its subjectAltName covers the domain.
Certificates that expire within WARN_DAYS pass with a warning.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

WARN_DAYS = 21
PEM_BLOCK = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n.*?-----END (?P=label)-----\r?\n?",
    re.DOTALL,
)
KEY_LABELS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY")


@dataclass
class Inspection:
    """The result of checking one chain and key: facts, errors and warnings."""

    names: list[str] = field(default_factory=list)
    not_after: datetime | None = None
    days_left: int | None = None
    key_matches: bool | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """Return the facts in one line: names, expiry and key match."""
        parts = [", ".join(self.names) or "no subjectAltName"]
        if self.not_after is not None:
            parts.append(
                f"expires {self.not_after:%Y-%m-%d %H:%M} UTC ({self.days_left} days left)"
            )
        if self.key_matches is not None:
            parts.append("key matches" if self.key_matches else "key does NOT match")
        return "; ".join(parts)


def pem_blocks(data: bytes, labels: tuple[bytes, ...]) -> list[bytes]:
    """Return the PEM blocks of `data` whose label is one of `labels`, in file order."""
    return [
        match[0] if match[0].endswith(b"\n") else match[0] + b"\n"
        for match in PEM_BLOCK.finditer(data)
        if match["label"] in labels
    ]


def load_chain(data: bytes) -> list[x509.Certificate]:
    return [
        x509.load_pem_x509_certificate(block)
        for block in pem_blocks(data, (b"CERTIFICATE",))
    ]


def load_key(data: bytes):
    """Return the first private key in `data`, or None if it contains none.

    Raises ValueError for an encrypted or unreadable key: HAProxy cannot load
    an encrypted key without a passphrase either.
    """
    if b"ENCRYPTED PRIVATE KEY" in data:
        raise ValueError("the private key is encrypted: HAProxy needs it unencrypted")
    blocks = pem_blocks(data, KEY_LABELS)
    if not blocks:
        return None
    return serialization.load_pem_private_key(blocks[0], password=None)


def public_key_bytes(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(certificate: x509.Certificate, private_key) -> bool:
    """Return whether the certificate's public key belongs to `private_key`."""
    return public_key_bytes(certificate.public_key()) == public_key_bytes(
        private_key.public_key()
    )


def subject_alt_names(certificate: x509.Certificate) -> list[str]:
    """Return the DNS names and IP addresses of the subjectAltName extension."""
    try:
        extension = certificate.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        )
    except x509.ExtensionNotFound:
        return []
    names = extension.value.get_values_for_type(x509.DNSName)
    addresses = extension.value.get_values_for_type(x509.IPAddress)
    return [*names, *(str(address) for address in addresses)]


def name_matches(pattern: str, domain: str) -> bool:
    """Return whether one subjectAltName entry covers `domain` (RFC 6125 rules).

    A wildcard is only a whole left-most label: `*.example.com` covers
    `sso.example.com` but neither `example.com` nor `a.sso.example.com`.
    """
    pattern = pattern.lower().rstrip(".")
    domain = domain.lower().rstrip(".")
    if is_ip_address(domain) or is_ip_address(pattern):
        return (
            is_ip_address(pattern)
            and is_ip_address(domain)
            and (ipaddress.ip_address(pattern) == ipaddress.ip_address(domain))
        )
    if not pattern.startswith("*."):
        return "*" not in pattern and pattern == domain
    suffix = pattern[2:]
    label, _, rest = domain.partition(".")
    return bool(label) and "*" not in suffix and rest == suffix


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def covers(certificate: x509.Certificate, domain: str) -> bool:
    return any(name_matches(name, domain) for name in subject_alt_names(certificate))


def inspect(
    chain_pem: bytes,
    key_pem: bytes,
    domain: str | None = None,
    now: datetime | None = None,
) -> Inspection:
    """Check a chain (leaf first) and a private key; `domain` None skips the name check."""
    result = Inspection()
    try:
        chain = load_chain(chain_pem)
    except ValueError as error:
        result.errors.append(f"the certificate does not parse: {error}")
        return result
    if not chain:
        result.errors.append("no certificate found (no BEGIN CERTIFICATE block)")
        return result
    leaf = chain[0]
    result.names = subject_alt_names(leaf)
    check_validity(leaf, now or datetime.now(UTC), result)
    check_key(leaf, key_pem, result)
    if domain is not None and not covers(leaf, domain):
        names = ", ".join(result.names) or "none"
        result.errors.append(
            f"the certificate does not cover {domain} (its subjectAltName names: {names})"
        )
    check_chain_order(chain, result)
    return result


def check_validity(leaf: x509.Certificate, now: datetime, result: Inspection) -> None:
    result.not_after = leaf.not_valid_after_utc
    result.days_left = (leaf.not_valid_after_utc - now).days
    if now < leaf.not_valid_before_utc:
        result.errors.append(
            f"the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check the clock"
        )
    elif now >= leaf.not_valid_after_utc:
        result.errors.append(
            f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renew it"
        )
    elif result.days_left < WARN_DAYS:
        result.warnings.append(
            f"the certificate expires in {result.days_left} days (under {WARN_DAYS}): check that renewal runs"
        )


def check_key(leaf: x509.Certificate, key_pem: bytes, result: Inspection) -> None:
    try:
        key = load_key(key_pem)
    except (ValueError, TypeError) as error:
        result.errors.append(f"the private key does not load: {error}")
        return
    if key is None:
        result.errors.append("no private key found (no BEGIN PRIVATE KEY block)")
        return
    result.key_matches = key_matches(leaf, key)
    if not result.key_matches:
        result.errors.append(
            "the private key does not match the certificate: use the privkey.pem of the same lineage"
        )


def check_chain_order(chain: list[x509.Certificate], result: Inspection) -> None:
    """Warn when a certificate is not followed by its issuer (clients may then fail)."""
    for child, parent in zip(chain, chain[1:], strict=False):
        if child.issuer != parent.subject:
            result.warnings.append(
                f"the chain is out of order: {child.subject.rfc4514_string()} is not issued by "
                f"the next certificate, {parent.subject.rfc4514_string()}"
            )
            return


def combined_pem(chain_pem: bytes, key_pem: bytes) -> bytes:
    """Return the file HAProxy loads: the chain as given, then the key."""
    chain = chain_pem if chain_pem.endswith(b"\n") else chain_pem + b"\n"
    key = key_pem if key_pem.endswith(b"\n") else key_pem + b"\n"
    return chain + key
