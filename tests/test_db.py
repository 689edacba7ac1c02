"""db tasks against a real PostgreSQL on a loopback port, with SCRAM passwords."""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from invoke import Context
from invoke.exceptions import Exit
from psycopg import sql

from authops import REPO_ROOT, db, dbbootstrap, dbcheck, dbdump, dbrestore
from authops.errors import FAILED, OpsError
from authops.localsvc import docker, ensure_dockerd, free_port
from authops.pgcluster import SUPERUSER, create_cluster
from authops.postgres import Superuser
from authops.scram import password_matches
from authops.settings import Database, Settings, load_settings

SUPERUSER_PASSWORD = "su-pass 'quoted' $HOME"
HOSTILE_PASSWORD = "pa ss'wo\"rd $HOME #no-comment \\back\\slash: 'end\\"
STATUS_LINE = re.compile(
    r"^\[(?P<name>[^\]]+)\] (?P<state>changed|unchanged|would change|ok|warning|failed)(?::|$)",
    re.MULTILINE,
)
INVOKE = REPO_ROOT / ".venv" / "bin" / "invoke"
ITEMS = ["role", "password", "database", "extension", "grants"]


@pytest.fixture(scope="session")
def cluster():
    """A PostgreSQL 15 cluster on a free loopback port; superuser password set."""
    # Under /tmp, not pytest's 0700 folder, so that the postgres user can enter it.
    base = Path(tempfile.mkdtemp(prefix="authops-test-pg-"))
    server = create_cluster(base, free_port(), SUPERUSER_PASSWORD)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def superuser_password(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", SUPERUSER_PASSWORD)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent/authops-test-pgpass")


@pytest.fixture
def db_env(make_env, cluster, tmp_path):
    """Write an env file for this test's own role and database; returns its name."""

    def make(name: str = "test", **changes: str) -> str:
        values = {
            "AUTHENTIK_POSTGRESQL__HOST": "127.0.0.1",
            "AUTHENTIK_POSTGRESQL__PORT": str(cluster.port),
            "AUTHENTIK_POSTGRESQL__NAME": unique,
            "AUTHENTIK_POSTGRESQL__USER": unique,
            "AUTHENTIK_POSTGRESQL__PASSWORD": f"app-{unique}-secret",
            "AUTHENTIK_POSTGRESQL__SSLMODE": "disable",
            "SWARM_MANAGERS": "local",
            "BACKUP_DIR": str(tmp_path / "backups"),
            "STACK_NAME": f"stack{unique}",
        }
        values.update(changes)
        make_env(name, **values)
        return name

    unique = f"t{uuid.uuid4().hex[:10]}"
    return make


def superuser_connect(cluster, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user=SUPERUSER,
        password=SUPERUSER_PASSWORD,
        dbname=dbname,
        autocommit=True,
    )


def login(database: Database, password: str | None = None) -> psycopg.Connection:
    return psycopg.connect(
        host=database.host,
        port=database.port,
        user=database.user,
        password=database.password if password is None else password,
        dbname=database.name,
        autocommit=True,
    )


def can_login(database: Database, password: str) -> bool:
    try:
        login(database, password).close()
    except psycopg.OperationalError:
        return False
    return True


def role_exists(cluster, name: str) -> bool:
    with superuser_connect(cluster) as connection:
        row = connection.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)
        ).fetchone()
    return row is not None


def database_row(cluster, name: str) -> tuple | None:
    with superuser_connect(cluster) as connection:
        return connection.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) "
            "FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()


def statuses(text: str) -> dict[str, str]:
    return {match["name"]: match["state"] for match in STATUS_LINE.finditer(text)}


