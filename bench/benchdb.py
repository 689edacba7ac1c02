"""Databases and roles of the bench's own on the lab's PostgreSQL server.

The bench never uses the lab's authentik role, which other work on the lab
may change (a password rotation, for one). Each scenario that needs a
database gets its own role and database of the same name, with a password
made for the run, and drops both at the end.
"""

import secrets

import psycopg
from psycopg import sql

from authops.labenv import superuser_password
from bench.labrun import TaskRun, invoke


def database_values(name: str) -> dict[str, str]:
    """Return env file keys that point authentik at database and role `name`."""
    return {
        "AUTHENTIK_POSTGRESQL__NAME": name,
        "AUTHENTIK_POSTGRESQL__USER": name,
        "AUTHENTIK_POSTGRESQL__PASSWORD": "bench-" + secrets.token_urlsafe(24),
    }


def bootstrap(env_dir, env_name: str, port: int) -> TaskRun:
    """Run `invoke db.bootstrap` for the env file as the lab's superuser."""
    return invoke(
        "db.bootstrap",
        "--env",
        env_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env_dir=env_dir,
        timeout=120,
        extra_env={"PGPASSWORD": superuser_password()},
    )


def drop(name: str, port: int) -> None:
    """Drop database and role `name` from the lab's server, ending their sessions."""
    with psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=superuser_password(),
        dbname="postgres",
        autocommit=True,
    ) as connection:
        identifier = sql.Identifier(name)
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier)
        )
        connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(identifier))
