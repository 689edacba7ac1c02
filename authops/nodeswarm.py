"""Swarm membership of one node: join it as a worker, drain it, make it leave, remove it.

Every docker command runs through Host.run on the manager or on the node
over SSH, as in authops.swarm.
"""

import json
import shlex
import time

from authops import output
from authops.errors import OpsError
from authops.hosts import Host
from authops.swarm import run_docker, swarm_info, swarm_nodes

POLL_INTERVAL = 2  # seconds between checks of the node list
LEAVE_WAIT = 60  # seconds for the manager to see a node that left as Down
SWARM_PORT = 2377  # the managers' port for joining nodes
# The join request, token included, arrives on standard input and goes to
# the Engine API (POST /swarm/join) through curl, so the token stays off every
# command line: `docker swarm join` would take it only as an argument. The
# socket is DOCKER_HOST's when that names one, else Docker's default.
JOIN_SCRIPT = (
    "command -v curl >/dev/null || { echo 'curl not found on the node: install "
    "curl, which the join uses to keep the token off command lines' >&2; exit 127; }; "
    'socket="${DOCKER_HOST:-unix:///var/run/docker.sock}"; '
    'exec curl -sS --max-time 100 --unix-socket "${socket#unix://}" '
    "-H 'Content-Type: application/json' --data-binary @- "
    "-w '\\n%{http_code}' http://localhost/swarm/join"
)


def find_node(nodes: list[dict], name: str, address: str | None) -> dict | None:
    """Return the swarm node whose host name is `name`, else whose address is `address`."""
    for node in nodes:
        if node["Hostname"] == name:
            return node
    for node in nodes:
        if address and node.get("Addr") == address:
            return node
    return None


def describe_role(node: dict) -> str:
    status = node.get("ManagerStatus")
    return f"manager ({status})" if status else "worker"


def is_usable(node: dict) -> bool:
    return node.get("Status") == "Ready" and node.get("Availability") == "Active"


def join_state(node_swarm: dict, manager_swarm: dict) -> str:
    """Return `join` for a node outside any swarm, `member` for one in this swarm.

    Raises OpsError for a node in another swarm, or in a state to fix first.
    """
    state = node_swarm.get("LocalNodeState", "unknown")
    if state == "inactive":
        return "join"
    if state != "active":
        raise OpsError(
            f"its swarm state is {state}: fix docker there (`docker info`), or run "
            f"`docker swarm leave --force` there, then run again"
        )
    cluster = (node_swarm.get("Cluster") or {}).get("ID")
    if cluster and cluster == (manager_swarm.get("Cluster") or {}).get("ID"):
        return "member"
    raise OpsError(
        "it belongs to another swarm: check that this is the right host, run "
        "`docker swarm leave` there, then run again"
    )


def manager_address(manager_swarm: dict) -> str:
    """Return ADDRESS:PORT where nodes join this manager."""
    for remote in manager_swarm.get("RemoteManagers") or []:
        if remote.get("NodeID") == manager_swarm.get("NodeID") and remote.get("Addr"):
            return remote["Addr"]
    address = manager_swarm.get("NodeAddr")
    if not address:
        raise OpsError("the manager reports no address of its own in `docker info`")
    return f"{address}:{SWARM_PORT}"


def join_token(manager: Host) -> str:
    """Return the worker join token; it is registered as a secret before anything prints."""
    result = run_docker(manager, ["swarm", "join-token", "-q", "worker"], check=True)
    token = result.stdout.strip()
    output.register_secret(token)
    return token


def join(manager: Host, node: Host, address: str) -> None:
    """Join `node` to the manager's swarm as a worker that advertises `address`."""
    target = manager_address(swarm_info(manager))
    token = join_token(manager)
    request = json.dumps(
        {
            "ListenAddr": "0.0.0.0:2377",
            "AdvertiseAddr": address,
            "RemoteAddrs": [target],
            "JoinToken": token,
        }
    )
    result = node.run(f"sh -c {shlex.quote(JOIN_SCRIPT)}", stdin=request, timeout=120)
    body, _, status = result.stdout.rstrip().rpartition("\n")
    if result.ok and status.strip() == "200":
        return
    reason = result.error_text() if not result.ok else api_message(body, status)
    raise OpsError(
        output.redact(
            f"{node.name}: joining the swarm through {target} failed: {reason}: check "
            f"that the node reaches {target} (TCP 2377, 7946 and UDP 4789 between the "
            f"nodes)"
        )
    )


