"""smtp.test --via direct against the real lab SMTP server on loopback.

Each test starts its own server (STARTTLS, implicit-TLS and silent ports)
with a certificate from a throwaway CA, so its delivery folder holds only
that test's messages.
"""

import datetime
import email
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke import Context
from invoke.exceptions import Exit

from authops import REPO_ROOT, output, smtp, smtp_direct
from authops import smtp_diagnosis as diagnosis
from authops.errors import FAILED, OK
from authops.labsmtp import LabSmtpConfig, LabSmtpServer
from authops.localsvc import free_port
from authops.settings import load_settings
from tests.support import pki

USER = "lab-mailer"
PASSWORD = "Test-Smtp-Pass-4d1f8b2a"
SENDER = "authentik@sso.lab.test"
RECIPIENT = "admin@lab.test"
REJECTED_RECIPIENT = "nobody@lab.test"
TIMEOUT = 2  # SMTP_TIMEOUT in seconds for every test
TIMING_MARGIN = 1.5  # seconds allowed beyond SMTP_TIMEOUT for a timed-out step


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> pki.Authority:
    return pki.make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca) -> pki.Issued:
    return pki.issue(ca, ["localhost", "127.0.0.1"])


def start_server(tmp_path: Path, issued: pki.Issued) -> LabSmtpServer:
    config = LabSmtpConfig(
        cert_file=issued.cert_path,
        key_file=issued.key_path,
        user=USER,
        password=PASSWORD,
        delivery_dir=tmp_path / "delivered",
        starttls_port=free_port(),
        tls_port=free_port(),
        silent_port=free_port(),
        allowed_sender_domains=("sso.lab.test",),
        rejected_recipients=(REJECTED_RECIPIENT,),
    )
    return LabSmtpServer(config).start()


@pytest.fixture
def server(tmp_path, server_cert):
    lab = start_server(tmp_path, server_cert)
    yield lab
    lab.stop()


MODES = {
    "starttls": {"SMTP_USE_TLS": "true", "SMTP_USE_SSL": "false"},
    "implicit": {"SMTP_USE_TLS": "false", "SMTP_USE_SSL": "true"},
}


def port_of(server: LabSmtpServer, port: str) -> int:
    ports = {
        "starttls": server.config.starttls_port,
        "implicit": server.config.tls_port,
        "silent": server.config.silent_port,
        "closed": free_port(),
    }
    return ports[port]


@pytest.fixture
def smtp_env(make_env, server):
    """Write env/test.env for the server: MODE's TLS flags against PORT, with changes."""

    def write(mode: str = "starttls", port: str | None = None, **changes: str):
        values = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port_of(server, port or mode)),
            "SMTP_USERNAME": USER,
            "SMTP_PASSWORD": PASSWORD,
            "SMTP_TIMEOUT": str(TIMEOUT),
            "SMTP_FROM": SENDER,
            **MODES[mode],
            **changes,
        }
        return make_env("test", **values)

    return write


def run_task(capsys, **options) -> tuple[int, str]:
    """Run smtp.test in this process; return the exit code and stdout, stderr and exit message."""
    try:
        smtp.send_test(Context(), env="test", **options)
        code, message = 0, ""
    except Exit as error:
        code, message = error.code, str(error.message)
    captured = capsys.readouterr()
    return code, captured.out + captured.err + message


def delivered(server: LabSmtpServer) -> list[email.message.Message]:
    return [email.message_from_bytes(path.read_bytes()) for path in server.messages()]


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_send_delivers_message(server, smtp_env, ca, capsys, mode):
    smtp_env(mode)
    code, text = run_task(capsys, to=RECIPIENT, ca_file=str(ca.cert_path))
    messages = delivered(server)
    assert code == 0, text
    assert len(messages) == 1
    test_id = messages[0]["X-Authops-Test-Id"]
    assert test_id in messages[0]["Subject"]
    assert test_id in text
    assert messages[0]["Message-ID"].strip() in text
    assert messages[0]["From"] == SENDER
    assert messages[0]["To"] == RECIPIENT


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_send_reports_every_phase(server, smtp_env, ca, mode):
    smtp_env(mode)
    outcome = smtp_direct.send_test(
        load_settings("test"), RECIPIENT, ca_file=ca.cert_path
    )
    phases = {result.phase: result for result in outcome.phases}
    queue_id = server.messages()[0].stem
    assert list(phases) == (
        ["connect", "tls", "greeting", "auth", "sender", "recipient", "data"]
        if mode == "implicit"
        else ["connect", "greeting", "tls", "auth", "sender", "recipient", "data"]
    )
    assert all(result.state == OK for result in outcome.phases)
    assert "TLSv1.3" in phases["tls"].detail
    assert "CN=localhost" in phases["tls"].detail
    assert "expires" in phases["tls"].detail
    assert outcome.queue_id == queue_id
    assert queue_id in phases["data"].detail


