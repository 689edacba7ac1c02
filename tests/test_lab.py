"""The lab end to end, as a user runs it: up, doctor, HTTPS through HAProxy, breakage, down.

These tests run last (see conftest.py) because lab.down stops dockerd.
"""

import datetime
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from authops import labnode
from authops.labenv import (
    CA_CERT,
    CA_KEY,
    CA_STORE_CERT,
    LAB_DIR,
    LAB_ROOT,
    POSTGRES_DIR,
)
from authops.labpki import cert_pem, issue, key_pem, load_or_create_authority, now
from authops.localsvc import GWBRIDGE_GATEWAY, LAB_NODE_ADDRESS
from authops.netguard import is_local_address
from authops.pgcluster import as_postgres, server_bin_dir
from tests.support.envfiles import lab_values, render_env
from tests.support.labinvoke import invoke

DOMAIN = "sso.lab.test"
HAPROXY_PORT = 8443
LAB_PORTS = (54329, 2587, 2465, 8443, 9002, 9445)

pytestmark = [pytest.mark.docker, pytest.mark.lab]


def https_get(path: str, host: str = DOMAIN) -> int:
    """Send GET {path} to 127.0.0.1:8443 as sso.lab.test, trusting only the lab CA; return the status."""
    context = ssl.create_default_context(cafile=str(CA_CERT))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", HAPROXY_PORT), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls,
    ):
        tls.sendall(request.encode())
        status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def port_open(port: int) -> bool:
    """Return whether something listens on the port, on loopback or the lab gateway.

    The gateway is tried only while it is an address of this machine, so that
    no connection leaves the machine once the bridge is gone.
    """
    addresses = ["127.0.0.1"]
    if is_local_address(GWBRIDGE_GATEWAY):
        addresses.append(GWBRIDGE_GATEWAY)
    for address in addresses:
        try:
            with socket.create_connection((address, port), timeout=1):
                return True
        except OSError:
            continue
    return False


@pytest.fixture(scope="module")
def lab():
    first = invoke("lab.up")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    yield first
    down = invoke("lab.down")
    assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture
def broken_env(tmp_path):
    """Write a copy of the lab's env file with some keys changed; return its folder."""

    def make(**changes: str) -> Path:
        values = {**lab_values(), **changes}
        path = tmp_path / "labbroken.env"
        path.write_text(render_env(values))
        path.chmod(0o600)
        return tmp_path

    return make


def doctor_lines(result: subprocess.CompletedProcess, state: str) -> list[str]:
    return [
        line
        for line in result.stdout.splitlines()
        if line.startswith("[") and f"] {state}" in line
    ]


def test_up_ends_with_green_doctor(lab):
    assert "doctor: " in lab.stdout
    assert " 0 failed" in lab.stdout
    assert "The lab is up: https://sso.lab.test:8443/" in lab.stdout


def test_up_says_which_image(lab):
    assert (
        "the local stand-in" in lab.stdout or "the real authentik image" in lab.stdout
    )


def test_readiness_through_haproxy_over_tls(lab):
    assert https_get("/-/health/ready/") == 200


