"""authentik's release order, and whether an upgrade between two tags is allowed.

authentik supports no downgrade and no skipped major release: upgrade one
YEAR.MONTH release at a time. The known order comes from authentik's release
notes up to 2026.8; a major newer than the last known one is allowed only
from the last known one, with a warning, because its place is not known yet.
"""

from dataclasses import dataclass

from authops.validate import parse_tag

# Major releases in upgrade order (authentik 2025.10 and later).
KNOWN_MAJORS: tuple[tuple[int, int], ...] = (
    (2025, 10),
    (2025, 12),
    (2026, 2),
    (2026, 5),
    (2026, 8),
)


@dataclass
class UpgradeDecision:
    allowed: bool
    reason: str
    warning: str = ""


def major_name(major: tuple[int, int]) -> str:
    return f"{major[0]}.{major[1]}"


def next_major(major: tuple[int, int]) -> tuple[int, int] | None:
    """Return the major release that follows `major`, or None when it is not known."""
    if major not in KNOWN_MAJORS:
        return None
    index = KNOWN_MAJORS.index(major)
    return KNOWN_MAJORS[index + 1] if index + 1 < len(KNOWN_MAJORS) else None


def decide_upgrade(current_tag: str, target_tag: str) -> UpgradeDecision:
    """Decide whether the stack may go from `current_tag` to `target_tag`."""
    current = parse_tag(current_tag)
    target = parse_tag(target_tag)
    if target is None:
        return UpgradeDecision(
            False,
            f"{target_tag!r} is not an authentik release tag: use YEAR.MONTH.PATCH",
        )
    if current is None:
        return UpgradeDecision(
            False,
            f"the running tag {current_tag!r} is not a release tag: upgrade by hand",
        )
    if target == current:
        return UpgradeDecision(True, f"{target_tag} is already the configured release")
    if target < current:
        return UpgradeDecision(
            False,
            f"{target_tag} is older than {current_tag}: authentik does not support downgrades; restore a backup",
        )
    current_major, target_major = current[:2], target[:2]
    if target_major == current_major:
        return UpgradeDecision(
            True, f"patch upgrade within {major_name(current_major)}"
        )
    following = next_major(current_major)
    if following == target_major:
        return UpgradeDecision(
            True, f"next major release after {major_name(current_major)}"
        )
    if following is None and current_major == KNOWN_MAJORS[-1]:
        return UpgradeDecision(
            True,
            f"{major_name(target_major)} follows the last known release",
            warning=f"check authentik's release notes that no release lies between {current_tag} and {target_tag}",
        )
    if following is None:
        return UpgradeDecision(
            False,
            f"{current_tag} is not a known release: upgrade by hand, one release at a time",
        )
    return UpgradeDecision(
        False,
        f"{current_tag} -> {target_tag} skips a major release: upgrade to {major_name(following)} first "
        f"(authentik upgrades one release at a time)",
    )
