"""The stand-in's only database query: `SELECT 1` with the configured credentials."""

import psycopg2

from standin.config import Database


def check(database: Database) -> str | None:
    """Run `SELECT 1`; return None on success, else the reason it failed."""
    try:
        connection = psycopg2.connect(**database.connect_arguments())
    except psycopg2.Error as error:
        return first_line(error)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except psycopg2.Error as error:
        return first_line(error)
    finally:
        connection.close()
    return None


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
