"""SCRAM-SHA-256 password verifiers as PostgreSQL stores them in pg_authid.

A verifier reads `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
(RFC 5802, RFC 7677). Recomputing it with the stored salt and iteration count
shows whether a password matches, without logging in and without the server
ever seeing the password.
"""

import base64
import hashlib
import hmac
import re
import stringprep
import unicodedata
from dataclasses import dataclass

VERIFIER_PATTERN = re.compile(
    r"^SCRAM-SHA-256\$(?P<iterations>\d+):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored_key>[A-Za-z0-9+/=]+):(?P<server_key>[A-Za-z0-9+/=]+)$"
)


@dataclass(frozen=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def parse_verifier(text: str | None) -> Verifier | None:
    """Parse a stored SCRAM-SHA-256 verifier; None for an MD5 hash, no password or garbage."""
    match = VERIFIER_PATTERN.match(text or "")
    if not match:
        return None
    return Verifier(
        iterations=int(match["iterations"]),
        salt=base64.b64decode(match["salt"]),
        stored_key=base64.b64decode(match["stored_key"]),
        server_key=base64.b64decode(match["server_key"]),
    )


def compute_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """Return (StoredKey, ServerKey) for a password, as RFC 5802 defines them."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def password_matches(password: str, stored: str | None) -> bool:
    """Return whether `password` authenticates against a stored SCRAM verifier."""
    verifier = parse_verifier(stored)
    if verifier is None:
        return False
    stored_key, server_key = compute_keys(password, verifier.salt, verifier.iterations)
    return hmac.compare_digest(stored_key, verifier.stored_key) and hmac.compare_digest(
        server_key, verifier.server_key
    )


def saslprep(password: str) -> bytes:
    """Normalise a password as PostgreSQL does before hashing it (RFC 4013 SASLprep).

    Follows PostgreSQL's src/common/saslprep.c: pure ASCII passes unchanged, the
    prohibition and bidi checks look at the mapped characters before NFKC, and
    a rejected or empty result falls back to the raw UTF-8 bytes.
    """
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in password
        if not stringprep.in_table_b1(char)
    )
    if not mapped:
        return raw
    if any(is_prohibited(char) for char in mapped) or not bidi_allowed(mapped):
        return raw
    return unicodedata.normalize("NFKC", mapped).encode("utf-8")


def is_prohibited(char: str) -> bool:
    """Return whether RFC 4013 prohibits the character, unassigned code points included."""
    return any(
        check(char)
        for check in (
            stringprep.in_table_a1,
            stringprep.in_table_c12,
            stringprep.in_table_c21_c22,
            stringprep.in_table_c3,
            stringprep.in_table_c4,
            stringprep.in_table_c5,
            stringprep.in_table_c6,
            stringprep.in_table_c7,
            stringprep.in_table_c8,
            stringprep.in_table_c9,
        )
    )


def bidi_allowed(text: str) -> bool:
    """Apply RFC 3454 section 6: right-to-left text must not mix in left-to-right."""
    if not any(stringprep.in_table_d1(char) for char in text):
        return True
    if any(stringprep.in_table_d2(char) for char in text):
        return False
    return stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])
