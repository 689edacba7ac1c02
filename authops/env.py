"""Tasks for env files: create one, check one, and derive a committable example."""

import os
import re
import secrets
from pathlib import Path

from invoke import Collection
from invoke.exceptions import Exit

from authops import output
from authops.envfile import EXAMPLE_DIR, env_dir, env_path, resolve_env_name
from authops.errors import OpsError
from authops.schema import SECRET_KEYS
from authops.settings import problems_of
from authops.tasking import DRY_RUN_HELP, ENV_HELP, ops_task
from authops.validate import ERROR

EXAMPLE_PATH = EXAMPLE_DIR / "example.env"
PLACEHOLDER = "CHANGE_ME"
# A KEY=VALUE line as python-dotenv reads it: leading blanks, `export ` and
# blanks around `=` are allowed, so each of them must not hide a secret.
SECRET_LINE = re.compile(
    r"^(?P<prefix>\s*(?:export\s+)?)(?P<key>[A-Za-z0-9_.]+)(?P<equals>\s*=)(?P<value>.*)$"
)


def generate_secret_key() -> str:
    """Return 80 URL-safe random characters (60 random bytes)."""
    return secrets.token_urlsafe(60)


def generate_password() -> str:
    """Return 43 URL-safe random characters (32 random bytes), safe in any shell or URL."""
    return secrets.token_urlsafe(32)


def replace_values(text: str, replacements: dict[str, str]) -> str:
    """Replace the value of each listed key in env file text, keeping comments and order."""
    lines = []
    for line in text.splitlines(keepends=True):
        match = SECRET_LINE.match(line.rstrip("\r\n"))
        if match and match["key"] in replacements:
            ending = line[len(line.rstrip("\r\n")) :]
            start = f"{match['prefix']}{match['key']}{match['equals']}"
            line = f"{start}{replacements[match['key']]}{ending}"
        lines.append(line)
    return "".join(lines)


def reject_leftover_secrets(source: Path, text: str, values: dict[str, str]) -> None:
    """Raise if a secret of the env file is still in the example text.

    A quoted value over several lines is only partly replaced, so such an
    env file gets no example.
    """
    leftover = [
        key
        for key in SECRET_KEYS
        if any(
            len(piece) >= output.MIN_SECRET_LENGTH and piece in text
            for piece in values.get(key, "").splitlines()
        )
    ]
    if leftover:
        raise OpsError(
            f"{', '.join(leftover)} in {source} could not be replaced, so no example was "
            f"written: write each of them as one KEY=VALUE line"
        )


def check_writable_path(path: Path) -> None:
    """Raise if a new env file cannot be created at `path`."""
    if os.path.lexists(path):
        raise OpsError(
            f"{path} already exists and is not overwritten: edit it, or remove it first"
        )
    if not path.parent.is_dir():
        raise OpsError(
            f"folder {path.parent} not found: create it, or point OPS_ENV_DIR "
            f"to the folder of env files"
        )


@ops_task(help={"env": ENV_HELP, "dry_run": DRY_RUN_HELP})
def init(c, env=None, dry_run=False):
    """Write a new env file from env/example.env with fresh secrets, mode 600."""
    name = resolve_env_name(env)
    path = env_path(name)
    check_writable_path(path)
    generated = {
        "AUTHENTIK_SECRET_KEY": generate_secret_key(),
        "AUTHENTIK_POSTGRESQL__PASSWORD": generate_password(),
    }
    for value in generated.values():
        output.register_secret(value)
    text = replace_values(EXAMPLE_PATH.read_text(), generated)
    if dry_run:
        output.status(
            str(path),
            "would change",
            "would create it, mode 600, with a new secret key and database password",
        )
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    output.status(
        str(path),
        "changed",
        "created, mode 600, with a new secret key and database password",
    )
    output.info(
        f"Next: set the hosts, domain and mail settings in {path}, then run `invoke env.check --env {name}`."
    )


@ops_task(help={"env": ENV_HELP})
def check(c, env=None):
    """Validate an env file without touching any host; exit 1 on any error."""
    env_name, path, problems, _ = problems_of(env)
    output.phase(f"checking {path}")
    for problem in problems:
        output.emit(f"  {problem}")
    errors = [problem for problem in problems if problem.severity == ERROR]
    warnings = len(problems) - len(errors)
    if errors:
        raise Exit(f"{path}: {len(errors)} error(s), {warnings} warning(s)", code=1)
    output.status(env_name, "ok", f"{path} is valid ({warnings} warning(s))")


@ops_task(help={"env": ENV_HELP, "dry_run": DRY_RUN_HELP})
def example(c, env=None, dry_run=False):
    """Write env/NAME.example.env: the env file with every secret replaced by a placeholder."""
    name = resolve_env_name(env)
    source = env_path(name)
    # problems_of registers the secrets, so nothing below can print one.
    _, _, _, values = problems_of(name)
    target = env_dir() / f"{name}.example.env"
    text = replace_values(source.read_text(), {key: PLACEHOLDER for key in SECRET_KEYS})
    reject_leftover_secrets(source, text, values)
    if target.is_dir():
        raise OpsError(f"{target} is a directory: remove or rename it, then run again")
    if target.exists() and target.read_text() == text:
        output.status(str(target), "unchanged")
        return
    if dry_run:
        output.status(
            str(target),
            "would change",
            f"secrets {', '.join(SECRET_KEYS)} replaced by {PLACEHOLDER}",
        )
        return
    target.write_text(text)
    output.status(
        str(target), "changed", f"secrets replaced by {PLACEHOLDER}; safe to commit"
    )


ns = Collection("env")
ns.add_task(init)
ns.add_task(check)
ns.add_task(example)