def api_message(body: str, status: str) -> str:
    """Return the Engine API's error message from a response body, with the HTTP status."""
    try:
        message = json.loads(body).get("message", body)
    except ValueError:
        message = body
    return f"HTTP {status.strip()}: {message.strip() or 'no message'}"


def wait_for(
    manager: Host,
    describe: str,
    check,
    timeout: float,
) -> dict:
    """Poll the node list until `check(nodes)` returns a node; print progress; return it."""
    deadline = time.monotonic() + timeout
    printed = ""
    while True:
        nodes = swarm_nodes(manager)
        found, progress = check(nodes)
        if found is not None:
            return found
        if progress != printed:
            output.info(progress)
            printed = progress
        if time.monotonic() > deadline:
            raise OpsError(f"timed out after {timeout:.0f} s waiting for {describe}")
        time.sleep(POLL_INTERVAL)


def wait_ready(manager: Host, name: str, address: str, timeout: float) -> dict:
    """Wait until the node named `name` (or with `address`) is Ready; return it."""

    def ready(nodes: list[dict]) -> tuple[dict | None, str]:
        node = find_node(nodes, name, address)
        if node is None:
            return None, f"{name}: not listed by the manager yet"
        if node.get("Status") == "Ready":
            return node, ""
        return None, f"{name}: status {node.get('Status')}"

    return wait_for(manager, f"{name} to be Ready", ready, timeout)


def drain(manager: Host, node: dict) -> None:
    run_docker(
        manager,
        ["node", "update", "--availability", "drain", node["ID"]],
        check=True,
    )


def running_tasks(manager: Host, node_id: str, stack: str) -> list[str]:
    """Return `NAME (STATE)` of each task of the stack that still runs on the node."""
    result = run_docker(
        manager, ["node", "ps", node_id, "--format", "{{json .}}"], check=True
    )
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [
        f"{row['Name']} ({row['CurrentState']})"
        for row in rows
        if row["Name"].startswith(f"{stack}_")
        and row["CurrentState"].startswith(("Running", "Starting"))
    ]


def wait_drained(manager: Host, node: dict, stack: str, timeout: float) -> None:
    """Wait until no task of the stack runs on the node, printing each change."""
    deadline = time.monotonic() + timeout
    printed: list[str] = []
    while True:
        tasks = running_tasks(manager, node["ID"], stack)
        if not tasks:
            return
        if tasks != printed:
            output.info(f"{node['Hostname']}: still running {', '.join(tasks)}")
            printed = tasks
        if time.monotonic() > deadline:
            raise OpsError(
                f"{node['Hostname']} still runs {', '.join(tasks)} {timeout:.0f} s after "
                f"the drain: check `docker service ps` for tasks that cannot move (placement, "
                f"ports), then run again; the node stays drained"
            )
        time.sleep(POLL_INTERVAL)


def leave(node_host: Host) -> None:
    result = node_host.run("docker swarm leave", timeout=120)
    if not result.ok and "not part of a swarm" not in result.stderr:
        raise OpsError(
            f"{node_host.name}: `docker swarm leave` failed: {result.error_text()}"
        )


def wait_down(manager: Host, node: dict) -> None:
    """Wait until the manager reports the node as Down, after it left."""

    def down(nodes: list[dict]) -> tuple[dict | None, str]:
        current = next((n for n in nodes if n["ID"] == node["ID"]), None)
        if current is None or current.get("Status") == "Down":
            return node, ""
        return None, f"{node['Hostname']}: status {current.get('Status')}"

    wait_for(manager, f"{node['Hostname']} to be Down", down, LEAVE_WAIT)


def remove_node(manager: Host, node: dict, force: bool) -> None:
    args = ["node", "rm", *(["--force"] if force else []), node["ID"]]
    run_docker(manager, args, check=True)
