"""Reading env files: `env/NAME.env`, one per deployment.

Parsing uses python-dotenv's parser without variable expansion, so a `$` in a
value reaches authentik unchanged.
"""

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import parse_stream

from authops import REPO_ROOT
from authops.errors import OpsError

EXAMPLE_DIR = REPO_ROOT / "env"
DEFAULT_ENV = "lab"
ENV_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass
class EnvLine:
    key: str
    value: str
    line: int


@dataclass
class ParsedEnv:
    """The entries of an env file in file order, plus the lines that did not parse."""

    entries: list[EnvLine]
    bad_lines: list[tuple[int, str]]
    crlf_lines: list[int]

    def values(self) -> dict[str, str]:
        """Return the last value of each key, as docker compose would use it."""
        return {entry.key: entry.value for entry in self.entries}

    def lines_of(self, key: str) -> list[int]:
        return [entry.line for entry in self.entries if entry.key == key]


def resolve_env_name(name: str | None) -> str:
    """Return the env name to use: the flag, else `OPS_ENV`, else `lab`."""
    chosen = name or os.environ.get("OPS_ENV") or DEFAULT_ENV
    if not ENV_NAME_PATTERN.match(chosen):
        raise OpsError(
            f"invalid env name {chosen!r}: use lower-case letters, digits, '-' and '_' "
            f"(the file is env/NAME.env)"
        )
    return chosen


def env_dir() -> Path:
    """Return the folder of env files: `OPS_ENV_DIR` if set, else env/ in the checkout."""
    return Path(os.environ.get("OPS_ENV_DIR") or EXAMPLE_DIR)


def env_path(name: str) -> Path:
    return env_dir() / f"{name}.env"


def parse_text(text: str) -> ParsedEnv:
    """Parse env file text into entries, keeping line numbers for messages."""
    crlf_lines = [
        number for number, line in enumerate(text.split("\n"), 1) if line.endswith("\r")
    ]
    normalized = text.replace("\r\n", "\n")
    entries: list[EnvLine] = []
    bad_lines: list[tuple[int, str]] = []
    for binding in parse_stream(io.StringIO(normalized)):
        line = binding.original.line
        if binding.error:
            bad_lines.append((line, binding.original.string.rstrip("\n")))
        elif binding.key is not None:
            entries.append(EnvLine(binding.key, binding.value or "", line))
    return ParsedEnv(entries, bad_lines, crlf_lines)


def read_env(name: str) -> tuple[Path, ParsedEnv]:
    """Read and parse `env/NAME.env`, or raise an error that names the command that creates it."""
    path = env_path(name)
    if path.is_dir():
        raise OpsError(
            f"env file {path} is a directory: move it away, then create the env file "
            f"with `invoke env.init --env {name}`"
        )
    if not path.is_file():
        raise OpsError(
            f"env file {path} not found: create it with `invoke env.init --env {name}`, "
            f"or choose another with --env NAME or OPS_ENV"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise OpsError(
            f"env file {path} is not valid UTF-8 ({error}): re-save it as UTF-8"
        ) from None
    return path, parse_text(text)
