"""Files in /tmp where the running process records its state for `ak healthcheck`."""

import json
import os
import time
from pathlib import Path

MODE_FILE = Path("/tmp/authentik-mode")
WORKER_HEALTH_FILE = Path("/tmp/authentik-worker-health.json")


def write_mode(mode: str) -> None:
    MODE_FILE.write_text(mode + "\n")


def read_mode() -> str:
    try:
        return MODE_FILE.read_text().strip()
    except OSError:
        return ""


def write_worker_health(error: str | None) -> None:
    """Record the worker's last database check, replacing the file atomically."""
    record = {"time": time.time(), "ok": error is None, "error": error}
    temporary = WORKER_HEALTH_FILE.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, WORKER_HEALTH_FILE)


def read_worker_health() -> dict | None:
    try:
        return json.loads(WORKER_HEALTH_FILE.read_text())
    except (OSError, ValueError):
        return None
