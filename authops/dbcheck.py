"""Database checks run on each swarm manager, as the application role.

The managers are where authentik connects from, so the check runs there with
psql: from the manager's PATH, else from a client container. The password
travels on standard input into a temporary passfile (mode 600) and never
appears on a command line or in an environment variable.
"""

import secrets
import shlex
from dataclasses import dataclass

from psycopg.conninfo import make_conninfo

from authops.errors import FAILED, OK, WARNING
from authops.hosts import Host, fan_out
from authops.netguard import check_lab_target
from authops.postgres import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT,
    MIN_SERVER_VERSION,
    check_names,
    connection_failure,
    passfile_line,
    sql_text,
)
from authops.settings import Database, Settings

# NOTE: an estimate, not a measurement, of the connections that one authentik
# 2025.10 replica (server or worker) keeps open. It assumes about 10 for earlier
# releases, plus half again because 2025.10 opens about 50% more connections.
CONNECTIONS_PER_REPLICA = 15
# The reference deployment ran the client from this image on the managers.
CLIENT_IMAGE = "postgres:15"
CHECK_TIMEOUT = 120  # seconds for the whole psql run, image pull included
PSQL_CONNECTION_FAILED = 2  # psql's exit code when it could not connect
HEREDOC_END = "AUTHOPS_SQL_END"

# Check names, in report order.
CONNECT = "connect"
VERSION = "version"
ENCODING = "encoding"
CREATE_SCHEMA = "create schema"
MAX_CONNECTIONS = "max_connections"
CLIENT = "client"


@dataclass
class CheckRun:
    """Output of one psql run: `check|value|extra` rows by check, stderr and exit code."""

    rows: dict[str, tuple[str, str]]
    stderr: str
    exit_code: int


def psql_script(database: Database, schema: str) -> str:
    """Return the shell script that reads the passfile line from stdin, then runs psql.

    The SQL of sql/check.sql rides in a quoted here-document: it contains no
    secret, and Invoke feeds stdin one character per 10 ms, so stdin carries
    only the passfile line. The script unsets PGPASSWORD because libpq would
    prefer it to the passfile.
    """
    conninfo = make_conninfo(
        host=database.host,
        port=database.port,
        dbname=database.name,
        user=database.user,
        sslmode=database.sslmode,
        connect_timeout=CONNECT_TIMEOUT,
        application_name=APPLICATION_NAME,
    )
    psql = " ".join(
        [
            "psql -X -w -q -A -t -F '|' -v ON_ERROR_STOP=1",
            f"-v schema={shlex.quote(schema)}",
            f"-d {shlex.quote(conninfo)} -f -",
        ]
    )
    return (
        "umask 077\n"
        "passfile=$(mktemp) || exit 1\n"
        "IFS= read -r entry\n"
        'printf \'%s\\n\' "$entry" > "$passfile"\n'
        "unset PGPASSWORD\n"
        f"PGPASSFILE=\"$passfile\" {psql} <<'{HEREDOC_END}'\n"
        f"{sql_text('check')}\n"
        f"{HEREDOC_END}\n"
        "status=$?\n"
        'rm -f "$passfile"\n'
        "exit $status\n"
    )


def client_command(host: Host, script: str) -> str | None:
    """Return the command that runs `script` with psql on the host, or None without a client."""
    if host.run("command -v psql", timeout=30).ok:
        return f"sh -c {shlex.quote(script)}"
    if host.run("command -v docker", timeout=30).ok:
        # NOTE: the tests cover psql on the host only; this path needs the image.
        return (
            f"docker run --rm -i --network host {CLIENT_IMAGE} "
            f"sh -c {shlex.quote(script)}"
        )
    return None


def run_checks(host: Host, database: Database) -> CheckRun | None:
    """Run sql/check.sql on the host as the application role; None if it has no client."""
    if host.is_local:
        check_lab_target(database.host)
    schema = f"authops_check_{secrets.token_hex(4)}"
    command = client_command(host, psql_script(database, schema))
    if command is None:
        return None
    result = host.run(
        command, stdin=passfile_line(database.password), timeout=CHECK_TIMEOUT
    )
    rows = {}
    for line in result.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            rows[parts[0]] = (parts[1], parts[2])
    return CheckRun(rows, result.stderr, result.exit_code)


