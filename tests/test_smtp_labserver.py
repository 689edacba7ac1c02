"""The lab SMTP server run as a background process: `python -m authops.labsmtp`."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from authops import smtp_direct
from authops.errors import OK
from authops.localsvc import free_port, wait_for_port
from authops.settings import load_settings
from tests.support import pki

USER = "lab-mailer"
PASSWORD = "Lab-Server-Pass-93ac61"
START_TIMEOUT = 15  # seconds


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> pki.Authority:
    return pki.make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca) -> pki.Issued:
    return pki.issue(ca, ["localhost", "127.0.0.1"])


def start(arguments: list[str], log: Path, stdin: str = "") -> subprocess.Popen:
    """Start the server in the background, its output going to `log`."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "authops.labsmtp", *arguments],
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    process.stdin.write(stdin.encode())
    process.stdin.close()
    return process


def stop(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=START_TIMEOUT)
    return code, log.read_text()


def settings_for(make_env, port: int):
    make_env(
        "test",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(port),
        SMTP_USERNAME=USER,
        SMTP_PASSWORD=PASSWORD,
        SMTP_TIMEOUT="5",
    )
    return load_settings("test")


def test_config_file_run_delivers(tmp_path, ca, server_cert, make_env):
    port = free_port()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    config = tmp_path / "labsmtp.json"
    config.write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "starttls_port": port,
                "cert_file": str(server_cert.cert_path),
                "key_file": str(server_cert.key_path),
                "user": USER,
                "password_file": str(password_file),
                "delivery_dir": str(tmp_path / "delivered"),
            }
        )
    )
    process = start(["--config", str(config)], tmp_path / "labsmtp.log")
    try:
        wait_for_port("127.0.0.1", port, START_TIMEOUT)
        outcome = smtp_direct.send_test(
            settings_for(make_env, port), "admin@lab.test", ca_file=ca.cert_path
        )
    finally:
        code, text = stop(process, tmp_path / "labsmtp.log")
    assert [result.state for result in outcome.phases] == [OK] * 7
    assert len(list((tmp_path / "delivered").glob("*.eml"))) == 1
    assert code == 0, text
    assert "labsmtp ready: STARTTLS on 127.0.0.1" in text
    assert PASSWORD not in text


def test_flags_and_stdin_password(tmp_path, ca, server_cert, make_env):
    port = free_port()
    process = start(
        [
            "--tls-port",
            str(port),
            "--cert-file",
            str(server_cert.cert_path),
            "--key-file",
            str(server_cert.key_path),
            "--user",
            USER,
            "--password-file",
            "-",
            "--delivery-dir",
            str(tmp_path / "delivered"),
        ],
        tmp_path / "labsmtp.log",
        stdin=PASSWORD + "\n",
    )
    try:
        wait_for_port("127.0.0.1", port, START_TIMEOUT)
        make_env(
            "test",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(port),
            SMTP_USERNAME=USER,
            SMTP_PASSWORD=PASSWORD,
            SMTP_USE_TLS="false",
            SMTP_USE_SSL="true",
        )
        settings = load_settings("test")
        phases = smtp_direct.probe(settings, ca_file=ca.cert_path)
    finally:
        code, text = stop(process, tmp_path / "labsmtp.log")
    assert phases[-1].phase == "auth"
    assert phases[-1].state == OK
    assert code == 0, text


@pytest.mark.parametrize(
    "config, message",
    [
        ({"password": "x"}, "put the password in password_file"),
        ({"starttls_port": 2587}, "missing setting(s): cert_file"),
        (
            {
                "cert_file": "c",
                "key_file": "k",
                "user": "u",
                "password_file": "p",
                "delivery_dir": "d",
            },
            "set at least one of --starttls-port",
        ),
        (
            {
                "starttls_port": 2587,
                "cert_file": "c",
                "key_file": "k",
                "user": "u",
                "password_file": "/nonexistent/password",
                "delivery_dir": "d",
            },
            "cannot read the password file /nonexistent/password",
        ),
        (
            {"starttls_port": 2587, "colour": "blue"},
            "unknown setting(s) in the config file: colour",
        ),
    ],
    ids=["password in file", "missing", "no port", "no password file", "unknown key"],
)
def test_bad_config_rejected(tmp_path, config, message):
    path = tmp_path / "labsmtp.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "authops.labsmtp", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 1
    assert message in result.stderr
