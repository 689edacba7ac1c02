"""The lab's second swarm node: a dockerd of its own in a network namespace.

With one node and host-mode ports, a server update has to stop the old task
before the new one can bind the port, so each deploy drops requests. With a
second node HAProxy sends requests to the other node meanwhile, as it does
in production.

The node is a second dockerd, in the network namespace `authops-lab2` and
with host name `lab2`, joined to the lab's swarm as a worker. A veth pair
links the namespace to this machine: 172.31.251.1 on this side, 172.31.251.2
in the namespace. The manager advertises 127.0.0.1, which inside the
namespace is the namespace's own loopback, so NAT rules there forward the
swarm's ports on 127.0.0.1 to the manager.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import docker as docker_sdk

from authops import errors, output
from authops.errors import OpsError
from authops.localsvc import (
    LAB_NODE_ADDRESS,
    LAB_NODE_HOST_ADDRESS,
    LAB_NODE_PREFIX,
    docker,
    start_background,
    wait_until,
)

NAME = "lab2"  # host name of the node, and its name in the lab's SWARM_NODES
NETNS = "authops-lab2"
HOST_LINK = "authops-lab2h"  # interface names have at most 15 characters
NODE_LINK = "authops-lab2n"
DATA_ROOT = Path("/var/lib/authops-lab2")
EXEC_ROOT = Path("/run/authops-lab2")
SOCKET = EXEC_ROOT / "docker.sock"
PIDFILE = EXEC_ROOT / "dockerd.pid"
LOG = Path("/var/log/authops-lab2-dockerd.log")
CONTAINERD_NAMESPACE = "authops-lab2"
# The ports the manager serves to a worker: cluster management and gossip.
SWARM_PORTS = (("tcp", 2377), ("tcp", 7946), ("udp", 7946))
START_TIMEOUT = 60  # seconds for the node's dockerd to respond
JOIN_TIMEOUT = 60  # seconds for the manager to list the joined node as ready
STOP_TIMEOUT = 30  # seconds for the node's dockerd to stop its containers and exit

# Run by `ip netns exec NETNS unshare --uts sh -c START_SCRIPT sh HOSTNAME COMMAND...`.
# `ip netns exec` mounts a fresh /sys without the cgroup hierarchies, so the
# script mounts those of this machine again, then sets the host name.
START_SCRIPT = r"""
set -e
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
awk '$9 == "cgroup" || $9 == "cgroup2" {print $5, $9, $NF}' /proc/1/mountinfo |
while read -r target type options; do
  mkdir -p "$target"
  if [ "$type" = cgroup2 ]; then
    mount -t cgroup2 cgroup2 "$target"
  else
    mount -t cgroup -o "${options#rw,}" cgroup "$target"
  fi