def check_from_host(host: Host, settings: Settings) -> list[tuple[str, str, str]]:
    """Check the database from one host; return (check, state, detail) per check.

    A failed connection returns a single failed `connect` check. Raises
    OpsError when the env file's names are unsafe.
    """
    database = settings.database
    check_names(database)
    run = run_checks(host, database)
    if run is None:
        return [
            (
                CLIENT,
                FAILED,
                "neither psql nor docker found: install the PostgreSQL client (postgresql-client)",
            )
        ]
    if VERSION not in run.rows:
        return [(CONNECT, FAILED, connect_failure(run, database))]
    return [
        (
            CONNECT,
            OK,
            f"{database.user}@{database.host}:{database.port}/{database.name}",
        ),
        check_version(run.rows[VERSION]),
        check_encoding(run.rows.get(ENCODING)),
        check_create_schema(run, database),
        check_max_connections(run.rows.get("connections"), settings),
    ]


def connect_failure(run: CheckRun, database: Database) -> str:
    """Describe why psql could not connect or query, with the fix."""
    message = run.stderr
    target = f"{database.host}:{database.port}"
    if "password authentication failed" in message:
        return (
            f"authentication failed for role {database.user} at {target}: "
            f"the env file's password differs; run `invoke db.bootstrap`"
        )
    if f'database "{database.name}" does not exist' in message:
        return (
            f"database {database.name} not found at {target}: run `invoke db.bootstrap`"
        )
    if "permission denied for database" in message:
        return (
            f"role {database.user} may not connect to {database.name} at {target}: "
            f"run `invoke db.bootstrap`"
        )
    if run.exit_code == PSQL_CONNECTION_FAILED or "connection to server" in message:
        return f"cannot connect to {target}: {connection_failure(message)}"
    return f"psql failed with exit code {run.exit_code}: {last_line(message)}"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check_version(row: tuple[str, str]) -> tuple[str, str, str]:
    number, text = row
    version = f"PostgreSQL {text.split()[0]}"
    if int(number) < MIN_SERVER_VERSION:
        return (
            VERSION,
            FAILED,
            f"{version} is older than 14: authentik 2025.10 needs 14 or newer",
        )
    return VERSION, OK, version


def check_encoding(row: tuple[str, str] | None) -> tuple[str, str, str]:
    encoding = row[0] if row else "unknown"
    if encoding != "UTF8":
        return (
            ENCODING,
            FAILED,
            f"database encoding is {encoding}, not UTF8: recreate it with db.bootstrap",
        )
    return ENCODING, OK, "UTF8"


def check_create_schema(run: CheckRun, database: Database) -> tuple[str, str, str]:
    if CREATE_SCHEMA.replace(" ", "_") in run.rows:
        return CREATE_SCHEMA, OK, "can create schemas"
    reason = last_line(run.stderr).partition("ERROR:")[2].strip() or last_line(
        run.stderr
    )
    return (
        CREATE_SCHEMA,
        FAILED,
        f"{database.user} cannot create a schema in {database.name} ({reason}): "
        f"run `invoke db.bootstrap`",
    )


def check_max_connections(
    row: tuple[str, str] | None, settings: Settings
) -> tuple[str, str, str]:
    """Compare max_connections, less reserved slots, with the estimate for all replicas."""
    if row is None:
        return MAX_CONNECTIONS, WARNING, "not read"
    maximum, reserved = int(row[0]), int(row[1])
    available = maximum - reserved
    replicas = settings.number("SERVER_REPLICAS") + settings.number("WORKER_REPLICAS")
    needed = replicas * CONNECTIONS_PER_REPLICA
    detail = (
        f"max_connections {maximum} leaves {available} for clients; "
        f"{replicas} replicas need about {needed} (estimate)"
    )
    if available < needed:
        return (
            MAX_CONNECTIONS,
            WARNING,
            f"{detail}: raise max_connections on the server",
        )
    return MAX_CONNECTIONS, OK, detail


def summarize(checks: list[tuple[str, str, str]]) -> tuple[str, str]:
    """Return one (state, detail) for a host: failures first, then warnings, else all details."""
    for wanted in (FAILED, WARNING):
        picked = [
            f"{name}: {detail}" for name, state, detail in checks if state == wanted
        ]
        if picked:
            return wanted, "; ".join(picked)
    return OK, ", ".join(detail for _, _, detail in checks)


def check_managers(
    settings: Settings,
) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Run check_from_host on every swarm manager; an unreachable one gets a failed `connect`."""
    results = fan_out(
        settings.managers,
        settings.values,
        lambda host: check_from_host(host, settings),
    )
    return [
        (spec, checks if error is None else [(CONNECT, FAILED, str(error))])
        for spec, checks, error in results
    ]
