"""Run tasks as a user runs them against the lab: `invoke ARGS` from the checkout."""

import os
import subprocess
import sys
from pathlib import Path

from authops import REPO_ROOT


def invoke(
    *args: str, env_dir: Path | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run `invoke ARGS` without OPS_ENV; with `env_dir`, env files come from there."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OPS_ENV", "OPS_ENV_DIR")
    }
    if env_dir is not None:
        environment["OPS_ENV_DIR"] = str(env_dir)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
