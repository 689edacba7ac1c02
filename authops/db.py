"""Tasks for authentik's PostgreSQL database: bootstrap, check, backup and restore."""

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
from invoke import Collection

from authops import REPO_ROOT, dbbootstrap, dbcheck, dbdump, dbrestore, output
from authops.errors import CHANGED, UNCHANGED, WOULD_CHANGE, OpsError, Report
from authops.postgres import Superuser
from authops.settings import Settings, load_settings
from authops.tasking import DRY_RUN_HELP, ENV_HELP, ops_task

T = TypeVar("T")

DEFAULT_SUPERUSER = "postgres"
HOST_HELP = "PostgreSQL server to connect to from this machine (default: AUTHENTIK_POSTGRESQL__HOST)."
PORT_HELP = "Its TCP port (default: AUTHENTIK_POSTGRESQL__PORT)."
SUPERUSER_HELP = (
    "Superuser to connect as (default: postgres). Its password comes from "
    "PGPASSWORD, ~/.pgpass, or a prompt when run from a terminal."
)


def parse_number(flag: str, value: str, low: int, high: int) -> int:
    if not str(value).isdigit() or not low <= int(value) <= high:
        raise OpsError(
            f"{flag} {value!r} is not a whole number from {low} to {high}: fix the flag"
        )
    return int(value)


def superuser_of(
    settings: Settings, host: str | None, port: str | None, name: str
) -> Superuser:
    """Return the superuser session details: flags first, then the env file."""
    database = settings.database
    if not name:
        raise OpsError("--superuser is empty: give a superuser name, such as postgres")
    return Superuser(
        host=host or database.host,
        port=parse_number("--port", port, 1, 65535) if port else database.port,
        user=name,
        sslmode=database.sslmode,
    )


def with_postgres_errors(action: Callable[[], T]) -> T:
    """Run `action`, turning an unexpected PostgreSQL error into an operator message."""
    try:
        return action()
    except psycopg.Error as error:
        raise OpsError(output.redact(f"PostgreSQL error: {error}")) from None


def shown(path: Path) -> str:
    """Return `path` relative to the checkout when it lies inside it."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@ops_task(
    help={
        "host": HOST_HELP,
        "port": PORT_HELP,
        "superuser": SUPERUSER_HELP,
        "dry_run": DRY_RUN_HELP + " Prints the SQL, password redacted.",
        "env": ENV_HELP,
    }
)
def bootstrap(
    c, host=None, port=None, superuser=DEFAULT_SUPERUSER, dry_run=False, env=None
):
    """Create authentik's role, database, uuid-ossp and grants; a second run changes nothing."""
    settings = load_settings(env)
    admin = superuser_of(settings, host, port, superuser)
    database = settings.database
    output.phase(f"bootstrapping database {database.name} at {admin.address}")
    items = with_postgres_errors(
        lambda: dbbootstrap.bootstrap(admin, database, dry_run=dry_run)
    )
    report = Report("db.bootstrap")
    for item in items:
        if not item.change:
            report.record(item.name, UNCHANGED, item.done)
        elif dry_run:
            report.record(item.name, WOULD_CHANGE, item.planned)
            for line in item.sql_lines():
                output.info(line)
        else:
            report.record(item.name, CHANGED, item.done)
    report.finish()


@ops_task(help={"env": ENV_HELP})
def check(c, env=None):
    """Check the database from every swarm manager as authentik's role; exit 1 on a failure."""
    settings = load_settings(env)
    database = settings.database
    output.phase(
        f"checking database {database.name} at {database.host}:{database.port} "
        f"from {len(settings.managers)} manager(s)"
    )
    report = Report("db.check")
    for manager, checks in dbcheck.check_managers(settings):
        state, detail = dbcheck.summarize(checks)
        report.record(manager, state, detail)
    report.finish()


@ops_task(
    help={
        "keep": "Number of dumps to keep, the new one included (default: BACKUP_KEEP).",
        "dry_run": DRY_RUN_HELP,
        "env": ENV_HELP,
    }
)
def backup(c, keep=None, dry_run=False, env=None):
    """Dump the database with pg_dump -Fc into the backup folder, verify it, rotate old dumps."""
    settings = load_settings(env)
    count = parse_number("--keep", keep, 1, 100000) if keep is not None else None
    plan = dbdump.plan_backup(settings, count)
    kept = count or settings.number("BACKUP_KEEP")
    name = settings.database.name
    if dry_run:
        output.status(
            shown(plan.path), WOULD_CHANGE, f"pg_dump -Fc of {name}, mode 600"
        )
        for old in plan.remove:
            output.status(
                shown(old), WOULD_CHANGE, f"removed, keeping the newest {kept}"
            )
        return
    output.phase(f"dumping {name} to {shown(plan.path)}")
    summary = dbdump.write_dump(settings.database, plan.path)
    output.status(
        shown(summary.path),
        CHANGED,
        f"{summary.size} bytes, mode 600, {summary.entries} entries listed by pg_restore",
    )
    dbdump.rotate(plan)
    for old in plan.remove:
        output.status(shown(old), CHANGED, f"removed, keeping the newest {kept}")


def latest_dump(settings) -> Path:
    """Return the newest dump in BACKUP_DIR, or raise when there is none."""
    dumps = sorted(
        settings.backup_dir.glob("*.dump"), key=lambda path: path.stat().st_mtime
    )
    if not dumps:
        raise OpsError(
            f"no dump in {settings.backup_dir}: run `invoke db.backup` first, or give --file PATH"
        )
    return dumps[-1]


@ops_task(
    positional=["file"],
    help={
        "file": "Dump to restore, written by db.backup (pg_dump -Fc); `latest` takes the newest in BACKUP_DIR.",
        "yes": "Confirm that the database is replaced by the dump.",
        "force": "Restore even if the stack's services run (they lose their connections).",
        "host": HOST_HELP,
        "port": PORT_HELP,
        "superuser": SUPERUSER_HELP,
        "dry_run": DRY_RUN_HELP,
        "env": ENV_HELP,
    },
)
def restore(
    c,
    file,
    yes=False,
    force=False,
    host=None,
    port=None,
    superuser=DEFAULT_SUPERUSER,
    dry_run=False,
    env=None,
):
    """Replace the database with a dump, through a staging database; needs --yes."""
    settings = load_settings(env)
    admin = superuser_of(settings, host, port, superuser)
    database = settings.database
    path = latest_dump(settings) if file == "latest" else Path(file)
    file = str(path)
    if not yes and not dry_run:
        raise OpsError(
            f"restoring replaces database {database.name} at {admin.address} with {file}: "
            f"run again with --yes to confirm, or with --dry-run to see the steps"
        )
    if force:
        output.warn(f"--force: not checking whether stack {settings.stack_name} runs")
    else:
        dbrestore.reject_running_stack(settings)
    output.phase(f"restoring {database.name} at {admin.address} from {file}")
    steps, entries = with_postgres_errors(
        lambda: dbrestore.restore(admin, database, path, dry_run=dry_run)
    )
    if dry_run:
        for step in steps:
            output.info(step.description)
            for statement in step.statements:
                output.info(f"  {statement.as_string()};")
        output.status(
            "database",
            WOULD_CHANGE,
            f"{database.name} replaced by {file} ({entries} entries)",
        )
        return
    output.status(
        "database", CHANGED, f"{database.name} replaced by {file} ({entries} entries)"
    )


ns = Collection("db")
ns.add_task(bootstrap)
ns.add_task(check)
ns.add_task(backup)
ns.add_task(restore)
