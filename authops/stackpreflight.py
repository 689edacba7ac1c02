"""Checks before a deploy: the manager, the NFS directories and the database.

Each check prints one status line; every failure is collected and raised
once, so the operator sees all of them in one run.
"""

import json
import re

from authops import dbcheck, nfs, output
from authops.errors import FAILED, OK, WARNING, OpsError
from authops.hosts import Host, connect
from authops.settings import Settings
from authops.swarm import run_docker

WORKER_ROLE = re.compile(r"^node\.role\s*==\s*worker$")


def check_nfs(settings: Settings) -> str | None:
    """Return a problem when a media, templates or certs directory is missing on the NFS server."""
    spec = settings.nfs_ssh_host
    try:
        host = connect(spec, settings.values)
    except OpsError as error:
        return f"NFS server unreachable: {error}"
    try:
        missing = nfs.missing_directories(settings, host)
    finally:
        host.close()
    if missing:
        return (
            f"missing on the NFS server {spec}: {', '.join(missing)}: "
            f"run `invoke nfs.prepare --env {settings.env_name}`"
        )
    output.status(
        "nfs", OK, f"{', '.join(settings.nfs_directories.values())} exist on {spec}"
    )
    return None


def check_database(settings: Settings, manager: Host) -> str | None:
    """Return a problem when the database cannot be used from the manager."""
    checks = dbcheck.check_from_host(manager, settings)
    failed = [f"{name}: {detail}" for name, state, detail in checks if state == FAILED]
    for name, state, detail in checks:
        if state == WARNING:
            output.warn(f"database {name}: {detail}")
    if failed:
        return f"database from {manager.name}: " + "; ".join(failed)
    database = settings.database
    output.status(
        "database",
        OK,
        f"{database.user}@{database.host}:{database.port}/{database.name} reachable from {manager.name}",
    )
    return None


def check_placement(settings: Settings, manager: Host) -> str | None:
    """Return a problem when `node.role == worker` meets a swarm without workers.

    Swarm would keep such tasks pending forever instead of failing.
    """
    keys = [
        key
        for key in ("PLACEMENT", "WORKER_PLACEMENT")
        if WORKER_ROLE.match(settings.get(key))
    ]
    if not keys:
        return None
    result = run_docker(manager, ["node", "ls", "--format", "{{json .}}"], check=True)
    nodes = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if any(not node.get("ManagerStatus") for node in nodes):
        return None
    return (
        f"{keys[0]} is {settings.get(keys[0])!r} but the swarm has no worker node: "
        f"tasks would stay pending; set {keys[0]} to match the nodes"
    )


def preflight(settings: Settings, manager: Host) -> None:
    """Run every check against the deploy's manager; raise OpsError listing each failure."""
    output.status(manager.name, OK, "reachable swarm manager")
    problems = [
        problem
        for problem in (
            check_nfs(settings),
            check_database(settings, manager),
            check_placement(settings, manager),
        )
        if problem
    ]
    for problem in problems:
        output.status("pre-flight", FAILED, problem)
    if problems:
        listed = "\n  ".join(problems)
        raise OpsError(f"pre-flight checks failed, nothing was deployed:\n  {listed}")
