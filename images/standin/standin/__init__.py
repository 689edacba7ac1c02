"""A small stand-in for authentik's server and worker (see the Dockerfile)."""

from pathlib import Path

VERSION_FILE = Path("/authentik/VERSION")


def version() -> str:
    try:
        return VERSION_FILE.read_text().strip()
    except OSError:
        return "unknown"
