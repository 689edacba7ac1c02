"""Env files for tests: the lab's values with some keys changed or removed."""

from pathlib import Path

from authops.envfile import EXAMPLE_DIR, parse_text


def lab_values() -> dict[str, str]:
    return parse_text((EXAMPLE_DIR / "lab.env").read_text()).values()


def render_env(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


# The tests share this machine's swarm but not the lab's second node, which
# runs only while the lab is up: their stacks run on the manager alone.
SINGLE_NODE = {
    "SWARM_NODES": "lab=127.0.0.1",
    "SERVER_REPLICAS": "1",
    "PLACEMENT": "node.role == manager",
    "WORKER_PLACEMENT": None,
}


def write_env(directory: Path, name: str, changes: dict[str, str | None]) -> Path:
    """Write DIRECTORY/NAME.env, mode 600: the lab's values on one node, with None removing a key."""
    values = lab_values()
    # The lab's relay CA exists only while the lab runs; tests pass their own.
    values.pop("SMTP_CA_FILE", None)
    changes = {**SINGLE_NODE, **changes}
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    path = directory / f"{name}.env"
    path.write_text(render_env(values))
    path.chmod(0o600)
    return path