# (case, TLS mode, port, env changes, --to, --ca-file given,
#  failed phase, text in the detail, text in the cause)
FAILURES = [
    (
        "wrong password",
        "starttls",
        None,
        {"SMTP_PASSWORD": "Wrong-Pass-99887766"},
        RECIPIENT,
        True,
        "auth",
        "535",
        "Authentication failed",
    ),
    (
        "starttls against implicit port",
        "starttls",
        "implicit",
        {},
        RECIPIENT,
        True,
        "greeting",
        "timed out waiting for the greeting",
        "SMTP_USE_SSL=true",
    ),
    (
        "implicit against starttls port",
        "implicit",
        "starttls",
        {},
        RECIPIENT,
        True,
        "tls",
        "TLS handshake failed",
        "SMTP_USE_TLS=true",
    ),
    (
        "untrusted certificate",
        "starttls",
        None,
        {},
        RECIPIENT,
        False,
        "tls",
        "certificate verification failed",
        "--ca-file",
    ),
    (
        "untrusted certificate implicit",
        "implicit",
        None,
        {},
        RECIPIENT,
        False,
        "tls",
        "certificate verification failed",
        "--ca-file",
    ),
    (
        "rejected sender",
        "starttls",
        None,
        {"SMTP_FROM": "authentik@unverified.test"},
        RECIPIENT,
        True,
        "sender",
        "550 5.7.1",
        "domain of SMTP_FROM=authentik@unverified.test is probably not verified",
    ),
    (
        "rejected recipient",
        "starttls",
        None,
        {},
        REJECTED_RECIPIENT,
        True,
        "recipient",
        "550",
        f"recipient {REJECTED_RECIPIENT} was rejected",
    ),
    (
        "silent server",
        "starttls",
        "silent",
        {},
        RECIPIENT,
        True,
        "greeting",
        "timed out waiting for the greeting",
        "SMTP_USE_SSL=true",
    ),
    (
        "silent server implicit",
        "implicit",
        "silent",
        {},
        RECIPIENT,
        True,
        "tls",
        "TLS handshake timed out",
        "SMTP_USE_TLS=true",
    ),
    (
        "connection refused",
        "starttls",
        "closed",
        {},
        RECIPIENT,
        True,
        "connect",
        "refused",
        "The connection was refused",
    ),
    (
        "auth not configured",
        "starttls",
        None,
        {"SMTP_USERNAME": "", "SMTP_PASSWORD": ""},
        RECIPIENT,
        True,
        "sender",
        "530",
        "requires SMTP AUTH",
    ),
]


