"""Units of the db namespace that need no server: names, SQL files, parsing, rotation."""

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from psycopg import sql

from authops import dbcheck, dbdump, dbrestore
from authops.errors import FAILED, OK, WARNING, OpsError
from authops.postgres import (
    SQL_DIR,
    Superuser,
    check_identifier,
    connection_failure,
    passfile_line,
    reject_unsupported,
    sql_text,
    statements,
)
from authops.scram import parse_verifier, password_matches, saslprep
from authops.settings import Settings

SUPERUSER = Superuser("db.example.test", 5432, "postgres", "disable")


@pytest.mark.parametrize(
    "name", ["authentik", "_x", "a1_b2", "a" * 63, "authentik_2025"]
)
def test_identifier_valid_accepted(name):
    check_identifier("AUTHENTIK_POSTGRESQL__NAME", name)


@pytest.mark.parametrize(
    "name",
    [
        'a"; DROP',
        "Robert'); --",
        "has space",
        "UpperCase",
        "a" * 64,
        "",
        "1starts_with_digit",
        "dash-name",
        "semi;colon",
        "new\nline",
        "caf\u00e9",
    ],
)
def test_identifier_hostile_rejected(name):
    with pytest.raises(OpsError, match="AUTHENTIK_POSTGRESQL__NAME"):
        check_identifier("AUTHENTIK_POSTGRESQL__NAME", name)


def test_statements_quote_identifiers():
    [statement] = statements("role_create", role=sql.Identifier('a"; DROP'))
    assert statement.as_string() == 'CREATE ROLE "a""; DROP" LOGIN'


def test_statements_quote_literals():
    [statement] = statements(
        "role_password",
        role=sql.Identifier("authentik"),
        verifier=sql.Literal("x'); DROP ROLE postgres; --"),
    )
    assert statement.as_string() == (
        "ALTER ROLE \"authentik\" PASSWORD 'x''); DROP ROLE postgres; --'"
    )


def test_statements_split_files():
    composed = statements(
        "grants_apply",
        database=sql.Identifier("authentik"),
        role=sql.Identifier("authentik"),
    )
    assert [statement.as_string() for statement in composed] == [
        'GRANT ALL ON DATABASE "authentik" TO "authentik"',
        'GRANT ALL ON SCHEMA public TO "authentik"',
    ]


def test_statements_missing_placeholder_fails():
    with pytest.raises(KeyError):
        statements("role_create")


@pytest.mark.parametrize(
    "path", sorted(SQL_DIR.glob("*.sql")), ids=lambda path: path.name
)
def test_sql_files_have_no_python_formatting(path):
    text = sql_text(path.stem)
    assert "%s" not in text
    assert not re.search(r"\{\d*\}", text)
    assert text


@pytest.mark.parametrize(
    ("password", "line"),
    [
        ("plain", "*:*:*:*:plain\n"),
        ("with:colon", "*:*:*:*:with\\:colon\n"),
        ("back\\slash", "*:*:*:*:back\\\\slash\n"),
        ("both\\:", "*:*:*:*:both\\\\\\:\n"),
        ("quote ' $x #y", "*:*:*:*:quote ' $x #y\n"),
    ],
)
def test_passfile_line_escapes(password, line):
    assert passfile_line(password) == line


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (
            {"version_num": 130011, "version": "13.11", "is_superuser": True},
            "older than 14",
        ),
        (
            {"version_num": 150004, "version": "15.4", "is_superuser": False},
            "not a superuser",
        ),
    ],
    ids=["old-server", "not-superuser"],
)
def test_unsupported_server_rejected(facts, message):
    with pytest.raises(OpsError, match=message):
        reject_unsupported(facts, SUPERUSER)


def test_supported_server_accepted():
    facts = {"version_num": 140000, "version": "14.0", "is_superuser": True}
    reject_unsupported(facts, SUPERUSER)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "connection to server at ... failed: Connection refused",
            "connection refused",
        ),
        ("connection to server at ... failed: timeout expired", "timed out"),
        ('could not translate host name "x" to address', "DNS lookup failed"),
        ("failed: No route to host", "host unreachable"),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1"', "pg_hba.conf"),
        ("FATAL:  remaining connection slots are reserved", "max_connections"),
        ("first line\nFATAL:  something else", "FATAL:  something else"),
    ],
)
def test_connection_failure_reason(message, reason):
    assert reason in connection_failure(message)


@pytest.mark.parametrize(
    ("line", "running"),
    [
        ("authentik_server 2/2", True),
        ("authentik_worker 0/1", True),
        ("authentik_server 0/0", False),
        ("authentik_server 1/1 (max 1 per node)", True),
        ("garbage", False),
        ("", False),
    ],
)
def test_stack_service_running(line, running):
    assert bool(dbrestore.is_running(line)) is running


def test_staging_name_fits_identifier():
    assert dbrestore.staging_name("authentik") == "authentik_restore"
    long_name = dbrestore.staging_name("a" * 63)
    assert len(long_name) == 63
    assert long_name.endswith("_restore")


def test_dump_names_sort_and_break_ties(tmp_path):
    moment = datetime(2025, 11, 2, 3, 4, 5, tzinfo=UTC)
    first = dbdump.new_dump_path(tmp_path, "authentik", moment)
    first.write_bytes(b"")
    second = dbdump.new_dump_path(tmp_path, "authentik", moment)
    second.write_bytes(b"")
    later = dbdump.new_dump_path(tmp_path, "authentik", moment.replace(second=6))
    later.write_bytes(b"")
    (tmp_path / "authentik_other-20250101T000000Z.dump").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert first.name == "authentik-20251102T030405Z.dump"
    assert second.name == "authentik-20251102T030405Z-1.dump"
    assert dbdump.existing_dumps(tmp_path, "authentik") == [first, second, later]


