"""Env files for the bench: copies of env/lab.env with some keys changed.

The copies live in a folder of the bench's own (selected with OPS_ENV_DIR),
so env/lab.env itself is never edited.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from authops.envfile import EXAMPLE_DIR, parse_text
from authops.settings import Settings, load_settings

LAB_ENV = EXAMPLE_DIR / "lab.env"


def lab_values() -> dict[str, str]:
    """Return env/lab.env as it is now (another process may have changed it)."""
    return parse_text(LAB_ENV.read_text()).values()


def write_env(directory: Path, name: str, values: dict[str, str]) -> Path:
    """Write DIRECTORY/NAME.env with `values`, mode 600 (it contains the lab's secrets)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.env"
    path.touch(mode=0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def write_lab_copy(directory: Path, name: str = "lab", **changes: str) -> Path:
    """Write a copy of env/lab.env with `changes` applied as DIRECTORY/NAME.env."""
    return write_env(directory, name, {**lab_values(), **changes})


@contextmanager
def env_dir_selected(directory: Path) -> Iterator[None]:
    """Select `directory` as OPS_ENV_DIR inside this process for the block."""
    previous = os.environ.get("OPS_ENV_DIR")
    os.environ["OPS_ENV_DIR"] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OPS_ENV_DIR", None)
        else:
            os.environ["OPS_ENV_DIR"] = previous


def settings_in(directory: Path, name: str) -> Settings:
    """Load DIRECTORY/NAME.env as the tasks would with OPS_ENV_DIR=DIRECTORY."""
    with env_dir_selected(directory):
        return load_settings(name)
