"""nodes.remove and nodes.add against the lab's second node, over SSH.

The lab's second node, lab2, is a dockerd in a network namespace. These
tests start an sshd in that namespace whose sessions talk to lab2's dockerd
(DOCKER_HOST), so the tasks reach the node as they reach a production node.
They remove lab2 from the swarm, from a copy of the lab's env file and from
HAProxy, then add it back. At the end, `lab.up` puts the lab back as it was.
"""

import shutil
import threading
import time
from pathlib import Path

import pytest

from authops import REPO_ROOT, labnode
from authops.envfile import parse_text
from authops.labenv import CA_CERT
from authops.localsvc import LAB_NODE_ADDRESS, docker
from tests.support.labinvoke import invoke
from tests.support.readiness import haproxy_target, request_ready
from tests.support.sshd import start_sshd

pytestmark = [pytest.mark.docker, pytest.mark.lab, pytest.mark.timeout(900)]

NODE_SSH_PORT = 2222
HAPROXY_PORT = 8443
DOMAIN = "sso.lab.test"


@pytest.fixture(scope="module")
def lab():
    up = invoke("lab.up")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
    yield
    restored = invoke("lab.up")
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-2000:]


@pytest.fixture(scope="module")
def node_ssh(lab, tmp_path_factory):
    """An sshd in lab2's namespace whose sessions use lab2's dockerd."""
    server = start_sshd(
        tmp_path_factory.mktemp("lab2-sshd"),
        address=LAB_NODE_ADDRESS,
        port=NODE_SSH_PORT,
        prefix=("ip", "netns", "exec", labnode.NETNS),
        extra_config=f"SetEnv DOCKER_HOST=unix://{labnode.SOCKET}\n",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env_dir(node_ssh, tmp_path_factory):
    """A copy of env/lab.env, with the SSH settings that reach lab2."""
    directory = tmp_path_factory.mktemp("nodes-lab")
    text = (REPO_ROOT / "env" / "lab.env").read_text()
    extra = "".join(f"{key}={value}\n" for key, value in node_ssh.env_values().items())
    path = directory / "lab.env"
    path.write_text(text + extra)
    path.chmod(0o600)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def swarm_hostnames() -> dict[str, str]:
    listing = docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
    return dict(line.split(maxsplit=1) for line in listing.splitlines())


def listed_nodes(env_dir) -> str:
    return parse_text((env_dir / "lab.env").read_text()).values()["SWARM_NODES"]


def haproxy_config() -> str:
    values = parse_text((REPO_ROOT / "env" / "lab.env").read_text()).values()
    return Path(values["HAPROXY_CONFIG"]).read_text()


def ready_through_haproxy() -> str:
    return request_ready(haproxy_target(HAPROXY_PORT, DOMAIN, str(CA_CERT)))


def test_node_reached_over_ssh(node_ssh, env_dir):
    result = invoke("nodes.list", "--env", "lab", env_dir=env_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{labnode.NAME}" in result.stdout


def test_remove_takes_node_out(node_ssh, env_dir):
    result = invoke(
        "nodes.remove", "--name", labnode.NAME, "--yes",
        "--host", node_ssh.spec(), "--env", "lab",
        env_dir=env_dir,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "SERVER_REPLICAS is 2 but SWARM_NODES keeps 1 node(s)" in out
    assert labnode.NAME not in swarm_hostnames()
    assert listed_nodes(env_dir) == "lab=127.0.0.1"
    assert f"server {labnode.NAME} " not in haproxy_config()
    assert ready_through_haproxy() == "200"


def test_remove_left_node_inactive(node_ssh):
    state = labnode.node_docker("info", "--format", "{{.Swarm.LocalNodeState}}")
    assert state.stdout.strip() == "inactive"


class CommandLineWatch:
    """Read every process's command line every 20 ms until stopped."""

    def __init__(self):
        self.seen: set[str] = set()
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    self.seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode())
                except OSError:
                    continue
            time.sleep(0.02)

    def stop(self) -> set[str]:
        self.running = False
        self.thread.join()
        return self.seen


def test_add_joins_node_back(node_ssh, env_dir):
    token = docker("swarm", "join-token", "--quiet", "worker").stdout.strip()
    watch = CommandLineWatch()
    try:
        result = invoke(
            "nodes.add", "--name", labnode.NAME, "--address", LAB_NODE_ADDRESS,
            "--host", node_ssh.spec(), "--env", "lab",
            env_dir=env_dir,
        )  # fmt: skip
    finally:
        command_lines = watch.stop()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert swarm_hostnames().get(labnode.NAME) == "Ready"
    assert listed_nodes(env_dir) == f"lab=127.0.0.1,{labnode.NAME}={LAB_NODE_ADDRESS}"
    assert f"server {labnode.NAME} {LAB_NODE_ADDRESS}:" in haproxy_config()
    assert ready_through_haproxy() == "200"
    assert any("/swarm/join" in line for line in command_lines)
    assert not any(token in line for line in command_lines)
    assert token not in out


def test_add_again_changes_nothing(node_ssh, env_dir):
    result = invoke(
        "nodes.add", "--name", labnode.NAME, "--address", LAB_NODE_ADDRESS,
        "--host", node_ssh.spec(), "--env", "lab",
        env_dir=env_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "] changed" not in result.stdout
