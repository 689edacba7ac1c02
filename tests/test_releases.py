"""Upgrade rules: no downgrade, no skipped major release, parsable tags only."""

import pytest

from authops.releases import decide_upgrade

CASES = [
    ("2025.10.3", "2025.10.4", True, "patch"),
    ("2025.10.3", "2025.12.1", True, "next major"),
    ("2025.12.1", "2026.2.0", True, "next major"),
    ("2026.5.1", "2026.8.0", True, "next major"),
    ("2025.10.3", "2025.10.3", True, "already"),
    ("2026.8.2", "2026.11.0", True, "last known"),
    ("2025.10.3", "2026.2.0", False, "upgrade to 2025.12 first"),
    ("2025.10.3", "2026.5.0", False, "upgrade to 2025.12 first"),
    ("2025.12.1", "2025.10.3", False, "downgrades"),
    ("2025.10.4", "2025.10.3", False, "downgrades"),
    ("2025.10.3", "latest", False, "not an authentik release"),
    ("2025.10.3", "2025.12", True, "next major"),
    ("2025.10.3", "v2025.12.1", False, "not an authentik release"),
    ("2025.11.0", "2025.12.0", False, "not a known release"),
]


@pytest.mark.parametrize(("current", "target", "allowed", "text"), CASES)
def test_upgrade_decision(current, target, allowed, text):
    decision = decide_upgrade(current, target)
    assert decision.allowed is allowed
    assert text in decision.reason


def test_beyond_known_releases_warns():
    assert "release notes" in decide_upgrade("2026.8.0", "2026.11.0").warning
