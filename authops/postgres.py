"""PostgreSQL access from the admin machine: SQL files, names and superuser sessions.

Statements live in sql/*.sql. Identifiers and literals enter them only through
psycopg.sql (`{name}` placeholders) or bound parameters (`%(name)s`).
"""

import getpass
import os
import sys
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from authops import REPO_ROOT, output
from authops.errors import OpsError
from authops.netguard import check_lab_target
from authops.settings import Database
from authops.validate import IDENTIFIER_PATTERN

SQL_DIR = REPO_ROOT / "sql"
MAINTENANCE_DATABASE = "postgres"
MIN_SERVER_VERSION = 140000  # server_version_num of PostgreSQL 14.0
CONNECT_TIMEOUT = 10  # seconds
APPLICATION_NAME = "authops"
# PostgreSQL reserves role names that start with "pg_": CREATE ROLE rejects them.
RESERVED_ROLE_PREFIX = "pg_"


def check_identifier(key: str, value: str) -> None:
    """Raise OpsError unless `value` is a plain lower-case PostgreSQL identifier.

    env.check rejects such values already. This check repeats it, because
    every statement built from the name must stay safe on its own.
    """
    if not IDENTIFIER_PATTERN.match(value):
        raise OpsError(
            f"{key}={value!r} is not a valid PostgreSQL name here: use 1 to 63 lower-case "
            f"letters, digits and '_', starting with a letter or '_', and fix the env file"
        )


def check_names(database: Database) -> None:
    """Raise OpsError unless the database and role names are safe identifiers."""
    check_identifier("AUTHENTIK_POSTGRESQL__NAME", database.name)
    check_identifier("AUTHENTIK_POSTGRESQL__USER", database.user)
    if database.user.startswith(RESERVED_ROLE_PREFIX):
        raise OpsError(
            f"AUTHENTIK_POSTGRESQL__USER={database.user!r} starts with "
            f"{RESERVED_ROLE_PREFIX!r}, which PostgreSQL reserves for its own roles: "
            f"choose another name in the env file"
        )


def passfile_line(password: str) -> str:
    """Return a .pgpass line that matches any server and contains `password`.

    libpq's passfile format escapes ':' and '\\' with a backslash.
    """
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def sql_text(name: str) -> str:
    """Return sql/NAME.sql without its `--` comment lines."""
    text = (SQL_DIR / f"{name}.sql").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip()


def query(name: str) -> sql.SQL:
    """Return the single query of sql/NAME.sql; its `%(key)s` take bound parameters."""
    return sql.SQL(sql_text(name))


def statements(name: str, **values: sql.Composable) -> list[sql.Composed]:
    """Return the statements of sql/NAME.sql with each `{key}` filled from `values`.

    Statements end with ';' at the end of a line.
    """
    chunks = [chunk.strip() for chunk in sql_text(name).split(";\n")]
    return [
        sql.SQL(chunk.rstrip(";")).format(**values) for chunk in chunks if chunk.strip()
    ]


@dataclass
class Superuser:
    """Connection details of the superuser that bootstrap and restore act as.

    The password comes from PGPASSWORD or ~/.pgpass (libpq reads both), or
    from a prompt when standard input is a terminal; never from a flag.
    """

    host: str
    port: int
    user: str
    sslmode: str
    password: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, dbname: str = MAINTENANCE_DATABASE) -> psycopg.Connection:
        """Open an autocommit session on `dbname`, prompting for the password once if needed."""
        output.register_secret(os.environ.get("PGPASSWORD"))
        try:
            return self._open(dbname)
        except psycopg.OperationalError as error:
            if not self._may_prompt(error):
                raise self._error(error) from None
        self.password = getpass.getpass(
            f"Password of PostgreSQL superuser {self.user} at {self.address}: "
        )
        output.register_secret(self.password)
        try:
            return self._open(dbname)
        except psycopg.OperationalError as error:
            raise self._error(error) from None

    def _open(self, dbname: str) -> psycopg.Connection:
        check_lab_target(self.host)
        parameters = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
            "sslmode": self.sslmode,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": APPLICATION_NAME,
        }
        if self.password is not None:
            parameters["password"] = self.password
        return psycopg.connect(**parameters, autocommit=True, row_factory=dict_row)

    def _may_prompt(self, error: psycopg.OperationalError) -> bool:
        return (
            self.password is None
            and "no password supplied" in str(error)
            and sys.stdin.isatty()
        )

    def _error(self, error: psycopg.OperationalError) -> OpsError:
        reason = connection_failure(str(error))
        if "no password supplied" in str(error):
            reason = (
                "no password: set PGPASSWORD, add a line to ~/.pgpass, "
                "or run from a terminal to be prompted"
            )
        elif "password authentication failed" in str(error):
            reason = "password authentication failed: check PGPASSWORD, ~/.pgpass or --superuser"
        return OpsError(
            f"could not connect to PostgreSQL at {self.address} as {self.user}: {reason}"
        )


def connection_failure(message: str) -> str:
    """Reduce a libpq connection error to its reason and the usual fix."""
    if "Connection refused" in message:
        return "connection refused: is PostgreSQL running and listening on that address and port?"
    if "timeout expired" in message:
        return f"timed out after {CONNECT_TIMEOUT} s: check the address, the firewall and listen_addresses"
    if "could not translate host name" in message:
        return "DNS lookup failed: check the host name"
    if "No route to host" in message or "Network is unreachable" in message:
        return "host unreachable: check the address and the network route"
    if "no pg_hba.conf entry" in message:
        return "pg_hba.conf on the server has no entry for this client: add one (scram-sha-256)"
    if (
        "remaining connection slots are reserved" in message
        or "too many clients" in message
    ):
        return "no free connection slot: raise max_connections or stop idle clients"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else message


def check_server(connection: psycopg.Connection, superuser: Superuser) -> dict:
    """Return the server's facts, or raise OpsError if it is too old or the user is no superuser."""
    facts = connection.execute(query("server_facts")).fetchone()
    reject_unsupported(facts, superuser)
    return facts


def reject_unsupported(facts: dict, superuser: Superuser) -> None:
    """Raise OpsError for a server older than 14 or a session without superuser rights."""
    if facts["version_num"] < MIN_SERVER_VERSION:
        raise OpsError(
            f"PostgreSQL at {superuser.address} is version {facts['version']}, older than 14: "
            f"authentik 2025.10 needs PostgreSQL 14 or newer; upgrade the server first"
        )
    if not facts["is_superuser"]:
        raise OpsError(
            f"{superuser.user} at {superuser.address} is not a superuser: it must read "
            f"pg_authid and create roles and databases; pass --superuser NAME"
        )
