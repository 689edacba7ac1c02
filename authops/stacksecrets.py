"""Swarm secrets of the stack: one version per content, named with a hash of it.

Swarm secrets cannot change in place, so a new value gets a new name and
the services move to it in the same update. After a successful deploy, the
versions that no service references are removed. A service's previous spec
counts as a reference, so that a rollback still finds its secrets.
"""

import hashlib
import hmac
from dataclasses import dataclass, field

from authops import output
from authops.errors import OpsError
from authops.hosts import Host
from authops.settings import Settings
from authops.swarm import docker_json_lines, run_docker, services_of_stack

SECRETS_DIR = "/run/secrets"
STACK_LABEL = "authops.stack"
PURPOSE_LABEL = "authops.secret"
MAX_NAME_LENGTH = 64  # Swarm's limit for object names
HASH_LENGTH = 12


@dataclass(frozen=True)
class SecretVersion:
    """One secret value as a named Swarm secret."""

    purpose: str
    name: str
    value: str = field(repr=False)

    @property
    def path(self) -> str:
        return f"{SECRETS_DIR}/{self.name}"


def secret_values(settings: Settings) -> dict[str, str]:
    """Return each secret the services need by purpose; the SMTP password only when set."""
    values = {
        "secret_key": settings.secret_key,
        "db_password": settings.database.password,
    }
    if settings.smtp.password:
        values["smtp_password"] = settings.smtp.password
    return values


def version_name(stack: str, purpose: str, value: str, key: str) -> str:
    """Return STACK_PURPOSE_HASH for a secret value.

    The hash is an HMAC keyed with the secret key, so that a name shows
    nothing about a weak password. A new secret key renames every secret,
    which costs nothing more: it rolls out both services anyway.
    """
    digest = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
    name = f"{stack}_{purpose}_{digest[:HASH_LENGTH]}"
    if len(name) > MAX_NAME_LENGTH:
        raise OpsError(
            f"secret name {name!r} is longer than {MAX_NAME_LENGTH} characters: shorten STACK_NAME"
        )
    return name


def secret_versions(settings: Settings) -> dict[str, SecretVersion]:
    """Return the secret version of each purpose for the current settings."""
    stack, key = settings.stack_name, settings.secret_key
    return {
        purpose: SecretVersion(purpose, version_name(stack, purpose, value, key), value)
        for purpose, value in secret_values(settings).items()
    }


def existing_secrets(host: Host, stack: str) -> dict[str, dict]:
    """Return the stack's secrets on the swarm by name, from `docker secret ls`."""
    rows = docker_json_lines(
        host, ["secret", "ls", "--filter", f"label={STACK_LABEL}={stack}"]
    )
    return {row["Name"]: row for row in rows}


def create_secrets(
    host: Host, stack: str, versions: dict[str, SecretVersion], dry_run: bool
) -> list[str]:
    """Create each secret version that does not exist yet; return the names created.

    The value goes through stdin, never on a command line.
    """
    existing = existing_secrets(host, stack)
    created = []
    for version in versions.values():
        if version.name in existing:
            output.status(version.name, "unchanged", "secret exists")
            continue
        if dry_run:
            output.status(version.name, "would change", "would create secret")
            created.append(version.name)
            continue
        run_docker(
            host,
            [
                "secret",
                "create",
                "--label",
                f"{STACK_LABEL}={stack}",
                "--label",
                f"{PURPOSE_LABEL}={version.purpose}",
                version.name,
                "-",
            ],
            stdin=version.value,
            check=True,
        )
        output.status(version.name, "changed", "secret created")
        created.append(version.name)
    return created


def referenced_secrets(service: dict) -> set[str]:
    """Return the secret names that a service's current or previous spec mounts."""
    names = set()
    for key in ("Spec", "PreviousSpec"):
        container = (
            service.get(key, {}).get("TaskTemplate", {}).get("ContainerSpec", {})
        )
        names.update(ref["SecretName"] for ref in container.get("Secrets") or [])
    return names


def remove_unused_secrets(host: Host, stack: str, dry_run: bool = False) -> list[str]:
    """Remove the stack's secret versions that no service references; return their names."""
    in_use: set[str] = set()
    for service in services_of_stack(host, stack):
        in_use |= referenced_secrets(service)
    unused = sorted(set(existing_secrets(host, stack)) - in_use)
    for name in unused:
        if dry_run:
            output.status(name, "would change", "would remove unused secret")
            continue
        result = run_docker(host, ["secret", "rm", name])
        if result.ok:
            output.status(name, "changed", "removed unused secret")
        else:
            output.warn(f"could not remove secret {name}: {result.error_text()}")
    return unused
