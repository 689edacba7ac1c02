"""Restore of authentik's database from a pg_dump archive, through a staging database.

The dump is restored into a new staging database first. Only when that
succeeded is the live database dropped and the staging one renamed to its
name. A failed restore therefore leaves the live database as it was, and the
result contains exactly the dump's objects: `pg_restore --clean` into the live
database would keep tables that a later migration added and the dump lacks.
The cost is a superuser session and room for two copies during the restore.
"""

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from authops import output
from authops.dbbootstrap import (
    plan_extension,
    plan_grants,
    read_database,
    read_role,
    run_all,
)
from authops.dbdump import client_env, passfile, restore_command, verify_dump
from authops.errors import OpsError
from authops.hosts import connect
from authops.postgres import (
    Superuser,
    check_names,
    check_server,
    statements,
)
from authops.settings import Database, Settings

STAGING_SUFFIX = "_restore"
MAX_IDENTIFIER_LENGTH = 63
# Comment on a staging database, so that a later run may drop a leftover one.
STAGING_MARKER = "authops: restore in progress"
STACK_LABEL = "com.docker.stack.namespace"
DOCKER_TIMEOUT = 60  # seconds


@dataclass
class Step:
    """One step of a restore: a description and either statements or a pg_restore run."""

    description: str
    statements: list[sql.Composed]
    in_staging: bool = False
    runs_pg_restore: bool = False
    drops_live: bool = False


def staging_name(name: str) -> str:
    """Return the staging database's name: NAME_restore, shortened to fit 63 bytes."""
    return name[: MAX_IDENTIFIER_LENGTH - len(STAGING_SUFFIX)] + STAGING_SUFFIX


def running_services(settings: Settings) -> list[str]:
    """Return `name replicas` of each service of the stack that runs or should run.

    Runs `docker service ls` on the first swarm manager. Raises OpsError when it fails.
    """
    manager = settings.managers[0]
    label = f"label={STACK_LABEL}={settings.stack_name}"
    command = (
        f"docker service ls --filter {shlex.quote(label)} "
        "--format '{{.Name}} {{.Replicas}}'"
    )
    host = connect(manager, settings.values)
    try:
        result = host.run(command, timeout=DOCKER_TIMEOUT)
    finally:
        host.close()
    if not result.ok:
        raise OpsError(
            f"{manager}: could not list the services of stack {settings.stack_name}: "
            f"{result.error_text()}; fix docker there, or pass --force if the stack is stopped"
        )
    return [line for line in result.stdout.splitlines() if is_running(line)]


def is_running(line: str) -> bool:
    """Return whether a `name running/desired` line shows replicas running or wanted."""
    fields = line.split()
    if len(fields) < 2 or "/" not in fields[1]:
        return False
    running, _, desired = fields[1].partition("/")
    return running.isdigit() and desired.isdigit() and (int(running) or int(desired))


def reject_running_stack(settings: Settings) -> None:
    services = running_services(settings)
    if services:
        raise OpsError(
            f"stack {settings.stack_name} is running ({', '.join(services)}): scale its "
            f"services to 0 or remove the stack first, or pass --force to restore anyway"
        )


def plan_restore(
    connection: psycopg.Connection,
    superuser: Superuser,
    database: Database,
    path: Path,
) -> list[Step]:
    """Read the server's state and return the restore's steps; raise OpsError on a conflict."""
    check_server(connection, superuser)
    if read_role(connection, database.user) is None:
        raise OpsError(
            f"role {database.user} not found at {superuser.address}: run "
            f"`invoke db.bootstrap` first, then restore"
        )

    staging = staging_name(database.name)
    leftover = read_database(connection, staging)
    if leftover and leftover["comment"] != STAGING_MARKER:
        raise OpsError(
            f"database {staging} exists at {superuser.address} and was not made by "
            f"db.restore: rename or drop it, then restore again"
        )

    live = read_database(connection, database.name)
    steps = []
    if leftover:
        steps.append(drop_step(staging, "left by a failed restore"))
    steps += staging_steps(database, staging, path)
    if live:
        steps.append(drop_step(database.name, "the live database", drops_live=True))
    steps.append(
        Step(
            f"rename {staging} to {database.name}",
            statements(
                "database_rename",
                source=sql.Identifier(staging),
                target=sql.Identifier(database.name),
            ),
        )
    )
    return steps


