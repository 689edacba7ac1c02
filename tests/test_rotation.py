"""secrets.rotate on the lab: the lab's stack, PostgreSQL, relay and HAProxy.

The tasks run with a copy of env/lab.env in a folder of their own, so the
committed env file never changes. While a rotation runs, two pollers ask
for readiness: through HAProxy and on the server's published port on this
machine. The lab has two nodes with a server task each. With host-mode ports
each task updates stop-first, so its own port drops requests for a moment.
Meanwhile HAProxy sends them to the other node. The tests print the measured
numbers. Through HAProxy, no request may fail. A 503 from the published port
would mean a running task held an invalid database password: that must
never happen either. At the end, `lab.up` puts the lab back to env/lab.env's
values.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from authops import REPO_ROOT
from authops.db import superuser_of
from authops.envfile import parse_text
from authops.labenv import CA_CERT, SMTP_DIR, superuser_password
from authops.localsvc import GWBRIDGE_GATEWAY, free_port, wait_for_port
from authops.rotation import rotate_secret_key
from authops.rotationdb import password_secret, rotate_database_password
from authops.scram import password_matches
from authops.settings import load_settings
from authops.stackdeploy import deploy
from authops.stacksecrets import secret_versions
from tests.support.haproxylab import run_invoke
from tests.support.readiness import (
    haproxy_target,
    poll_during,
    published_target,
    request_ready,
)
from tests.support.stacklab import inspect_service, stack_secrets

# Marked lab, so that it runs last with the other lab tests: the lab it brings
# up, second node included, stays up until a later lab test takes it down.
pytestmark = [pytest.mark.docker, pytest.mark.lab, pytest.mark.timeout(900)]

ENV = "lab"
TIMEOUT = 300  # seconds for one deploy to converge
SETTLE = 3  # seconds of polling before and after a rotation
NEW_SMTP_PASSWORD = "rotated-smtp-pa$$word #2 0123456789"


def run_lab_up() -> None:
    """Run `invoke lab.up` with the committed env/lab.env (idempotent)."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OPS_ENV", "OPS_ENV_DIR")
    }
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "lab.up"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab, up, with a private copy of its env file selected by OPS_ENV_DIR."""
    if os.geteuid() != 0:
        pytest.skip("the lab runs dockerd, PostgreSQL and HAProxy as root")
    run_lab_up()

    env_dir = tmp_path_factory.mktemp("rotation") / "env"
    env_dir.mkdir()
    shutil.copy(REPO_ROOT / "env" / "lab.env", env_dir / "lab.env")
    (env_dir / "lab.env").chmod(0o600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPS_ENV_DIR", str(env_dir))
        patch.delenv("OPS_ENV", raising=False)
        patch.setenv("PGPASSWORD", superuser_password())
        yield env_dir

    run_lab_up()


@pytest.fixture
def targets():
    settings = load_settings(ENV)
    return [
        haproxy_target(
            settings.number("HAPROXY_BIND_PORT"), settings.domain, str(CA_CERT)
        ),
        published_target(settings.number("HTTPS_PORT")),
    ]


def admin_of(settings):
    return superuser_of(settings, "127.0.0.1", None, "postgres")


def env_file(lab: Path) -> Path:
    return lab / "lab.env"


def service_spec(settings, name: str) -> dict:
    return inspect_service(f"{settings.stack_name}_{name}")["Spec"]


def spec_versions(settings) -> dict[str, int]:
    return {
        name: inspect_service(f"{settings.stack_name}_{name}")["Version"]["Index"]
        for name in ("server", "worker")
    }


def service_env(settings, name: str) -> dict[str, str]:
    items = service_spec(settings, name)["TaskTemplate"]["ContainerSpec"]["Env"]
    return dict(item.split("=", 1) for item in items)


def service_secrets(settings, name: str) -> set[str]:
    container = service_spec(settings, name)["TaskTemplate"]["ContainerSpec"]
    return {ref["SecretName"] for ref in container["Secrets"]}


def role_row(settings, role: str) -> dict | None:
    with admin_of(settings).connect() as connection:
        return connection.execute(
            "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s",
            (role,),
        ).fetchone()


def measure(targets, action):
    """Run `action` while polling readiness; return its result and each poller's tally."""
    pollers = poll_during(targets)
    time.sleep(SETTLE)
    try:
        result = action()
    finally:
        time.sleep(SETTLE)
        tallies = {poller.target.name: poller.stop() for poller in pollers}
    return result, tallies


