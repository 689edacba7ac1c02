"""The machine and software versions that a benchmark run measured on."""

import glob
import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from authops import REPO_ROOT


def command_output(*command: str) -> str:
    """Return the first line a command prints, or `unknown` when it cannot run."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=30, cwd=REPO_ROOT
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0].strip() if lines and result.returncode == 0 else "unknown"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match[1].strip() if match else "unknown"


def memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return round(int(match[1]) / 1024 / 1024, 1) if match else None


def debian_version() -> str:
    try:
        return "Debian " + Path("/etc/debian_version").read_text().strip()
    except OSError:
        return "unknown"


def postgres_version() -> str:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return command_output(binaries[-1], "--version") if binaries else "unknown"


def git_commit() -> str:
    commit = command_output("git", "rev-parse", "--short", "HEAD")
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    ).stdout.strip()
    return f"{commit} (with uncommitted changes)" if dirty else commit


def describe() -> dict:
    """Return the facts that the report prints about this machine and run."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "os": debian_version(),
        "python": platform.python_version(),
        "haproxy": command_output("haproxy", "-v"),
        "docker_client": command_output(
            "docker", "version", "--format", "{{.Client.Version}}"
        ),
        "docker_daemon": command_output(
            "docker", "version", "--format", "{{.Server.Version}}"
        ),
        "postgres": postgres_version(),
        "commit": git_commit(),
    }
