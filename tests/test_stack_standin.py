"""The stand-in image keeps the parts of authentik's contract that the stack uses.

Each test runs the image with `docker run` on docker_gwbridge, where the
test's PostgreSQL and SMTP server on 172.31.250.1 are reachable.
"""

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from authops.localsvc import GWBRIDGE_GATEWAY, docker, ensure_dockerd, free_port
from authops.standin import LOOPBACK_IMAGE, TAG, ensure_standin_image
from tests.support.stacklab import DB_PASSWORD, start_database

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

IMAGE = f"{LOOPBACK_IMAGE}:{TAG}"
SECRET_KEY = "standin-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def database():
    if os.geteuid() != 0:
        pytest.skip("dockerd and PostgreSQL as the postgres user need root")
    ensure_dockerd()
    ensure_standin_image()
    base = Path(tempfile.mkdtemp(prefix="authops-standin-db-"))
    base.chmod(0o755)
    cluster = start_database(base / "postgres")
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def database_env(cluster, password: str = DB_PASSWORD) -> dict[str, str]:
    return {
        "AUTHENTIK_SECRET_KEY": SECRET_KEY,
        "AUTHENTIK_POSTGRESQL__HOST": GWBRIDGE_GATEWAY,
        "AUTHENTIK_POSTGRESQL__PORT": str(cluster.port),
        "AUTHENTIK_POSTGRESQL__NAME": "authentik",
        "AUTHENTIK_POSTGRESQL__USER": "authentik",
        "AUTHENTIK_POSTGRESQL__PASSWORD": password,
        "AUTHENTIK_POSTGRESQL__SSLMODE": "disable",
    }


def env_args(environment: dict[str, str]) -> list[str]:
    return [argument for key in environment for argument in ("-e", key)]


def run_once(
    *command: str, environment: dict[str, str], extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the image once and return its exit code and output.

    Values reach docker through its environment (`-e KEY`), not its arguments.
    """
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "docker_gwbridge", *extra]
        + env_args(environment)
        + [IMAGE, *command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **environment},
    )


def start(mode: str, environment: dict[str, str], user: str | None = None) -> str:
    """Start the server or worker in the background; return the container name."""
    name = f"authops-standin-{secrets.token_hex(4)}"
    user_args = ["--user", user] if user else []
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "docker_gwbridge"]
        + user_args
        + env_args(environment)
        + [IMAGE, mode],
        check=True,
        capture_output=True,
        env={**os.environ, **environment},
    )
    return name


def healthcheck(name: str, wait: float = 20) -> subprocess.CompletedProcess:
    """Run `ak healthcheck` in the container until it passes, or until `wait` seconds passed."""
    deadline = time.monotonic() + wait
    while True:
        result = docker("exec", name, "ak", "healthcheck", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(1)


@pytest.fixture
def container():
    names = []
    yield names
    for name in names:
        docker("rm", "-f", name, check=False)


def test_standin_without_secret_key_exits(database):
    environment = database_env(database)
    del environment["AUTHENTIK_SECRET_KEY"]
    result = run_once("server", environment=environment)
    assert result.returncode != 0
    assert "AUTHENTIK_SECRET_KEY is not set" in result.stdout


def test_standin_warns_unknown_variable(database):
    environment = {"AUTHENTIK_POSTGRESQL__PASWORD": "typo"}
    result = run_once("worker", environment=environment)
    assert "AUTHENTIK_POSTGRESQL__PASWORD" in result.stdout
    assert "unknown configuration variable" in result.stdout


def test_standin_unreadable_file_value_exits(database):
    environment = database_env(database)
    environment["AUTHENTIK_SECRET_KEY"] = "file:///run/secrets/missing"
    result = run_once("server", environment=environment)
    assert result.returncode != 0
    assert "/run/secrets/missing" in result.stdout


def test_server_healthy_with_indirect_values(database, container, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(f"  {SECRET_KEY}\n")
    environment = database_env(database)
    environment["DB_PASSWORD_SOURCE"] = DB_PASSWORD
    environment["AUTHENTIK_POSTGRESQL__PASSWORD"] = "env://DB_PASSWORD_SOURCE"
    environment["AUTHENTIK_SECRET_KEY"] = "file:///run/key"
    name = f"authops-standin-{secrets.token_hex(4)}"
    container.append(name)
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "docker_gwbridge"]
        + ["-v", f"{key_file}:/run/key:ro"]
        + env_args(environment)
        + [IMAGE, "server"],
        check=True,
        capture_output=True,
        env={**os.environ, **environment},
    )
    result = healthcheck(name)
    assert result.returncode == 0, result.stderr
    assert "healthy (server)" in result.stdout


def test_server_runs_as_uid_1000(database, container):
    name = start("server", database_env(database))
    container.append(name)
    assert docker("exec", name, "id", "-u").stdout.strip() == "1000"


def test_server_wrong_password_unhealthy(database, container):
    name = start("server", database_env(database, password="wrong-password-1234"))
    container.append(name)
    result = healthcheck(name, wait=3)
    assert result.returncode == 1
    assert "returned 503" in result.stderr
    logs = docker("logs", name).stdout
    assert "password authentication failed" in logs


def test_server_without_database_host_unhealthy(database, container):
    environment = {"AUTHENTIK_SECRET_KEY": SECRET_KEY}
    name = start("server", environment)
    container.append(name)
    result = healthcheck(name, wait=3)
    assert result.returncode == 1
    assert "503" in result.stderr


def test_worker_healthy_as_root(database, container):
    name = start("worker", database_env(database), user="root")
    container.append(name)
    result = healthcheck(name)
    assert result.returncode == 0, result.stderr
    assert "healthy (worker)" in result.stdout


def test_worker_wrong_password_unhealthy(database, container):
    name = start("worker", database_env(database, password="wrong-password-1234"))
    container.append(name)
    result = healthcheck(name, wait=3)
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname=GWBRIDGE_GATEWAY, port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


def email_env(port: int, use_tls: str = "false") -> dict[str, str]:
    return {
        "AUTHENTIK_EMAIL__HOST": GWBRIDGE_GATEWAY,
        "AUTHENTIK_EMAIL__PORT": str(port),
        "AUTHENTIK_EMAIL__USE_TLS": use_tls,
        "AUTHENTIK_EMAIL__USE_SSL": "false",
        "AUTHENTIK_EMAIL__TIMEOUT": "5",
        "AUTHENTIK_EMAIL__FROM": "sso@example.test",
    }


def test_email_sent(database, smtp_server):
    controller, inbox = smtp_server
    result = run_once(
        "test_email", "admin@example.test", environment=email_env(controller.port)
    )
    assert result.returncode == 0, result.stdout
    assert "sent a test email to admin@example.test" in result.stdout
    assert [m.rcpt_tos for m in inbox.messages] == [["admin@example.test"]]
    assert inbox.messages[0].mail_from == "sso@example.test"


def test_email_unreachable_fails(database):
    result = run_once(
        "test_email", "admin@example.test", environment=email_env(free_port())
    )
    assert result.returncode == 1
    assert "failed to send a test email" in result.stdout


def test_email_starttls_missing_fails(database, smtp_server):
    controller, _ = smtp_server
    environment = email_env(controller.port, use_tls="true")
    result = run_once("test_email", "admin@example.test", environment=environment)
    assert result.returncode == 1
    assert "STARTTLS" in result.stdout