def run_task(task, capsys, **kwargs) -> tuple[int, str]:
    """Call a task in this process; return its exit code and everything it printed."""
    code = 0
    try:
        task(Context(), **kwargs)
    except Exit as error:
        code = error.code
        message = error.message or ""
    else:
        message = ""
    captured = capsys.readouterr()
    return code, captured.out + captured.err + message


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run `.venv/bin/invoke ARGS` as the operator would, from the checkout."""
    return subprocess.run(
        [str(INVOKE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def settings_of(name: str) -> Settings:
    return load_settings(name)


def bootstrap(name: str, capsys, **kwargs) -> tuple[int, str]:
    return run_task(db.bootstrap, capsys, env=name, **kwargs)


# --- bootstrap ---------------------------------------------------------------


def test_bootstrap_cli_twice_second_unchanged(db_env):
    name = db_env()
    first = run_cli("db.bootstrap", "--env", name)
    second = run_cli("db.bootstrap", "--env", name)
    assert first.returncode == 0, first.stderr
    assert statuses(first.stdout) == dict.fromkeys(ITEMS, "changed")
    assert second.returncode == 0, second.stderr
    assert statuses(second.stdout) == dict.fromkeys(ITEMS, "unchanged")


def test_bootstrap_creates_owned_utf8_database(db_env, cluster, capsys):
    name = db_env()
    database = settings_of(name).database
    code, _ = bootstrap(name, capsys)
    assert code == 0
    assert database_row(cluster, database.name) == (database.user, "UTF8")


def test_bootstrap_role_can_create_schema(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    with login(settings_of(name).database) as connection:
        connection.execute("CREATE SCHEMA made_by_role")
        owner = connection.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
            "WHERE nspname = 'made_by_role'"
        ).fetchone()[0]
    assert owner == settings_of(name).database.user


def test_bootstrap_uuid_ossp_usable(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    with login(settings_of(name).database) as connection:
        value = connection.execute("SELECT uuid_generate_v4()").fetchone()[0]
    assert len(str(value)) == 36


def test_bootstrap_changed_password_applied(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    old = settings_of(name).database
    db_env(name, AUTHENTIK_POSTGRESQL__PASSWORD="a-brand-new-password-42")
    code, text = bootstrap(name, capsys)
    new = settings_of(name).database
    assert code == 0
    assert statuses(text) == {
        "role": "unchanged",
        "password": "changed",
        "database": "unchanged",
        "extension": "unchanged",
        "grants": "unchanged",
    }
    assert not can_login(new, old.password)
    assert can_login(new, new.password)
    assert new.password not in text


def test_bootstrap_replaces_md5_password(db_env, cluster, capsys):
    name = db_env()
    bootstrap(name, capsys)
    database = settings_of(name).database
    with superuser_connect(cluster) as connection:
        connection.execute("SET password_encryption = 'md5'")
        connection.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(database.user), sql.Literal(database.password)
            )
        )
    code, text = bootstrap(name, capsys)
    assert code == 0
    assert statuses(text)["password"] == "changed"
    assert "MD5" in text


def test_bootstrap_enables_login_of_existing_role(db_env, cluster, capsys):
    name = db_env()
    database = settings_of(name).database
    with superuser_connect(cluster) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(database.user))
        )
    code, text = bootstrap(name, capsys)
    assert code == 0
    assert statuses(text)["role"] == "changed"
    assert can_login(database, database.password)


def test_dry_run_changes_nothing_prints_no_password(db_env, cluster, capsys):
    name = db_env()
    database = settings_of(name).database
    code, text = bootstrap(name, capsys, dry_run=True)
    assert code == 0
    assert statuses(text) == dict.fromkeys(ITEMS, "would change")
    assert "CREATE DATABASE" in text
    assert "ALTER ROLE" in text
    assert database.password not in text
    assert "SCRAM-SHA-256$" not in text
    assert not role_exists(cluster, database.user)
    assert database_row(cluster, database.name) is None


def test_dry_run_after_password_change_changes_nothing(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    old = settings_of(name).database
    db_env(name, AUTHENTIK_POSTGRESQL__PASSWORD="another-new-password-77")
    code, text = bootstrap(name, capsys, dry_run=True)
    assert code == 0
    assert statuses(text)["password"] == "would change"
    assert can_login(old, old.password)
    assert "another-new-password-77" not in text


@pytest.mark.parametrize(
    ("create", "reason"),
    [
        ("CREATE DATABASE {database}", "is owned by postgres"),
        (
            "CREATE DATABASE {database} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0",
            "encoding LATIN1",
        ),
    ],
    ids=["other-owner", "other-encoding"],
)
def test_existing_database_conflict_refused(db_env, cluster, capsys, create, reason):
    name = db_env()
    database = settings_of(name).database
    with superuser_connect(cluster) as connection:
        connection.execute(
            sql.SQL(create).format(database=sql.Identifier(database.name))
        )
    before = database_row(cluster, database.name)
    code, text = bootstrap(name, capsys)
    assert code == 1
    assert reason in text
    assert "AUTHENTIK_POSTGRESQL__NAME" in text
    assert not role_exists(cluster, database.user)
    assert database_row(cluster, database.name) == before


def test_superuser_role_refused(db_env, cluster, capsys):
    name = db_env()
    database = settings_of(name).database
    with superuser_connect(cluster) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} SUPERUSER LOGIN").format(
                sql.Identifier(database.user)
            )
        )
    code, text = bootstrap(name, capsys)
    assert code == 1
    assert "is a superuser" in text
    assert database_row(cluster, database.name) is None


def test_bootstrap_without_password_no_tty_explains(db_env, capsys, monkeypatch):
    name = db_env()
    monkeypatch.delenv("PGPASSWORD")
    code, text = bootstrap(name, capsys)
    assert code == 1
    assert "PGPASSWORD" in text
    assert "~/.pgpass" in text


def test_bootstrap_wrong_superuser_password(db_env, capsys, monkeypatch):
    name = db_env()
    monkeypatch.setenv("PGPASSWORD", "not-the-superuser-password")
    code, text = bootstrap(name, capsys)
    assert code == 1
    assert "password authentication failed" in text


def test_bootstrap_password_from_pgpass(db_env, cluster, capsys, monkeypatch, tmp_path):
    name = db_env()
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{cluster.port}:*:postgres:{SUPERUSER_PASSWORD}\n")
    pgpass.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    code, text = bootstrap(name, capsys)
    assert code == 0, text
    assert statuses(text)["role"] == "changed"


def test_bootstrap_port_flag_overrides_env(db_env, cluster, capsys):
    name = db_env(AUTHENTIK_POSTGRESQL__PORT=str(free_port()))
    code, text = bootstrap(name, capsys, port=str(cluster.port), host="127.0.0.1")
    assert code == 0, text
    assert statuses(text)["database"] == "changed"


# --- names -------------------------------------------------------------------

HOSTILE_NAMES = [
    'a"; DROP',
    "Robert'); --",
    "has space",
    "UpperCase",
    "x" * 64,
    "",
]


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
@pytest.mark.parametrize("field", ["name", "user"])
def test_hostile_name_rejected_before_connect(hostile, field):
    values = {
        "host": "127.0.0.1",
        "port": free_port(),
        "name": "authentik",
        "user": "authentik",
        "password": "irrelevant-password",
        "sslmode": "disable",
    }
    values[field] = hostile
    database = Database(**values)
    superuser = Superuser("127.0.0.1", database.port, SUPERUSER, "disable")
    # Nothing listens on the port: a connection attempt would fail differently.
    with pytest.raises(OpsError, match="not a valid PostgreSQL name"):
        dbbootstrap.bootstrap(superuser, database, dry_run=False)


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_name_rejected_by_check_and_backup(hostile, tmp_path):
    values = {
        "AUTHENTIK_POSTGRESQL__HOST": "127.0.0.1",
        "AUTHENTIK_POSTGRESQL__PORT": "5432",
        "AUTHENTIK_POSTGRESQL__NAME": hostile,
        "AUTHENTIK_POSTGRESQL__USER": "authentik",
        "AUTHENTIK_POSTGRESQL__PASSWORD": "irrelevant-password",
        "AUTHENTIK_POSTGRESQL__SSLMODE": "disable",
        "BACKUP_DIR": str(tmp_path),
        "BACKUP_KEEP": "3",
    }
    settings = Settings("hostile", tmp_path / "hostile.env", values)
    with pytest.raises(OpsError, match="not a valid PostgreSQL name"):
        dbcheck.check_from_host(None, settings)
    with pytest.raises(OpsError, match="not a valid PostgreSQL name"):
        dbdump.plan_backup(settings)


def test_reserved_role_prefix_rejected():
    database = Database(
        "127.0.0.1", 5432, "authentik", "pg_app", "x-password", "disable"
    )
    superuser = Superuser("127.0.0.1", free_port(), SUPERUSER, "disable")
    with pytest.raises(OpsError, match="reserves"):
        dbbootstrap.bootstrap(superuser, database, dry_run=True)


@pytest.mark.parametrize("hostile", ['a"; DROP', "Robert'); --", "has space"])
def test_hostile_name_in_env_file_rejected(db_env, cluster, capsys, hostile):
    name = db_env(AUTHENTIK_POSTGRESQL__USER=quoted_env_value(hostile))
    code, text = bootstrap(name, capsys)
    assert code == 1
    assert "AUTHENTIK_POSTGRESQL__USER" in text
    assert not role_exists(cluster, hostile)


# --- passwords ---------------------------------------------------------------


def quoted_env_value(value: str) -> str:
    """Write a value in single quotes, as python-dotenv reads it back unchanged."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_hostile_password_end_to_end(db_env, capsys, sshd):
    name = db_env(AUTHENTIK_POSTGRESQL__PASSWORD=quoted_env_value(HOSTILE_PASSWORD))
    database = settings_of(name).database
    assert database.password == HOSTILE_PASSWORD
    code, text = bootstrap(name, capsys)
    assert code == 0, text
    assert can_login(database, HOSTILE_PASSWORD)

    code, text = run_task(db.check, capsys, env=name)
    assert code == 0, text
    assert statuses(text) == {"local": "ok"}

    db_env(
        name,
        AUTHENTIK_POSTGRESQL__PASSWORD=quoted_env_value(HOSTILE_PASSWORD),
        SWARM_MANAGERS=sshd.spec(),
        **sshd.env_values(),
    )
    code, text = run_task(db.check, capsys, env=name)
    assert code == 0, text
    assert statuses(text) == {sshd.spec(): "ok"}
    assert HOSTILE_PASSWORD not in text