def drop_step(name: str, reason: str, *, drops_live: bool = False) -> Step:
    return Step(
        f"drop {name} ({reason})",
        statements("database_drop", database=sql.Identifier(name)),
        drops_live=drops_live,
    )


def staging_steps(database: Database, staging: str, path: Path) -> list[Step]:
    """Return the steps that build the staging database from the dump."""
    staging_database = Database(
        database.host,
        database.port,
        staging,
        database.user,
        database.password,
        database.sslmode,
    )
    create = statements(
        "database_create",
        database=sql.Identifier(staging),
        role=sql.Identifier(database.user),
    ) + statements(
        "restore_mark",
        database=sql.Identifier(staging),
        marker=sql.Literal(STAGING_MARKER),
    )
    # The dump creates uuid-ossp itself; these keep a dump without it usable.
    extension = plan_extension(False, staging_database)
    grants = plan_grants(False, staging_database)
    return [
        Step(f"create {staging}, owned by {database.user}, UTF8", create),
        Step(
            f"restore {path} into {staging} as {database.user}",
            [],
            runs_pg_restore=True,
        ),
        Step(extension.planned, extension.statements, in_staging=True),
        Step(grants.planned, grants.statements, in_staging=True),
    ]


def restore(
    superuser: Superuser, database: Database, path: Path, *, dry_run: bool
) -> tuple[list[Step], int]:
    """Replace the database with the dump at `path`; return the steps and the dump's entry count.

    A dry run plans the same steps and runs none of them.
    """
    check_names(database)
    if not path.is_file():
        raise OpsError(f"dump file {path} not found: give the path of a db.backup file")
    entries = verify_dump(path)
    with superuser.connect() as connection:
        steps = plan_restore(connection, superuser, database, path)
        if not dry_run:
            run_steps(connection, superuser, database, path, steps)
    return steps, entries


def run_steps(
    connection: psycopg.Connection,
    superuser: Superuser,
    database: Database,
    path: Path,
    steps: list[Step],
) -> None:
    """Run the steps in order; if one fails before the live database is dropped, drop the staging one."""
    staging = staging_name(database.name)
    live_dropped = False
    for step in steps:
        output.phase(step.description)
        try:
            run_step(connection, superuser, database, staging, path, step)
        except OpsError as error:
            if live_dropped:
                raise OpsError(
                    f"{error}; the restored data is in database {staging}: rename it "
                    f"with `ALTER DATABASE {staging} RENAME TO {database.name}`"
                ) from None
            run_all(connection, drop_step(staging, "cleanup").statements)
            raise
        live_dropped = live_dropped or step.drops_live


def run_step(
    connection: psycopg.Connection,
    superuser: Superuser,
    database: Database,
    staging: str,
    path: Path,
    step: Step,
) -> None:
    if step.runs_pg_restore:
        run_pg_restore(database, staging, path)
    elif step.in_staging:
        with superuser.connect(staging) as inside:
            run_all(inside, step.statements)
    else:
        run_all(connection, step.statements)


def run_pg_restore(database: Database, staging: str, path: Path) -> None:
    with passfile(database.password) as pgpass:
        result = subprocess.run(
            restore_command(database, staging, path),
            capture_output=True,
            text=True,
            env=client_env(pgpass),
        )
    if result.returncode != 0:
        raise OpsError(
            f"pg_restore of {path} into {staging} failed, the live database is unchanged: "
            f"{result.stderr.strip()}"
        )