@pytest.mark.parametrize(
    "mode, port, changes, to, with_ca, phase, detail, cause",
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_failure_diagnosed(
    server, smtp_env, ca, capsys, mode, port, changes, to, with_ca, phase, detail, cause
):
    smtp_env(mode, port, **changes)
    started = time.monotonic()
    code, text = run_task(capsys, to=to, ca_file=str(ca.cert_path) if with_ca else None)
    elapsed = time.monotonic() - started
    assert code == 1
    assert f"[{phase}] failed: " in text
    assert detail in text
    assert cause in text
    assert f"failed in phase {phase}" in text
    assert delivered(server) == []
    assert elapsed < 2 * TIMEOUT + TIMING_MARGIN


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_silent_server_fails_within_timeout(server, smtp_env, ca, mode):
    smtp_env(mode, "silent")
    started = time.monotonic()
    phases = smtp_direct.probe(load_settings("test"), ca_file=ca.cert_path)
    elapsed = time.monotonic() - started
    assert phases[-1].state == FAILED
    assert elapsed < TIMEOUT + TIMING_MARGIN


def test_crossed_starttls_fails_within_timeout(server, smtp_env, ca):
    smtp_env("starttls", "implicit")
    started = time.monotonic()
    phases = smtp_direct.probe(load_settings("test"), ca_file=ca.cert_path)
    elapsed = time.monotonic() - started
    assert phases[-1].phase == "greeting"
    assert elapsed < TIMEOUT + TIMING_MARGIN


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_probe_sends_nothing(server, smtp_env, ca, capsys, mode):
    smtp_env(mode)
    code, text = run_task(capsys, probe=True, ca_file=str(ca.cert_path))
    assert code == 0, text
    assert "[auth] ok: 235" in text
    assert "[sender]" not in text
    assert delivered(server) == []


def test_probe_returns_phases(server, smtp_env, ca):
    smtp_env("starttls")
    phases = smtp_direct.probe(load_settings("test"), ca_file=ca.cert_path)
    assert [result.phase for result in phases] == ["connect", "greeting", "tls", "auth"]
    assert all(result.state == OK for result in phases)


@pytest.fixture
def no_redaction(monkeypatch):
    """Turn the output redactor off, so that only the code keeps the password out."""
    monkeypatch.setattr(output, "_secrets", set())
    monkeypatch.setattr(output, "register_secret", lambda value: None)


@pytest.mark.parametrize(
    "case, mode, port, changes, to",
    [
        ("success", "starttls", None, {}, RECIPIENT),
        ("success implicit", "implicit", None, {}, RECIPIENT),
        (
            "wrong password",
            "starttls",
            None,
            {"SMTP_PASSWORD": PASSWORD + "x"},
            RECIPIENT,
        ),
        ("rejected recipient", "starttls", None, {}, REJECTED_RECIPIENT),
        ("crossed modes", "implicit", "starttls", {}, RECIPIENT),
    ],
)
def test_password_never_printed(
    server, smtp_env, ca, capsys, no_redaction, case, mode, port, changes, to
):
    smtp_env(mode, port, **changes)
    password = changes.get("SMTP_PASSWORD", PASSWORD)
    code, text = run_task(capsys, to=to, ca_file=str(ca.cert_path))
    assert code == (0 if case.startswith("success") else 1), text
    assert password not in text


def test_password_absent_from_results(server, smtp_env, ca):
    smtp_env("starttls", SMTP_PASSWORD=PASSWORD + "x")
    phases = smtp_direct.probe(load_settings("test"), ca_file=ca.cert_path)
    texts = [result.detail + result.cause for result in phases]
    assert phases[-1].phase == "auth"
    assert not any(PASSWORD in text for text in texts)


@pytest.mark.parametrize(
    "case, names, not_after, cause",
    [
        ("expired", ["localhost", "127.0.0.1"], "past", "has expired"),
        ("wrong name", ["relay.other.test"], None, "not valid for 127.0.0.1"),
    ],
)
def test_bad_certificate_diagnosed(
    tmp_path, ca, make_env, capsys, case, names, not_after, cause
):
    expiry = None
    if not_after == "past":
        expiry = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    issued = pki.issue(ca, names, not_after=expiry, stem=case.replace(" ", "-"))
    lab = start_server(tmp_path, issued)
    try:
        make_env(
            "test",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(lab.config.starttls_port),
            SMTP_USERNAME=USER,
            SMTP_PASSWORD=PASSWORD,
            SMTP_TIMEOUT=str(TIMEOUT),
        )
        code, text = run_task(capsys, to=RECIPIENT, ca_file=str(ca.cert_path))
    finally:
        lab.stop()
    assert code == 1
    assert "[tls] failed: certificate verification failed" in text
    assert cause in text


def test_missing_ca_file_rejected(server, smtp_env, capsys, tmp_path):
    smtp_env("starttls")
    code, text = run_task(capsys, to=RECIPIENT, ca_file=str(tmp_path / "none.pem"))
    assert code == 1
    assert "--ca-file" in text
    assert "file not found" in text


@pytest.mark.parametrize(
    "to, message",
    [
        (None, "--to is missing"),
        ("not-an-address", "is not an e-mail address"),
        ("a@b.test\r\nBcc: x@y.test", "is not an e-mail address"),
    ],
)
def test_recipient_checked(server, smtp_env, capsys, to, message):
    smtp_env("starttls")
    code, text = run_task(capsys, to=to)
    assert code == 1
    assert message in text
    assert delivered(server) == []


def test_via_rejected_unknown(capsys, smtp_env):
    smtp_env("starttls")
    code, text = run_task(capsys, to=RECIPIENT, via="pigeon")
    assert code == 1
    assert "--via 'pigeon' is not valid" in text


# Each DNS case runs smtp.test in a new network namespace that has only
# loopback, so no query leaves this machine.
SANDBOX = [sys.executable, "-m", "tests.support.dns_sandbox"]
DNS_CASES = [
    (
        "no resolver",
        ["unshare", "--net"],
        "DNS lookup of smtp.relay.invalid failed",
        "the resolver gave no answer",
    ),
    (
        "nxdomain",
        ["unshare", "--net", "--mount", *SANDBOX, "--"],
        "DNS lookup of smtp.relay.invalid failed",
        "the name smtp.relay.invalid does not exist",
    ),
    (
        "silent resolver",
        ["unshare", "--net", "--mount", *SANDBOX, "--silent", "--"],
        f"DNS lookup of smtp.relay.invalid timed out after {TIMEOUT} s",
        "the resolver gave no answer",
    ),
]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
@pytest.mark.parametrize(
    "prefix, detail, cause",
    [case[1:] for case in DNS_CASES],
    ids=[case[0] for case in DNS_CASES],
)
def test_dns_failure_diagnosed(smtp_env, prefix, detail, cause):
    smtp_env("starttls", SMTP_HOST="smtp.relay.invalid")
    command = [*prefix, str(Path(sys.executable).with_name("invoke"))]
    started = time.monotonic()
    result = subprocess.run(
        [*command, "smtp.test", "--env", "test", "--to", RECIPIENT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    if "unshare failed" in result.stderr:
        pytest.skip(f"cannot create namespaces: {result.stderr.strip()}")
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert f"[connect] failed: {detail}" in text
    assert f"DNS lookup failed: {cause}" in text
    assert "failed in phase connect" in text
    assert elapsed < TIMEOUT + 5  # invoke's start-up is about a second


def test_cli_sends_and_exits_zero(server, smtp_env, ca):
    smtp_env("starttls")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("invoke")),
            "smtp.test",
            "--env",
            "test",
            "--to",
            RECIPIENT,
            "--ca-file",
            str(ca.cert_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[data] ok: 250" in result.stdout
    assert len(delivered(server)) == 1
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "reply, queue_id",
    [
        ("2.0.0 Ok: queued as 4Fq2Xb0mZ9z", "4Fq2Xb0mZ9z"),
        (
            "2.0.0 OK <DM6PR01MB1234.namprd01.prod.outlook.com> [Hostname=DM6PR01MB1234]",
            "DM6PR01MB1234.namprd01.prod.outlook.com",
        ),
        ("OK id=1rXyZa-000Abc-2Q", "1rXyZa-000Abc-2Q"),
        ("2.6.0 <a1b2c3@example.test> Queued mail for delivery", "a1b2c3@example.test"),
        ("OK", None),
        ("", None),
    ],
)
def test_parse_queue_id(reply, queue_id):
    assert smtp_direct.parse_queue_id(reply) == queue_id


@pytest.mark.parametrize(
    "host, code, expected",
    [
        ("smtp.office365.com", 535, "Authenticated SMTP is enabled"),
        ("smtp-mail.outlook.com", 535, "security defaults"),
        ("smtp.azurecomm.net", 535, "SMTP Username resource"),
        ("smtp.azurecomm.net", 535, "client secret"),
        ("mail.example.test", 535, "the credentials are wrong"),
        ("smtp.office365.com", 454, "temporary failure"),
    ],
)
def test_auth_cause_names_provider(make_env, host, code, expected):
    make_env("test", SMTP_HOST=host)
    assert expected in diagnosis.auth_cause(load_settings("test").smtp, code)


@pytest.mark.parametrize(
    "host, expected",
    [
        ("smtp.azurecomm.net", "verified domain that is connected"),
        ("smtp.office365.com", "Send As permission"),
        ("mail.example.test", "probably not verified"),
    ],
)
def test_sender_cause_names_provider(make_env, host, expected):
    make_env("test", SMTP_HOST=host)
    cause = diagnosis.sender_cause(load_settings("test").smtp, 550, "5.7.1 denied")
    assert expected in cause
