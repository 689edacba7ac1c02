"""Host targeting through a real sshd on loopback and on `local`."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from authops import hosts
from authops.errors import OpsError
from authops.localsvc import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def remote(sshd):
    host = hosts.connect(sshd.spec(), sshd.env_values())
    yield host
    host.close()


def test_same_command_same_result_local_and_remote(remote):
    local = hosts.connect("local")
    command = "printf '%s\\n' \"$(id -un)\" && uname -s && echo 'a $b \"c\"'"
    remote_result = remote.run(command)
    local_result = local.run(command)
    assert remote_result.ok
    assert local_result.ok
    assert remote_result.stdout == local_result.stdout


def test_stdin_reaches_remote_command(remote):
    result = remote.run(
        "read -r value; printf '%s' \"$value\" | wc -c", stdin="s3cr$t 'x'\n"
    )
    assert result.stdout.strip() == "10"


def test_exit_code_and_stderr_kept(remote):
    result = remote.run("echo oops >&2; exit 3")
    assert result.exit_code == 3
    assert result.error_text() == "oops"


def test_check_raises_with_reason(remote):
    with pytest.raises(OpsError, match="oops"):
        remote.run("echo oops >&2; exit 3", check=True)


def test_write_file_is_atomic_and_private(remote, tmp_path):
    target = tmp_path / "out.pem"
    remote.write_file(str(target), b"content\n", mode=0o600)
    assert target.read_bytes() == b"content\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pem"]


def test_read_file_missing_returns_none(remote, tmp_path):
    assert remote.read_file(str(tmp_path / "missing")) is None
    assert hosts.connect("local").read_file(str(tmp_path / "missing")) is None


def test_unreachable_port_named_without_traceback():
    spec = f"root@127.0.0.1:{free_port()}"
    with pytest.raises(hosts.HostUnreachable) as caught:
        hosts.connect(spec)
    message = str(caught.value)
    assert spec in message
    assert "connection refused" in message


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and then sends `greeting` only."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve(greeting: bytes) -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.sendall(greeting)
            accepted.append(connection)

    def start(greeting: bytes = b"") -> int:
        threading.Thread(target=serve, args=(greeting,), daemon=True).start()
        return listener.getsockname()[1]

    yield start
    listener.close()
    for connection in accepted:
        connection.close()


@pytest.mark.parametrize(
    "greeting, reason",
    [
        (b"", "no SSH greeting within 2 s"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "handshake did not finish"),
    ],
)
def test_silent_server_times_out(silent_port, monkeypatch, greeting, reason):
    monkeypatch.setattr(hosts, "CONNECT_TIMEOUT", 2)
    spec = f"root@127.0.0.1:{silent_port(greeting)}"
    started = time.monotonic()
    with pytest.raises(hosts.HostUnreachable) as caught:
        hosts.connect(spec)
    assert reason in str(caught.value)
    assert spec in str(caught.value)
    assert time.monotonic() - started < 6


def test_missing_key_file_named(sshd, tmp_path):
    values = {**sshd.env_values(), "SSH_KEY": str(tmp_path / "missing_key")}
    with pytest.raises(hosts.HostUnreachable) as caught:
        hosts.connect(sshd.spec(), values)
    assert "missing_key not found: check SSH_KEY" in str(caught.value)


@pytest.mark.parametrize("content", [None, "not a known_hosts line\n"])
def test_bad_known_hosts_named(sshd, tmp_path, content):
    known_hosts = tmp_path / "known_hosts"
    if content is not None:
        known_hosts.write_text(content)
    values = {**sshd.env_values(), "SSH_KNOWN_HOSTS": str(known_hosts)}
    with pytest.raises(OpsError) as caught:
        hosts.connect(sshd.spec(), values)
    assert f"SSH_KNOWN_HOSTS file {known_hosts}" in str(caught.value)


def test_probe_times_out_hung_command(remote, monkeypatch):
    monkeypatch.setattr(hosts, "PROBE_COMMAND", "sleep 20; hostname; date +%s")
    monkeypatch.setattr(hosts, "PROBE_TIMEOUT", 1)
    started = time.monotonic()
    with pytest.raises(OpsError, match="timed out after 1 s"):
        hosts.probe_host(remote)
    assert time.monotonic() - started < 10


def test_timed_out_remote_command_killed(remote):
    marker = f"authops-hung-{os.getpid()}"
    started = time.monotonic()
    with pytest.raises(OpsError, match="timed out after 1 s"):
        remote.run(f"sh -c 'sleep 60; echo {marker}' & wait", timeout=1)
    assert time.monotonic() - started < 10
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", f"echo {marker}"], capture_output=True)
    assert left.stdout == b""


def test_unknown_host_key_rejected(sshd):
    values = {"SSH_KEY": str(sshd.client_key), "SSH_STRICT_HOST_KEYS": "true"}
    with pytest.raises(hosts.HostUnreachable, match="host key"):
        hosts.connect(sshd.spec(), values)


def test_fan_out_reports_every_host(sshd):
    dead = f"root@127.0.0.1:{free_port()}"
    results = hosts.fan_out(
        [sshd.spec(), dead, "local"],
        sshd.env_values(),
        lambda h: h.run("echo hi").stdout,
    )
    assert [name for name, _, _ in results] == [sshd.spec(), dead, "local"]
    assert results[0][1] == "hi\n"
    assert results[1][2] is not None
    assert dead in str(results[1][2])
    assert results[2][1] == "hi\n"


def test_hosts_check_task_names_unreachable_host(sshd, make_env, env_dir):
    dead = f"root@127.0.0.1:{free_port()}"
    ssh = sshd.env_values()
    make_env(
        "remote",
        SWARM_MANAGERS=f"local,{sshd.spec()}",
        HAPROXY_HOSTS=dead,
        SSH_KEY=ssh["SSH_KEY"],
        SSH_KNOWN_HOSTS=ssh["SSH_KNOWN_HOSTS"],
    )
    environment = {**os.environ, "OPS_ENV_DIR": str(env_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "hosts.check", "--env", "remote"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "[local] ok" in result.stdout
    assert f"[{sshd.spec()}] ok" in result.stdout
    assert f"[{dead}] failed: unreachable: connection refused" in result.stdout
    assert dead in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