done
hostname "$1"
shift
exec "$@"
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command on this machine; raise OpsError naming it when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise OpsError(
            f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def node_docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the docker CLI against the node's dockerd."""
    return docker("-H", f"unix://{SOCKET}", *args, check=check, timeout=timeout)


def namespace_exists() -> bool:
    return Path("/run/netns", NETNS).exists()


def daemon_running() -> bool:
    if not SOCKET.exists():
        return False
    result = node_docker("info", "--format", "{{.Name}}", check=False, timeout=20)
    return result.returncode == 0


def ensure_no_forwarding() -> None:
    """Drop what the namespace sends beyond this machine.

    The node needs only this machine's own addresses, which it reaches
    without forwarding. Its default route points here, so without this rule
    a packet to any other address could be forwarded off the machine.
    """
    rule = ("FORWARD", "-i", HOST_LINK, "-j", "DROP")
    if run("iptables", "-C", *rule, check=False).returncode != 0:
        run("iptables", "-I", *rule)


def ensure_namespace() -> None:
    """Create the namespace, its veth pair and its NAT rules, unless they exist."""
    ensure_no_forwarding()
    if namespace_exists():
        if (
            run("ip", "-n", NETNS, "link", "show", NODE_LINK, check=False).returncode
            == 0
        ):
            output.status(
                NETNS, errors.UNCHANGED, f"network namespace, {LAB_NODE_ADDRESS}"
            )
            return
        run("ip", "netns", "delete", NETNS)
    run("ip", "link", "delete", HOST_LINK, check=False)
    run("ip", "netns", "add", NETNS)
    run("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK)
    run("ip", "link", "set", NODE_LINK, "netns", NETNS)
    run(
        "ip",
        "address",
        "add",
        f"{LAB_NODE_HOST_ADDRESS}/{LAB_NODE_PREFIX}",
        "dev",
        HOST_LINK,
    )
    run("ip", "link", "set", HOST_LINK, "up")

    inside = ("ip", "netns", "exec", NETNS)
    run(
        "ip",
        "-n",
        NETNS,
        "address",
        "add",
        f"{LAB_NODE_ADDRESS}/{LAB_NODE_PREFIX}",
        "dev",
        NODE_LINK,
    )
    run("ip", "-n", NETNS, "link", "set", NODE_LINK, "up")
    run("ip", "-n", NETNS, "link", "set", "lo", "up")
    run("ip", "-n", NETNS, "route", "add", "default", "via", LAB_NODE_HOST_ADDRESS)

    # Packets to 127.0.0.1 may leave the namespace only with route_localnet.
    run(*inside, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
    for protocol, port in SWARM_PORTS:
        run(
            *inside, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", "127.0.0.1/32",
            "-p", protocol, "--dport", str(port),
            "-j", "DNAT", "--to-destination", f"{LAB_NODE_HOST_ADDRESS}:{port}",
        )  # fmt: skip
    run(
        *inside, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "127.0.0.1/32",
        "-o", NODE_LINK, "-j", "SNAT", "--to-source", LAB_NODE_ADDRESS,
    )  # fmt: skip
    output.status(
        NETNS, errors.CHANGED, f"network namespace created, {LAB_NODE_ADDRESS}"
    )


def ensure_daemon() -> None:
    """Start the node's dockerd in the namespace unless it responds."""
    if daemon_running():
        output.status(f"dockerd on {NAME}", errors.UNCHANGED, f"running, {SOCKET}")
        return
    EXEC_ROOT.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    dockerd = [
        "dockerd",
        "--data-root", str(DATA_ROOT),
        "--exec-root", str(EXEC_ROOT / "exec"),
        "--pidfile", str(PIDFILE),
        "--host", f"unix://{SOCKET}",
        "--containerd-namespace", CONTAINERD_NAMESPACE,
        "--containerd-plugins-namespace", f"{CONTAINERD_NAMESPACE}-plugins",
    ]  # fmt: skip
    start_background(
        ["ip", "netns", "exec", NETNS, "unshare", "--uts", "sh", "-c", START_SCRIPT, "sh", NAME, *dockerd],
        LOG,
    )  # fmt: skip
    wait_until(
        daemon_running,
        START_TIMEOUT,
        f"the dockerd of {NAME} did not respond within {START_TIMEOUT} s: see {LOG}",
    )
    output.status(f"dockerd on {NAME}", errors.CHANGED, f"started, {SOCKET}")


def image_id(image: str, on_node: bool) -> str | None:
    run_cli = node_docker if on_node else docker
    result = run_cli("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_image(image: str) -> None:
    """Copy the image from this machine's dockerd to the node's, unless it has the same one."""
    expected = image_id(image, on_node=False)
    if expected is None:
        raise OpsError(f"image {image} is not on this machine: run lab.up again")
    if image_id(image, on_node=True) == expected:
        output.status(f"image on {NAME}", errors.UNCHANGED, image)
        return
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "-H", f"unix://{SOCKET}", "load", "--quiet"],
        stdin=save.stdout,
        capture_output=True,
        text=True,
        timeout=600,
    )
    save.stdout.close()
    if save.wait(timeout=60) != 0 or load.returncode != 0:
        raise OpsError(f"copying {image} to {NAME} failed: {load.stderr.strip()}")
    output.status(f"image on {NAME}", errors.CHANGED, f"{image} copied")


def tag_image(source: str, target: str) -> None:
    """Tag an image on the node too, when the node runs."""
    if daemon_running():
        node_docker("tag", source, target)


def manager_entries() -> list[tuple[str, str]]:
    """Return (ID, status) for each node of the swarm whose host name is NAME."""
    listing = docker("node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.Status}}")
    entries = []
    for line in listing.stdout.splitlines():
        node_id, hostname, state = line.split(maxsplit=2)
        if hostname == NAME:
            entries.append((node_id, state.lower()))
    return entries


def ensure_joined() -> None:
    """Join the node to the lab's swarm as a worker, unless the manager lists it as ready."""
    local_state = node_docker(
        "info", "--format", "{{.Swarm.LocalNodeState}}"
    ).stdout.strip()
    entries = manager_entries()
    if local_state == "active" and any(state == "ready" for _, state in entries):
        output.status(f"swarm node {NAME}", errors.UNCHANGED, "worker, ready")
        return

    if local_state != "inactive":
        node_docker("swarm", "leave", "--force", check=False)
    for node_id, _ in entries:
        docker("node", "rm", "--force", node_id, check=False)
    # The SDK passes the token in the request body, never on a command line.
    token = docker("swarm", "join-token", "--quiet", "worker").stdout.strip()
    client = docker_sdk.DockerClient(base_url=f"unix://{SOCKET}", timeout=120)
    try:
        client.swarm.join(
            remote_addrs=[f"{LAB_NODE_HOST_ADDRESS}:2377"],
            join_token=token,
            advertise_addr=LAB_NODE_ADDRESS,
            listen_addr=f"{LAB_NODE_ADDRESS}:2377",
        )
    except docker_sdk.errors.APIError as error:
        raise OpsError(
            f"{NAME} could not join the swarm: {error.explanation}"
        ) from None
    finally:
        client.close()

    wait_until(
        lambda: any(state == "ready" for _, state in manager_entries()),
        JOIN_TIMEOUT,
        f"{NAME} joined, but the manager does not list it as ready after "
        f"{JOIN_TIMEOUT} s: see `docker node ls` and {LOG}",
    )
    output.status(
        f"swarm node {NAME}", errors.CHANGED, f"joined as a worker, {LAB_NODE_ADDRESS}"
    )


def ensure_node(image: str) -> None:
    """Bring up the second node: namespace, dockerd, image, swarm membership."""
    ensure_namespace()
    ensure_daemon()
    ensure_image(image)
    ensure_joined()


def stop_daemon() -> None:
    """Stop the node's dockerd, which stops its containers first."""
    try:
        pid = int(PIDFILE.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def remove_node() -> None:
    """Take the node out of the swarm, stop its dockerd and delete its namespace and files."""
    present = namespace_exists() or DATA_ROOT.exists() or EXEC_ROOT.exists()
    manager_up = docker("info", "--format", "{{.Swarm.LocalNodeState}}", check=False)
    if manager_up.returncode == 0 and manager_up.stdout.strip() == "active":
        for node_id, _ in manager_entries():
            docker("node", "rm", "--force", node_id, check=False)
            present = True
    if not present:
        return

    if daemon_running():
        node_docker("swarm", "leave", "--force", check=False)
    stop_daemon()
    # Container shims outlive a killed dockerd.
    run(
        "pkill",
        "-KILL",
        "-f",
        f"containerd-shim-runc-v2 -namespace {CONTAINERD_NAMESPACE} ",
        check=False,
    )

    if namespace_exists():
        run("ip", "netns", "delete", NETNS)
    run("ip", "link", "delete", HOST_LINK, check=False)
    while (
        run(
            "iptables", "-D", "FORWARD", "-i", HOST_LINK, "-j", "DROP", check=False
        ).returncode
        == 0
    ):
        pass
    for directory in (EXEC_ROOT, DATA_ROOT):
        run("rm", "-rf", "--one-file-system", str(directory))
    output.status(
        f"swarm node {NAME}",
        errors.CHANGED,
        "removed: namespace, dockerd and its files",
    )


def describe() -> tuple[str, str]:
    """Return the node's state for lab.status: (status, detail)."""
    if not daemon_running():
        return errors.FAILED, "not running"
    state = node_docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    return errors.OK, f"dockerd running in {NETNS} at {LAB_NODE_ADDRESS}, swarm {state}"