def print_tallies(label: str, tallies) -> None:
    """Print the measured readiness figures; `pytest -s` shows them."""
    for name, tally in tallies.items():
        print(f"{label}: {tally.summary(name)}")


def test_db_dry_run_changes_nothing(lab):
    settings = load_settings(ENV)
    text = env_file(lab).read_bytes()
    before = (role_row(settings, "authentik"), role_row(settings, "authentik_next"))
    versions = spec_versions(settings)
    rotate_database_password(settings, admin_of(settings), TIMEOUT, dry_run=True)
    assert env_file(lab).read_bytes() == text
    assert role_row(settings, "authentik") == before[0]
    assert role_row(settings, "authentik_next") == before[1]
    assert spec_versions(settings) == versions


def test_db_rotation_keeps_serving(lab, targets, capsys):
    settings = load_settings(ENV)
    old_password = settings.database.password
    old_secret = password_secret(settings, old_password)

    _, tallies = measure(
        targets,
        lambda: rotate_database_password(
            settings, admin_of(settings), TIMEOUT, dry_run=False
        ),
    )
    captured = capsys.readouterr()
    out = captured.out
    print_tallies("db rotation", tallies)

    rotated = load_settings(ENV)
    new_password = rotated.database.password
    verifier = role_row(rotated, "authentik")["rolpassword"]
    assert new_password != old_password
    assert new_password not in out
    assert env_file(lab).stat().st_mode & 0o777 == 0o600
    assert password_matches(new_password, verifier)
    assert not password_matches(old_password, verifier)
    assert role_row(rotated, "authentik_next")["rolcanlogin"] is False
    for name in ("server", "worker"):
        assert service_env(rotated, name)["AUTHENTIK_POSTGRESQL__USER"] == "authentik"
        assert password_secret(rotated, new_password) in service_secrets(rotated, name)
    assert old_secret not in stack_secrets(rotated.stack_name)
    assert "not `invoke stack.rollback`" in captured.err
    assert tallies["published"].outcomes["503"] == 0
    assert tallies["haproxy"].total > 0
    assert tallies["haproxy"].failed == 0
    for target in targets:
        assert request_ready(target) == "200"


def test_new_db_password_logs_in(lab):
    database = load_settings(ENV).database
    with psycopg.connect(
        host="127.0.0.1",
        port=database.port,
        user=database.user,
        password=database.password,
        dbname=database.name,
    ) as connection:
        row = connection.execute("SELECT current_user").fetchone()
    assert row[0] == "authentik"


def test_db_rotation_finishes_interrupted_one(lab, targets, capsys):
    settings = load_settings(ENV)
    # An interrupted rotation leaves only the new password in the env file.
    chosen = "interrupted-rotation-0123456789-abcdef"
    text = env_file(lab).read_text()
    current = settings.database.password
    env_file(lab).write_text(text.replace(f"={current}\n", f"={chosen}\n"))

    _, tallies = measure(
        targets,
        lambda: rotate_database_password(
            load_settings(ENV), admin_of(settings), TIMEOUT, dry_run=False
        ),
    )
    out = capsys.readouterr()
    print_tallies("db rotation, resumed", tallies)

    rotated = load_settings(ENV)
    assert "the last rotation did not finish" in out.err
    assert rotated.database.password == chosen
    assert password_matches(chosen, role_row(rotated, "authentik")["rolpassword"])
    assert tallies["published"].outcomes["503"] == 0


@pytest.fixture
def relay(tmp_path):
    """A second relay on the lab's gateway address that accepts only NEW_SMTP_PASSWORD."""
    port, tls_port = free_port(GWBRIDGE_GATEWAY), free_port(GWBRIDGE_GATEWAY)
    delivery = tmp_path / "mail"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authops.labsmtp",
            "--host",
            GWBRIDGE_GATEWAY,
            "--starttls-port",
            str(port),
            "--tls-port",
            str(tls_port),
            "--cert-file",
            str(SMTP_DIR / "tls" / "fullchain.pem"),
            "--key-file",
            str(SMTP_DIR / "tls" / "privkey.pem"),
            "--user",
            load_settings(ENV).smtp.username,
            "--password-file",
            "-",
            "--delivery-dir",
            str(delivery),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    process.stdin.write(NEW_SMTP_PASSWORD + "\n")
    process.stdin.close()
    wait_for_port(GWBRIDGE_GATEWAY, port, timeout=15)
    yield port, delivery
    process.kill()
    process.wait(timeout=10)