def test_dump_serial_never_reused(tmp_path):
    moment = datetime(2025, 11, 2, 3, 4, 5, tzinfo=UTC)
    (tmp_path / "authentik-20251102T030405Z-1.dump").write_bytes(b"")
    (tmp_path / "authentik-20251102T030405Z-2.dump").write_bytes(b"")
    path = dbdump.new_dump_path(tmp_path, "authentik", moment)
    assert path.name == "authentik-20251102T030405Z-3.dump"


def test_dump_name_stamped_in_utc(tmp_path):
    from datetime import timedelta, timezone

    moment = datetime(2025, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    path = dbdump.new_dump_path(tmp_path, "authentik", moment)
    assert path.name == "authentik-20241231T230000Z.dump"


def test_passfile_private_and_removed():
    with dbdump.passfile("pw:with\\odd") as path:
        mode = path.stat().st_mode & 0o777
        content = path.read_text()
    assert oct(mode) == "0o600"
    assert content == "*:*:*:*:pw\\:with\\\\odd\n"
    assert not path.exists()


def test_client_env_drops_pgpassword(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "superuser-secret")
    env = dbdump.client_env(Path("/tmp/passfile"))
    assert "PGPASSWORD" not in env
    assert env["PGPASSFILE"] == "/tmp/passfile"


def settings_with(**values: str) -> Settings:
    base = {"SERVER_REPLICAS": "2", "WORKER_REPLICAS": "2"}
    base.update(values)
    return Settings("unit", Path("unit.env"), base)


def test_max_connections_enough_ok():
    check, state, detail = dbcheck.check_max_connections(("100", "3"), settings_with())
    assert state == OK
    assert "estimate" in detail
    assert "97" in detail


def test_max_connections_short_warns():
    settings = settings_with(SERVER_REPLICAS="4", WORKER_REPLICAS="4")
    _, state, detail = dbcheck.check_max_connections(("100", "3"), settings)
    assert state == WARNING
    assert "raise max_connections" in detail


@pytest.mark.parametrize(
    ("row", "state"),
    [(("130011", "13.11 (Debian)"), FAILED), (("140000", "14.0"), OK)],
)
def test_check_version_threshold(row, state):
    assert dbcheck.check_version(row)[1] == state


@pytest.mark.parametrize(("encoding", "state"), [("UTF8", OK), ("LATIN1", FAILED)])
def test_check_encoding(encoding, state):
    assert dbcheck.check_encoding((encoding, ""))[1] == state


def test_summarize_failures_first():
    checks = [
        ("connect", OK, "fine"),
        ("max_connections", WARNING, "short"),
        ("encoding", FAILED, "LATIN1"),
    ]
    assert dbcheck.summarize(checks) == (FAILED, "encoding: LATIN1")


def test_summarize_all_ok_joins_details():
    checks = [("connect", OK, "a"), ("version", OK, "b")]
    assert dbcheck.summarize(checks) == (OK, "a, b")


def test_check_script_reads_password_from_stdin_only():
    from authops.settings import Database

    database = Database(
        "127.0.0.1", 5432, "authentik", "authentik", "s3cret!", "disable"
    )
    script = dbcheck.psql_script(database, "authops_check_x")
    assert "s3cret!" not in script
    assert "unset PGPASSWORD" in script
    assert "-w" in script.split()


@pytest.mark.parametrize(
    "stored", [None, "", "md5abcdef0123456789", "SCRAM-SHA-256$bad", "plain"]
)
def test_verifier_unparsable_never_matches(stored):
    assert parse_verifier(stored) is None
    assert not password_matches("anything", stored)


@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        ("ascii \x01 as is", b"ascii \x01 as is"),
        ("non\u00a0breaking", b"non breaking"),
        ("soft\u00adhyphen", b"softhyphen"),
        ("\ufb01", b"fi"),
        ("\u00ad", "\u00ad".encode()),
        ("bad\u0080control", "bad\u0080control".encode()),
    ],
    ids=["ascii", "space", "mapped-out", "nfkc", "empty", "prohibited"],
)
def test_saslprep_cases(password, prepared):
    assert saslprep(password) == prepared


def test_rotation_spares_new_dump_after_clock_change(tmp_path):
    future = tmp_path / "authentik-29990101T000000Z.dump"
    future.write_bytes(b"")
    values = {
        "AUTHENTIK_POSTGRESQL__HOST": "127.0.0.1",
        "AUTHENTIK_POSTGRESQL__PORT": "5432",
        "AUTHENTIK_POSTGRESQL__NAME": "authentik",
        "AUTHENTIK_POSTGRESQL__USER": "authentik",
        "AUTHENTIK_POSTGRESQL__PASSWORD": "unit-password",
        "AUTHENTIK_POSTGRESQL__SSLMODE": "disable",
        "BACKUP_DIR": str(tmp_path),
        "BACKUP_KEEP": "1",
    }
    plan = dbdump.plan_backup(Settings("unit", tmp_path / "unit.env", values))
    assert plan.remove == [future]
    assert plan.path not in plan.remove
