"""Bootstrap of authentik's database: role, password, database, uuid-ossp and grants.

Every object is read first and compared with the env file. Conflicts are
rejected before the first change, so a rejected run changes nothing. A dry run
plans the same statements and runs none of them.
"""

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from authops import output
from authops.errors import OpsError
from authops.postgres import Superuser, check_names, check_server, query, statements
from authops.scram import password_matches
from authops.settings import Database

SCRAM = b"scram-sha-256"


@dataclass
class Item:
    """One object that bootstrap manages, and the statements that bring it in line."""

    name: str
    change: bool
    planned: str
    done: str
    statements: list[sql.Composed] = field(default_factory=list)
    # Statements run inside the application database instead of the maintenance one.
    in_database: bool = False

    def sql_lines(self) -> list[str]:
        return [statement.as_string() + ";" for statement in self.statements]


def unchanged(name: str, detail: str, *, in_database: bool = False) -> Item:
    return Item(name, False, detail, detail, in_database=in_database)


def bootstrap(superuser: Superuser, database: Database, *, dry_run: bool) -> list[Item]:
    """Bring role, password, database, extension and grants in line; return one item each.

    Raises OpsError, before any change, when the server or an existing object
    conflicts with the env file.
    """
    check_names(database)
    with superuser.connect() as connection:
        facts = check_server(connection, superuser)
        role = read_role(connection, database.user)
        existing = read_database(connection, database.name)
        reject_conflicts(database, role, existing, facts, superuser)
        items = [
            plan_role(role, database),
            plan_password(connection, role, database),
            plan_database(existing, database),
        ]
        items += plan_inside_database(superuser, database, exists=existing is not None)
        if not dry_run:
            apply(connection, superuser, database, items)
    return items


def read_role(connection: psycopg.Connection, role: str) -> dict | None:
    return connection.execute(query("role_state"), {"role": role}).fetchone()


def read_database(connection: psycopg.Connection, name: str) -> dict | None:
    return connection.execute(query("database_state"), {"database": name}).fetchone()


def reject_conflicts(
    database: Database,
    role: dict | None,
    existing: dict | None,
    facts: dict,
    superuser: Superuser,
) -> None:
    """Raise OpsError when an existing object or the server rules out a bootstrap."""
    if role and role["is_superuser"]:
        raise OpsError(
            f"role {database.user} at {superuser.address} is a superuser: authentik must not "
            f"run as one; set AUTHENTIK_POSTGRESQL__USER to a dedicated role"
        )
    if existing and existing["encoding"] != "UTF8":
        raise OpsError(
            f"database {database.name} at {superuser.address} exists with encoding "
            f"{existing['encoding']}, not UTF8: authentik needs UTF8; dump and drop it, or "
            f"set AUTHENTIK_POSTGRESQL__NAME to a new database"
        )
    if existing and existing["owner"] != database.user:
        raise OpsError(
            f"database {database.name} at {superuser.address} is owned by {existing['owner']}, "
            f"not {database.user}: if it is authentik's, run `ALTER DATABASE {database.name} "
            f"OWNER TO {database.user}` as a superuser; else set AUTHENTIK_POSTGRESQL__NAME "
            f"to a new database"
        )
    if not facts["has_uuid_ossp"]:
        raise OpsError(
            f"extension uuid-ossp is not available at {superuser.address}: install the "
            f"server's contrib modules (the postgresql-contrib package on most systems)"
        )


def plan_role(role: dict | None, database: Database) -> Item:
    name = sql.Identifier(database.user)
    if role is None:
        return Item(
            "role",
            True,
            f"create login role {database.user}",
            f"created login role {database.user}",
            statements("role_create", role=name),
        )
    if not role["can_login"]:
        return Item(
            "role",
            True,
            f"allow role {database.user} to log in",
            f"allowed role {database.user} to log in",
            statements("role_login", role=name),
        )
    return unchanged("role", f"login role {database.user} exists")


def plan_password(
    connection: psycopg.Connection, role: dict | None, database: Database
) -> Item:
    """Compare the env file's password with the stored verifier; plan a new verifier if they differ."""
    stored = role["password_verifier"] if role else None
    if password_matches(database.password, stored):
        return unchanged("password", "matches the env file")
    verifier = connection.pgconn.encrypt_password(
        database.password.encode(), database.user.encode(), SCRAM
    ).decode()
    output.register_secret(verifier)
    if role is None:
        reason = "new role"
    elif stored is None:
        reason = "no password was set"
    elif stored.startswith("md5"):
        reason = "an MD5 hash was stored"
    else:
        reason = "the env file's password differs from the stored one"
    return Item(
        "password",
        True,
        f"set from the env file as SCRAM-SHA-256 ({reason})",
        f"set from the env file as SCRAM-SHA-256 ({reason})",
        statements(
            "role_password",
            role=sql.Identifier(database.user),
            verifier=sql.Literal(verifier),
        ),
    )


def plan_database(existing: dict | None, database: Database) -> Item:
    if existing:
        return unchanged(
            "database", f"{database.name} exists, owned by {database.user}, UTF8"
        )
    return Item(
        "database",
        True,
        f"create {database.name}, owned by {database.user}, UTF8",
        f"created {database.name}, owned by {database.user}, UTF8",
        statements(
            "database_create",
            database=sql.Identifier(database.name),
            role=sql.Identifier(database.user),
        ),
    )


def plan_inside_database(
    superuser: Superuser, database: Database, *, exists: bool
) -> list[Item]:
    """Plan the extension and the grants; a database still to be created has neither."""
    installed = granted = False
    if exists:
        with superuser.connect(database.name) as connection:
            installed = connection.execute(query("extension_state")).fetchone()[
                "installed"
            ]
            grants = connection.execute(
                query("grants_state"), {"role": database.user}
            ).fetchone()
            granted = grants["on_database"] and grants["on_schema"]
    return [plan_extension(installed, database), plan_grants(granted, database)]


def plan_extension(installed: bool, database: Database) -> Item:
    if installed:
        return unchanged(
            "extension", f"uuid-ossp is installed in {database.name}", in_database=True
        )
    return Item(
        "extension",
        True,
        f"create uuid-ossp in {database.name}",
        f"created uuid-ossp in {database.name}",
        statements("extension_create"),
        in_database=True,
    )


def plan_grants(granted: bool, database: Database) -> Item:
    if granted:
        return unchanged(
            "grants",
            f"{database.user} holds all privileges on database {database.name} and schema public",
            in_database=True,
        )
    return Item(
        "grants",
        True,
        f"grant all on database {database.name} and schema public to {database.user}",
        f"granted all on database {database.name} and schema public to {database.user}",
        statements(
            "grants_apply",
            database=sql.Identifier(database.name),
            role=sql.Identifier(database.user),
        ),
        in_database=True,
    )


def apply(
    connection: psycopg.Connection,
    superuser: Superuser,
    database: Database,
    items: list[Item],
) -> None:
    """Run the statements of every item that changes, in order."""
    for item in items:
        if item.change and not item.in_database:
            run_all(connection, item.statements)
    inside = [item for item in items if item.change and item.in_database]
    if not inside:
        return
    with superuser.connect(database.name) as target:
        for item in inside:
            run_all(target, item.statements)


def run_all(connection: psycopg.Connection, commands: list[sql.Composed]) -> None:
    """Run statements one by one; a failure names the statement, with secrets masked."""
    for command in commands:
        try:
            connection.execute(command)
        except psycopg.Error as error:
            raise OpsError(
                output.redact(f"`{command.as_string()}` failed: {error}")
            ) from None