def rotate_smtp_with(password: str, lab: Path, *flags: str):
    return subprocess.run(
        [sys.executable, "-m", "invoke", "secrets.rotate", "--which", "smtp"]
        + ["--from-stdin", "--env", ENV, *flags],
        cwd=REPO_ROOT,
        env={**os.environ, "OPS_ENV_DIR": str(lab)},
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_smtp_wrong_password_changes_nothing(lab):
    settings = load_settings(ENV)
    text = env_file(lab).read_bytes()
    versions = spec_versions(settings)
    result = rotate_smtp_with("not-the-relays-password-123", lab)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "rejected the new password in phase auth" in out
    assert "not-the-relays-password-123" not in out
    assert env_file(lab).read_bytes() == text
    assert spec_versions(settings) == versions


def test_smtp_rotation_switches_relay_password(lab, relay, targets):
    port, delivery = relay
    # First point the stack at the second relay, still with the old password.
    text = env_file(lab).read_text()
    env_file(lab).write_text(text.replace("SMTP_PORT=2587\n", f"SMTP_PORT={port}\n"))
    assert deploy(load_settings(ENV), TIMEOUT)
    before = load_settings(ENV)
    old_secret = secret_versions(before)["smtp_password"].name

    dry = rotate_smtp_with(NEW_SMTP_PASSWORD, lab, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert load_settings(ENV).smtp.password == before.smtp.password

    result, tallies = measure(targets, lambda: rotate_smtp_with(NEW_SMTP_PASSWORD, lab))
    out = result.stdout + result.stderr
    print_tallies("smtp rotation", tallies)
    assert result.returncode == 0, out
    assert NEW_SMTP_PASSWORD not in out
    rotated = load_settings(ENV)
    new_secret = secret_versions(rotated)["smtp_password"].name
    assert rotated.smtp.password == NEW_SMTP_PASSWORD
    assert parse_text(env_file(lab).read_text()).values()["SMTP_PORT"] == str(port)
    assert new_secret in service_secrets(rotated, "worker")
    assert old_secret not in service_secrets(rotated, "worker")
    # The previous spec still mounts the old version, for stack.rollback.
    assert old_secret in stack_secrets(rotated.stack_name)
    assert tallies["published"].outcomes["503"] == 0

    mail = run_invoke(
        "smtp.test",
        "--via",
        "authentik",
        "--to",
        "admin@sso.lab.test",
        "--env",
        ENV,
        env_dir=lab,
    )
    assert mail.returncode == 0, mail.stdout + mail.stderr
    assert list(delivery.glob("*.eml"))


def test_secret_key_needs_confirmation(lab):
    text = env_file(lab).read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "secrets.rotate", "--which", "secret-key"],
        cwd=REPO_ROOT,
        env={**os.environ, "OPS_ENV_DIR": str(lab)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert "logs every user out" in result.stderr
    assert env_file(lab).read_bytes() == text


def test_secret_key_dry_run_changes_nothing(lab, capsys):
    settings = load_settings(ENV)
    text = env_file(lab).read_bytes()
    versions = spec_versions(settings)
    rotate_secret_key(settings, yes=False, timeout=TIMEOUT, dry_run=True)
    out = capsys.readouterr().out
    assert "would set a new AUTHENTIK_SECRET_KEY" in out
    assert "would create secret" in out
    assert env_file(lab).read_bytes() == text
    assert spec_versions(settings) == versions


def test_secret_key_rotation_renames_secrets(lab, targets, capsys):
    settings = load_settings(ENV)
    old_names = {version.name for version in secret_versions(settings).values()}

    _, tallies = measure(
        targets,
        lambda: rotate_secret_key(settings, yes=True, timeout=TIMEOUT, dry_run=False),
    )
    out = capsys.readouterr().out
    print_tallies("secret-key rotation", tallies)

    rotated = load_settings(ENV)
    new_names = {version.name for version in secret_versions(rotated).values()}
    assert rotated.secret_key != settings.secret_key
    assert rotated.secret_key not in out
    assert len(rotated.secret_key) >= 50
    for name in ("server", "worker"):
        assert service_secrets(rotated, name) == new_names
    assert not old_names & new_names
    assert tallies["published"].outcomes["503"] == 0
    assert tallies["haproxy"].total > 0
    assert tallies["haproxy"].failed == 0
    for target in targets:
        assert request_ready(target) == "200"
