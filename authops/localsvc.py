"""Services on this machine for the lab and the tests: dockerd in swarm mode.

This machine has no systemd, so services are started as plain processes in
their own session and outlive the command that started them.
"""

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from authops import output
from authops.errors import OpsError

DOCKERD_LOG = Path("/var/log/authops-dockerd.log")
# The lab's containers reach services on this machine through the host side of
# docker_gwbridge. Creating the network before `swarm init` fixes its address.
GWBRIDGE_SUBNET = "172.31.250.0/24"
GWBRIDGE_GATEWAY = "172.31.250.1"
# The lab's second swarm node lives in a network namespace behind a veth pair
# (see labnode.py): this machine's side and the node's address.
LAB_NODE_SUBNET = "172.31.251.0/30"
LAB_NODE_PREFIX = 30
LAB_NODE_HOST_ADDRESS = "172.31.251.1"
LAB_NODE_ADDRESS = "172.31.251.2"
DOCKERD_START_TIMEOUT = 60  # seconds


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the docker CLI with the given arguments and capture its output."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise OpsError(
            f"`docker {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until a TCP connect to host:port succeeds, or raise OpsError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise OpsError(
                    f"nothing listens on {host}:{port} after {timeout} s"
                ) from None
            time.sleep(0.2)


def start_background(argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start a long-running process detached from this one, logging to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def dockerd_running() -> bool:
    return (
        docker(
            "info", "--format", "{{.ServerVersion}}", check=False, timeout=20
        ).returncode
        == 0
    )


def ensure_dockerd() -> None:
    """Start dockerd unless it responds, and make this machine a single-node swarm."""
    if shutil.which("dockerd") is None:
        raise OpsError(
            "dockerd not found: run `make setup` as root (installs Debian's docker.io)"
        )
    if not dockerd_running():
        output.phase("starting dockerd")
        start_background(["dockerd"], DOCKERD_LOG)
        wait_until(
            dockerd_running,
            DOCKERD_START_TIMEOUT,
            f"dockerd did not start within {DOCKERD_START_TIMEOUT} s: see {DOCKERD_LOG}",
        )
    ensure_swarm()


def wait_until(ready: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll `ready` every half second until it returns True; raise OpsError(message) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise OpsError(message)
        time.sleep(0.5)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def ensure_swarm() -> None:
    """Initialise a single-node swarm, with docker_gwbridge on the lab's subnet."""
    if swarm_state() == "active":
        check_gwbridge()
        return
    output.phase("initialising a single-node swarm")
    if docker("network", "inspect", "docker_gwbridge", check=False).returncode != 0:
        docker(
            "network",
            "create",
            "--subnet",
            GWBRIDGE_SUBNET,
            "--gateway",
            GWBRIDGE_GATEWAY,
            "--opt",
            "com.docker.network.bridge.name=docker_gwbridge",
            "--opt",
            "com.docker.network.bridge.enable_icc=false",
            "--opt",
            "com.docker.network.bridge.enable_ip_masquerade=true",
            "docker_gwbridge",
        )
    check_gwbridge()
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")


def check_gwbridge() -> None:
    """Raise unless docker_gwbridge has the lab's gateway address."""
    result = docker("network", "inspect", "docker_gwbridge", check=False)
    if result.returncode != 0:
        return
    configs = json.loads(result.stdout)[0]["IPAM"]["Config"]
    gateways = [config.get("Gateway") for config in configs]
    if GWBRIDGE_GATEWAY not in gateways:
        raise OpsError(
            f"docker_gwbridge has gateway {gateways}, not {GWBRIDGE_GATEWAY}: the lab needs its own. "
            "On a machine whose swarm you may discard: `docker swarm leave --force && "
            "docker network rm docker_gwbridge`, then run again."
        )