@pytest.mark.parametrize(
    "password",
    [
        "plain-ascii-password",
        HOSTILE_PASSWORD,
        "tab\tand\x01control",
        "caf\u00e9-accents-\u00fc\u00df",
        "non\u00a0breaking\u2003spaces",
        "soft\u00adhyphen",
        "\ufb01-ligature",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
        "mixed-\u0627\u0644\u0639-ltr",
    ],
    ids=[
        "ascii",
        "hostile",
        "control",
        "accents",
        "spaces",
        "soft-hyphen",
        "ligature",
        "rtl",
        "mixed-bidi",
    ],
)
def test_scram_matches_server_verifier(cluster, password):
    role = f"s{uuid.uuid4().hex[:10]}"
    with superuser_connect(cluster) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        stored = connection.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()[0]
        verifier = connection.pgconn.encrypt_password(
            password.encode(), role.encode(), b"scram-sha-256"
        ).decode()
    assert password_matches(password, stored)
    assert password_matches(password, verifier)
    assert not password_matches(password + "x", stored)


def test_password_absent_from_argv_and_environ(db_env, capsys, monkeypatch):
    password = "argv-probe-" + uuid.uuid4().hex
    name = db_env(AUTHENTIK_POSTGRESQL__PASSWORD=password)
    sampler = ProcessSampler(password)
    with sampler:
        first = run_cli("db.bootstrap", "--env", name)
        check = run_cli("db.check", "--env", name)
        backup = run_cli("db.backup", "--env", name)
    outputs = [first, check, backup]
    assert [result.returncode for result in outputs] == [0, 0, 0], [
        result.stderr for result in outputs
    ]
    assert sampler.samples > 0
    assert sampler.leaks == []
    for result in outputs:
        assert password not in result.stdout
        assert password not in result.stderr