def test_second_node_joined(lab):
    nodes = subprocess.run(
        ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert f"{labnode.NAME} Ready" in nodes


def test_server_task_on_each_node(lab):
    tasks = subprocess.run(
        [
            "docker",
            "service",
            "ps",
            "authentik_server",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert labnode.NAME in tasks
    assert len(set(tasks)) == 2


def test_second_node_answers_readiness(lab):
    result = subprocess.run(
        [
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            f"https://{LAB_NODE_ADDRESS}:9445/-/health/ready/",
        ],
        capture_output=True,
        text=True,
    )
    assert result.stdout == "200"


def test_unknown_host_gets_404(lab):
    assert https_get("/", host="other.lab.test") == 404


def test_second_up_changes_nothing(lab):
    again = invoke("lab.up")
    assert again.returncode == 0, again.stdout[-3000:]
    changed = [
        line
        for line in again.stdout.splitlines()
        if "] changed" in line or "] would change" in line
    ]
    assert changed == []


def test_doctor_names_stopped_database(lab):
    data = str(POSTGRES_DIR / "data")
    as_postgres(
        [str(server_bin_dir() / "pg_ctl"), "-D", data, "stop", "-m", "fast", "-w"]
    )
    try:
        result = invoke("doctor")
    finally:
        restarted = invoke("lab.up")
    assert result.returncode == 1
    failed = "\n".join(doctor_lines(result, "failed"))
    assert "[database connect from local] failed" in failed
    assert restarted.returncode == 0


def test_doctor_names_missing_backend(lab):
    subprocess.run(
        ["docker", "service", "scale", "--detach", "authentik_server=0"],
        check=True,
        capture_output=True,
    )
    try:
        result = None
        for _ in range(20):
            result = invoke("doctor")
            if "haproxy backends local] failed" in result.stdout:
                break
    finally:
        restored = invoke("stack.deploy", "--env", "lab")
    assert result.returncode == 1
    failed = "\n".join(doctor_lines(result, "failed"))
    assert "[service authentik_server] failed" in failed
    assert "[haproxy backends local] failed" in failed
    assert restored.returncode == 0, restored.stdout[-2000:]


def test_doctor_names_expired_certificate(lab):
    authority = load_or_create_authority(CA_STORE_CERT, CA_KEY)
    certificate, key = issue(
        authority,
        [DOMAIN],
        not_before=now() - datetime.timedelta(days=100),
        not_after=now() - datetime.timedelta(days=1),
    )
    installed = Path(lab_values()["HAPROXY_CERT_DIR"]) / f"{DOMAIN}.pem"
    good = installed.read_bytes()
    installed.write_bytes(
        cert_pem(certificate) + cert_pem(authority.certificate) + key_pem(key)
    )
    try:
        result = invoke("doctor")
    finally:
        installed.write_bytes(good)
    assert result.returncode == 1
    failed = "\n".join(doctor_lines(result, "failed"))
    assert "[certificate local] failed" in failed
    assert "expired" in failed


def test_certs_combine_refuses_expired_lineage(lab, tmp_path):
    authority = load_or_create_authority(CA_STORE_CERT, CA_KEY)
    certificate, key = issue(
        authority,
        [DOMAIN],
        not_before=now() - datetime.timedelta(days=100),
        not_after=now() - datetime.timedelta(days=1),
    )
    lineage = tmp_path / DOMAIN
    lineage.mkdir()
    (lineage / "fullchain.pem").write_bytes(
        cert_pem(certificate) + cert_pem(authority.certificate)
    )
    (lineage / "privkey.pem").write_bytes(key_pem(key))
    installed = Path(lab_values()["HAPROXY_CERT_DIR"]) / f"{DOMAIN}.pem"
    before = installed.read_bytes()
    result = invoke(
        "certs.combine", "--env", "lab", "--domain", DOMAIN, "--live-dir", str(lineage)
    )
    assert result.returncode == 1
    assert installed.read_bytes() == before
    assert https_get("/-/health/ready/") == 200


def test_doctor_names_wrong_smtp_password(lab, broken_env):
    env_dir = broken_env(SMTP_PASSWORD="wrong-smtp-password-123")
    result = invoke("doctor", "--env", "labbroken", env_dir=env_dir)
    assert result.returncode == 1
    failed = "\n".join(doctor_lines(result, "failed"))
    assert "[mail] failed" in failed
    assert "auth" in failed
    assert "wrong-smtp-password-123" not in result.stdout + result.stderr


def test_status_lists_services(lab):
    result = invoke("lab.status")
    assert result.returncode == 0
    assert "[postgresql] ok: running" in result.stdout
    assert "authentik_server 2/2" in result.stdout
    assert f"[node {labnode.NAME}] ok: dockerd running" in result.stdout


def test_down_leaves_nothing_behind(lab):
    down = invoke("lab.down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not LAB_ROOT.exists()
    assert not LAB_DIR.exists()
    open_ports = [port for port in LAB_PORTS if port_open(port)]
    assert open_ports == []
    docker = subprocess.run(["docker", "info"], capture_output=True, text=True)
    assert docker.returncode != 0
    # Only the lab's own processes: other tests may run a relay or HAProxy of their own.
    processes = subprocess.run(
        ["pgrep", "-f", f"authops.labsmtp .*{LAB_ROOT}|haproxy -W .*{LAB_ROOT}"],
        capture_output=True,
        text=True,
    )
    assert processes.stdout.strip() == ""


def test_down_removes_second_node(lab):
    assert not labnode.namespace_exists()
    assert not labnode.DATA_ROOT.exists()
    assert not labnode.EXEC_ROOT.exists()
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True)
    assert labnode.HOST_LINK not in links.stdout
    forward = subprocess.run(
        ["iptables", "-S", "FORWARD"], capture_output=True, text=True
    )
    assert labnode.HOST_LINK not in forward.stdout
