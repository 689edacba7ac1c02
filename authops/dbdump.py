"""Dumps of authentik's database: pg_dump to the admin machine, rotation, restore.

pg_dump and pg_restore log in as the application role with a temporary
passfile (mode 600, removed afterwards). The password is never on their
command lines nor in their environment.
"""

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from psycopg.conninfo import make_conninfo

from authops.errors import OpsError
from authops.netguard import check_lab_target
from authops.postgres import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT,
    check_names,
    passfile_line,
)
from authops.settings import Database, Settings

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass
class BackupPlan:
    path: Path
    remove: list[Path]


@dataclass
class DumpSummary:
    path: Path
    size: int
    entries: int


@contextlib.contextmanager
def passfile(password: str) -> Iterator[Path]:
    """Yield a passfile holding `password`, created with mode 600 and removed afterwards."""
    descriptor, name = tempfile.mkstemp(prefix="authops-pgpass-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(passfile_line(password))
        yield Path(name)
    finally:
        os.unlink(name)


def client_env(passfile_path: Path) -> dict[str, str]:
    """Return this process's environment for a libpq client that reads only the passfile."""
    env = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    env["PGPASSFILE"] = str(passfile_path)
    return env


def conninfo(database: Database, dbname: str | None = None) -> str:
    """Return a libpq connection string for the application role (no password)."""
    return make_conninfo(
        host=database.host,
        port=database.port,
        dbname=dbname or database.name,
        user=database.user,
        sslmode=database.sslmode,
        connect_timeout=CONNECT_TIMEOUT,
        application_name=APPLICATION_NAME,
    )


def dump_command(database: Database) -> list[str]:
    check_lab_target(database.host)
    return [
        "pg_dump",
        "--format=custom",
        "--no-password",
        "--dbname",
        conninfo(database),
    ]


def list_command(path: Path) -> list[str]:
    return ["pg_restore", "--list", str(path)]


def restore_command(database: Database, dbname: str, path: Path) -> list[str]:
    """Return the pg_restore command that loads `path` into `dbname` as the application role.

    --no-owner makes the role own every object; --single-transaction stops at
    the first error and leaves nothing half-restored.
    """
    return [
        "pg_restore",
        "--no-owner",
        "--single-transaction",
        "--no-password",
        "--dbname",
        conninfo(database, dbname),
        str(path),
    ]


def dump_pattern(name: str) -> re.Pattern:
    """Match the dump files of database `name`: NAME-<UTC stamp>[-N].dump."""
    return re.compile(
        rf"^{re.escape(name)}-(?P<stamp>\d{{8}}T\d{{6}}Z)(?:-(?P<serial>\d+))?\.dump$"
    )


def dump_order(path: Path, name: str) -> tuple[str, int] | None:
    """Return the (UTC stamp, serial) of a dump file of `name`, or None for other files."""
    match = dump_pattern(name).match(path.name)
    if not match:
        return None
    return match["stamp"], int(match["serial"] or 0)


def existing_dumps(directory: Path, name: str) -> list[Path]:
    """Return the dumps of `name` in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [
        (dump_order(path, name), path)
        for path in directory.iterdir()
        if path.is_file() and dump_order(path, name)
    ]
    return [path for _, path in sorted(found)]


def new_dump_path(directory: Path, name: str, now: datetime) -> Path:
    """Return a new file name stamped with `now` in UTC.

    A second dump within the same second gets a serial above every existing
    one of that second, so names are never reused and sort in creation order.
    """
    stamp = now.astimezone(UTC).strftime(STAMP_FORMAT)
    serials = [
        order[1]
        for order in (
            dump_order(path, name) for path in existing_dumps(directory, name)
        )
        if order[0] == stamp
    ]
    if not serials:
        return directory / f"{name}-{stamp}.dump"
    return directory / f"{name}-{stamp}-{max(serials) + 1}.dump"


def plan_backup(settings: Settings, keep: int | None = None) -> BackupPlan:
    """Return the dump file to write and the old dumps that rotation removes after it."""
    database = settings.database
    check_names(database)
    keep = settings.number("BACKUP_KEEP") if keep is None else keep
    if keep < 1:
        raise OpsError(f"--keep {keep} would remove the new dump too: keep at least 1")
    directory = settings.backup_dir
    path = new_dump_path(directory, database.name, datetime.now(UTC))
    # The new dump is never removed, even if a clock set back stamps it older.
    older = existing_dumps(directory, database.name)
    return BackupPlan(path, older[: max(len(older) - (keep - 1), 0)])


def backup(settings: Settings, keep: int | None = None) -> Path:
    """Dump the database to the backup folder, verify it, rotate old dumps; return its path."""
    plan = plan_backup(settings, keep)
    write_dump(settings.database, plan.path)
    rotate(plan)
    return plan.path


def rotate(plan: BackupPlan) -> None:
    """Remove the old dumps beyond the number kept."""
    for old in plan.remove:
        old.unlink(missing_ok=True)


def write_dump(database: Database, path: Path) -> DumpSummary:
    """Run pg_dump into a mode 600 file, verify it, and only then give it its final name."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with (
            os.fdopen(descriptor, "wb") as handle,
            passfile(database.password) as pgpass,
        ):
            result = subprocess.run(
                dump_command(database),
                stdout=handle,
                stderr=subprocess.PIPE,
                text=True,
                env=client_env(pgpass),
            )
        if result.returncode != 0:
            raise OpsError(
                f"pg_dump of {database.name} at {database.host}:{database.port} failed: "
                f"{result.stderr.strip()}{version_hint(result.stderr)}"
            )
        entries = verify_dump(partial)
        os.rename(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return DumpSummary(path, path.stat().st_size, entries)


def version_hint(stderr: str) -> str:
    if "server version mismatch" in stderr:
        return " (install a pg_dump at least as new as the server, e.g. postgresql-client-NN)"
    return ""


def verify_dump(path: Path) -> int:
    """Return the number of entries `pg_restore --list` finds, or raise OpsError if it cannot read the file."""
    result = subprocess.run(list_command(path), capture_output=True, text=True)
    if result.returncode != 0:
        raise OpsError(
            f"{path} is not a readable pg_dump archive: {result.stderr.strip()}"
        )
    entries = [
        line
        for line in result.stdout.splitlines()
        if line.strip() and not line.startswith(";")
    ]
    return len(entries)