class ProcessSampler:
    """Scan /proc/*/cmdline and /proc/*/environ of other processes until stopped."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.leaks: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        own = str(os.getpid())
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and entry.name != own:
                    self._inspect(entry)
            self.samples += 1

    def _inspect(self, entry: Path) -> None:
        for part in ("cmdline", "environ"):
            try:
                data = (entry / part).read_bytes()
            except OSError:
                continue
            if self.secret in data:
                self.leaks.append(f"{entry.name}/{part}: {data[:200]!r}")


def test_built_commands_hold_no_password(db_env):
    name = db_env()
    database = settings_of(name).database
    commands = [
        " ".join(dbdump.dump_command(database)),
        " ".join(dbdump.restore_command(database, "staging", Path("x.dump"))),
        dbcheck.psql_script(database, "authops_check_x"),
    ]
    for command in commands:
        assert database.password not in command


# --- check -------------------------------------------------------------------


def test_check_reports_every_item(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    checks = dbcheck.check_managers(settings_of(name))
    assert [manager for manager, _ in checks] == ["local"]
    states = {check: state for check, state, _ in checks[0][1]}
    assert states == {
        "connect": "ok",
        "version": "ok",
        "encoding": "ok",
        "create schema": "ok",
        "max_connections": "ok",
    }


def test_check_warns_when_max_connections_short(db_env, capsys):
    name = db_env(SERVER_REPLICAS="20", WORKER_REPLICAS="20")
    bootstrap(name, capsys)
    code, text = run_task(db.check, capsys, env=name)
    assert code == 0
    assert statuses(text) == {"local": "warning"}
    assert "raise max_connections" in text


def test_check_fails_without_create_right(db_env, cluster, capsys):
    name = db_env()
    bootstrap(name, capsys)
    database = settings_of(name).database
    with superuser_connect(cluster) as connection:
        connection.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(
                sql.Identifier(database.name)
            )
        )
        connection.execute(
            sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(
                sql.Identifier(database.name), sql.Identifier(database.user)
            )
        )
    code, text = run_task(db.check, capsys, env=name)
    assert code == 1
    assert "create schema" in text
    assert "permission denied" in text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("server-down", "connection refused"),
        ("wrong-password", "authentication failed"),
        ("database-missing", "not found"),
        ("unreachable-host", "unreachable"),
    ],
)
def test_check_failure_reason(db_env, capsys, sshd, case, reason):
    name = db_env()
    bootstrap(name, capsys)
    database = settings_of(name).database
    changes = {}
    if case == "server-down":
        changes["AUTHENTIK_POSTGRESQL__PORT"] = str(free_port())
    elif case == "wrong-password":
        changes["AUTHENTIK_POSTGRESQL__PASSWORD"] = "not-the-password-99"
    elif case == "database-missing":
        changes["AUTHENTIK_POSTGRESQL__NAME"] = database.name + "_missing"
    else:
        changes["SWARM_MANAGERS"] = f"root@127.0.0.1:{free_port()},local"
        changes.update(sshd.env_values())
    db_env(name, **changes)
    code, text = run_task(db.check, capsys, env=name)
    assert code == 1
    assert reason in text
    assert FAILED in statuses(text).values()


def test_check_function_returns_triples(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    from authops.hosts import connect

    checks = dbcheck.check_from_host(connect("local"), settings_of(name))
    assert all(len(check) == 3 for check in checks)
    assert checks[0][0] == "connect"


# --- backup and restore ------------------------------------------------------


def fill_table(database: Database, rows: int) -> None:
    with login(database) as connection:
        connection.execute(
            "CREATE TABLE items (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), "
            "n int NOT NULL, label text)"
        )
        connection.execute(
            "INSERT INTO items (n, label) "
            "SELECT i, 'row ' || i FROM generate_series(1, %s) AS i",
            (rows,),
        )


def table_rows(database: Database) -> list[tuple]:
    with login(database) as connection:
        return connection.execute(
            "SELECT id, n, label FROM items ORDER BY n"
        ).fetchall()


def test_backup_file_private_and_listed(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    fill_table(settings.database, 10)
    path = dbdump.backup(settings)
    assert path.parent == settings.backup_dir
    assert dbdump.dump_pattern(settings.database.name).match(path.name)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert dbdump.verify_dump(path) > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_backup_keeps_newest(db_env, capsys):
    name = db_env(BACKUP_KEEP="2")
    bootstrap(name, capsys)
    settings = settings_of(name)
    made = [dbdump.backup(settings) for _ in range(4)]
    remaining = dbdump.existing_dumps(settings.backup_dir, settings.database.name)
    assert remaining == made[-2:]
    code, text = run_task(db.backup, capsys, env=name, keep="1")
    assert code == 0
    remaining = dbdump.existing_dumps(settings.backup_dir, settings.database.name)
    assert len(remaining) == 1
    assert statuses(text) == {
        str(remaining[0]): "changed",
        str(made[-2]): "changed",
        str(made[-1]): "changed",
    }


def test_backup_dry_run_writes_nothing(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    code, text = run_task(db.backup, capsys, env=name, dry_run=True)
    assert code == 0
    assert "would change" in text
    assert not settings.backup_dir.exists()


def test_backup_fails_on_wrong_password(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    db_env(name, AUTHENTIK_POSTGRESQL__PASSWORD="wrong-password-for-dump")
    settings = settings_of(name)
    code, text = run_task(db.backup, capsys, env=name)
    assert code == 1
    assert "password authentication failed" in text
    assert list(settings.backup_dir.iterdir()) == []


@pytest.fixture
def swarm():
    ensure_dockerd()


@pytest.mark.docker
def test_backup_restore_brings_back_rows(db_env, swarm, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    database = settings.database
    fill_table(database, 500)
    before = table_rows(database)
    path = dbdump.backup(settings)
    with login(database) as connection:
        connection.execute("DELETE FROM items WHERE n % 2 = 0")
        connection.execute("CREATE TABLE added_later (x int)")

    code, text = run_task(db.restore, capsys, env=name, file=str(path), yes=True)

    assert code == 0, text
    assert statuses(text) == {"database": "changed"}
    assert table_rows(database) == before
    with login(database) as connection:
        later = connection.execute("SELECT to_regclass('added_later')").fetchone()[0]
    assert later is None
    code, text = bootstrap(name, capsys)
    assert statuses(text) == dict.fromkeys(ITEMS, "unchanged")


@pytest.mark.docker
def test_restore_dry_run_changes_nothing(db_env, swarm, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    fill_table(settings.database, 5)
    path = dbdump.backup(settings)
    with login(settings.database) as connection:
        connection.execute("DELETE FROM items")
    code, text = run_task(db.restore, capsys, env=name, file=str(path), dry_run=True)
    assert code == 0, text
    assert statuses(text) == {"database": "would change"}
    assert "DROP DATABASE" in text
    assert table_rows(settings.database) == []


def test_restore_needs_yes(db_env, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    fill_table(settings.database, 3)
    path = dbdump.backup(settings)
    with login(settings.database) as connection:
        connection.execute("DELETE FROM items")
    code, text = run_task(db.restore, capsys, env=name, file=str(path))
    assert code == 1
    assert "--yes" in text
    assert table_rows(settings.database) == []


@pytest.mark.docker
def test_restore_refused_while_stack_runs(db_env, swarm, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    fill_table(settings.database, 3)
    path = dbdump.backup(settings)
    with login(settings.database) as connection:
        connection.execute("DELETE FROM items")
    service = f"{settings.stack_name}_server"
    # The image points at a closed loopback port: the task never starts, but
    # the service wants one replica, as a deployed stack does.
    docker(
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        service,
        "--label",
        f"com.docker.stack.namespace={settings.stack_name}",
        f"127.0.0.1:{free_port()}/authops-absent:1",
    )
    try:
        code, text = run_task(db.restore, capsys, env=name, file=str(path), yes=True)
        assert code == 1
        assert "is running" in text
        assert service in text
        assert table_rows(settings.database) == []

        code, text = run_task(
            db.restore, capsys, env=name, file=str(path), yes=True, force=True
        )
        assert code == 0, text
        assert len(table_rows(settings.database)) == 3
    finally:
        docker("service", "rm", service, check=False)


@pytest.mark.docker
def test_restore_failure_keeps_live_database(db_env, cluster, swarm, capsys):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    database = settings.database
    fill_table(database, 4)
    reader = f"{database.user}_reader"
    with superuser_connect(cluster) as connection:
        connection.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(reader)))
    with login(database) as connection:
        connection.execute(
            sql.SQL("GRANT SELECT ON items TO {}").format(sql.Identifier(reader))
        )
    path = dbdump.backup(settings)
    with login(database) as connection:
        connection.execute(
            sql.SQL("REVOKE SELECT ON items FROM {}").format(sql.Identifier(reader))
        )
        connection.execute("DELETE FROM items WHERE n = 1")
    with superuser_connect(cluster) as connection:
        connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))

    code, text = run_task(db.restore, capsys, env=name, file=str(path), yes=True)

    assert code == 1
    assert "live database is unchanged" in text
    assert len(table_rows(database)) == 3
    assert database_row(cluster, f"{database.name}_restore") is None


def test_restore_rejects_non_dump(db_env, capsys, tmp_path):
    name = db_env()
    bogus = tmp_path / "bogus.dump"
    bogus.write_text("not a dump\n")
    code, text = run_task(
        db.restore, capsys, env=name, file=str(bogus), yes=True, force=True
    )
    assert code == 1
    assert "not a readable pg_dump archive" in text


@pytest.mark.parametrize(("marked", "code"), [(True, 0), (False, 1)])
def test_restore_staging_leftover(db_env, cluster, capsys, marked, code):
    name = db_env()
    bootstrap(name, capsys)
    settings = settings_of(name)
    fill_table(settings.database, 2)
    path = dbdump.backup(settings)
    staging = f"{settings.database.name}_restore"
    with superuser_connect(cluster) as connection:
        connection.execute(
            sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging))
        )
        if marked:
            connection.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(staging), sql.Literal(dbrestore.STAGING_MARKER)
                )
            )

    result, text = run_task(
        db.restore, capsys, env=name, file=str(path), yes=True, force=True
    )

    assert result == code, text
    if marked:
        assert "left by a failed restore" in text
        assert database_row(cluster, staging) is None
    else:
        assert "was not made by db.restore" in text
        assert database_row(cluster, staging) is not None
