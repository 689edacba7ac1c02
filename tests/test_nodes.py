"""nodes.list, nodes.add and nodes.remove: decisions, env file edits and HAProxy.

These tests use this machine's swarm as the other tests find it: a manager,
and the lab's second node only while the lab is up. tests/test_nodes_lab.py
removes and adds a real second node over SSH. The HAProxy tests use
the bench of tests/support/haproxylab.py: node `a` on 127.0.0.1 is this
machine's swarm node (it matches by address), and node `b` on 127.0.0.2
is an entry of SWARM_NODES that the swarm does not have.
"""

import os
import subprocess
import sys
import time

import pytest

from authops import hosts
from authops.errors import OpsError
from authops.haproxy import start_haproxy
from authops.haproxyruntime import server_states, show_info
from authops.localsvc import docker, ensure_dockerd
from authops.nodes import check_new_entry, nodes_value, removal_problem
from authops.nodeswarm import find_node, join_state, manager_address
from authops.settings import Node, load_settings
from tests.support.haproxylab import REPO, make_bench, run_invoke

ENV = "nodes"
COMMENT = "# SWARM_NODES follows the swarm; keep this comment.\n"
CLUSTER = {"ID": "cluster-1"}

MANAGER = {
    "ID": "m1",
    "Hostname": "manager1",
    "Addr": "10.0.0.1",
    "Status": "Ready",
    "Availability": "Active",
    "ManagerStatus": "Leader",
}
WORKER1 = {
    "ID": "w1",
    "Hostname": "worker1",
    "Addr": "10.0.0.11",
    "Status": "Ready",
    "Availability": "Active",
    "ManagerStatus": "",
}
WORKER2 = {**WORKER1, "ID": "w2", "Hostname": "worker2", "Addr": "10.0.0.12"}
WORKER2_DRAINED = {**WORKER2, "Availability": "Drain"}
WORKER2_DOWN = {**WORKER2, "Status": "Down"}


@pytest.mark.parametrize(
    ("node_swarm", "expected"),
    [
        ({"LocalNodeState": "inactive"}, "join"),
        ({"LocalNodeState": "active", "Cluster": CLUSTER}, "member"),
    ],
)
def test_join_state(node_swarm, expected):
    assert join_state(node_swarm, {"Cluster": CLUSTER}) == expected


@pytest.mark.parametrize(
    ("node_swarm", "message"),
    [
        ({"LocalNodeState": "active", "Cluster": {"ID": "other"}}, "another swarm"),
        ({"LocalNodeState": "pending"}, "swarm state is pending"),
        ({"LocalNodeState": "error"}, "swarm state is error"),
    ],
)
def test_join_state_rejected(node_swarm, message):
    with pytest.raises(OpsError, match=message):
        join_state(node_swarm, {"Cluster": CLUSTER})


@pytest.mark.parametrize(
    ("manager_swarm", "address"),
    [
        (
            {
                "NodeID": "m1",
                "NodeAddr": "10.0.0.1",
                "RemoteManagers": [
                    {"NodeID": "m0", "Addr": "10.0.0.9:2377"},
                    {"NodeID": "m1", "Addr": "10.0.0.1:2377"},
                ],
            },
            "10.0.0.1:2377",
        ),
        ({"NodeID": "m1", "NodeAddr": "10.0.0.1"}, "10.0.0.1:2377"),
    ],
)
def test_manager_address(manager_swarm, address):
    assert manager_address(manager_swarm) == address


def test_manager_address_missing():
    with pytest.raises(OpsError, match="no address"):
        manager_address({"NodeID": "m1"})


@pytest.mark.parametrize(
    ("name", "address", "found"),
    [
        ("worker1", None, "w1"),
        ("w1-in-list", "10.0.0.11", "w1"),
        ("worker2", "10.0.0.11", "w2"),
        ("ghost", "10.0.0.99", None),
    ],
)
def test_find_node(name, address, found):
    node = find_node([MANAGER, WORKER1, WORKER2], name, address)
    assert (node["ID"] if node else None) == found


WORKERS = "node.role == worker"
LISTED = "worker1=10.0.0.11,worker2=10.0.0.12"


@pytest.mark.parametrize(
    ("placement", "listed", "nodes", "name", "message"),
    [
        (WORKERS, LISTED, [MANAGER, WORKER1], "ghost", "node ghost not found"),
        (WORKERS, LISTED, [MANAGER, WORKER1, WORKER2], "manager1", "swarm manager"),
        (WORKERS, LISTED, [MANAGER, WORKER1], "worker1", "last Ready and Active"),
        (
            WORKERS,
            LISTED,
            [MANAGER, WORKER1, WORKER2_DRAINED],
            "worker1",
            "last Ready and Active",
        ),
        (
            WORKERS,
            LISTED,
            [MANAGER, WORKER1, WORKER2_DOWN],
            "worker1",
            "last Ready and Active",
        ),
        (WORKERS, "worker2=10.0.0.12", [MANAGER], "worker2", "only entry"),
        (
            "node.role == manager",
            "worker1=10.0.0.11",
            [MANAGER, WORKER1, WORKER2],
            "worker1",
            "only entry",
        ),
    ],
)
def test_removal_rejected(make_env, placement, listed, nodes, name, message):
    settings = load_settings(
        make_env(ENV, PLACEMENT=placement, SWARM_NODES=listed).stem
    )
    entry = next((e for e in settings.nodes if e.name == name), None)
    node = find_node(nodes, name, entry.address if entry else None)
    assert message in removal_problem(settings, nodes, node, entry, name)


@pytest.mark.parametrize(
    ("placement", "nodes", "name"),
    [
        (WORKERS, [MANAGER, WORKER1, WORKER2], "worker1"),
        (WORKERS, [MANAGER, WORKER1], "worker2"),
        ("node.role == manager", [MANAGER, WORKER1, WORKER2], "worker2"),
    ],
)
def test_removal_allowed(make_env, placement, nodes, name):
    settings = load_settings(
        make_env(ENV, PLACEMENT=placement, SWARM_NODES=LISTED).stem
    )
    entry = next((e for e in settings.nodes if e.name == name), None)
    node = find_node(nodes, name, entry.address if entry else None)
    assert removal_problem(settings, nodes, node, entry, name) is None


@pytest.mark.parametrize(
    ("name", "address", "message"),
    [
        ("bad name", "10.0.0.13", "is not NAME=ADDRESS"),
        ("worker3", "not an address!", "is not NAME=ADDRESS"),
        ("worker1", "10.0.0.13", "lists worker1 with address 10.0.0.11"),
        ("worker3", "10.0.0.11", "lists 10.0.0.11 as worker1"),
    ],
)
def test_new_entry_rejected(make_env, name, address, message):
    settings = load_settings(make_env(ENV, SWARM_NODES=LISTED).stem)
    with pytest.raises(OpsError, match=message):
        check_new_entry(settings, name, address)


def test_new_entry_accepted(make_env):
    settings = load_settings(make_env(ENV, SWARM_NODES=LISTED).stem)
    check_new_entry(settings, "worker3", "10.0.0.13")
    check_new_entry(settings, "worker1", "10.0.0.11")


# --- Against this machine's swarm and a real HAProxy ---------------------------


@pytest.fixture
def swarm():
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    ensure_dockerd()
    return docker("info", "--format", "{{.Name}}").stdout.strip()


@pytest.fixture
def bench(tmp_path, swarm):
    bench = make_bench(tmp_path / "nodes")
    yield bench
    bench.stop_haproxy()
    for node in bench.nodes:
        node.kill()


def start_bench(bench, make_env, env_dir, listed: str):
    """Write the env file with SWARM_NODES=listed, install the config and start HAProxy."""
    path = make_env(ENV, **{**bench.env_values(), "SWARM_NODES": listed})
    path.write_text(COMMENT + path.read_text())
    installed = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    settings = load_settings(ENV)
    outcome = start_haproxy(hosts.connect("local"), settings)
    assert outcome.state == "changed", outcome.detail
    wait_for_servers(settings, sorted(entry.name for entry in settings.nodes))
    return path


def up_servers(settings) -> list[str]:
    states = server_states(hosts.connect("local"), settings)
    return sorted(state.name for state in states if state.is_up)


def wait_for_servers(settings, names: list[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while up_servers(settings) != names:
        assert time.monotonic() < deadline, f"servers up: {up_servers(settings)}"
        time.sleep(0.2)


def worker_pid(settings) -> str:
    return show_info(hosts.connect("local"), settings)["Pid"]


def listed_nodes(path) -> str:
    line = next(
        line
        for line in path.read_text().splitlines()
        if line.startswith("SWARM_NODES=")
    )
    return line.partition("=")[2]


@pytest.mark.docker
def test_list_shows_swarm_node(swarm, make_env, env_dir):
    make_env(ENV, SWARM_NODES="lab=127.0.0.1,gone=127.0.0.9")
    result = run_invoke("nodes.list", "--env", ENV, env_dir=env_dir)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (
        f"[{swarm}] ok: 127.0.0.1, manager (Leader), Ready, Active, may run authentik, "
        "in SWARM_NODES as lab" in out
    )
    assert "[gone] warning: 127.0.0.9 is in SWARM_NODES but not in the swarm" in out
    assert "[node list] warning: in SWARM_NODES but not in the swarm: gone" in out


@pytest.mark.docker
def test_list_matching_nodes_ok(swarm, make_env, env_dir):
    make_env(ENV, SWARM_NODES="lab=127.0.0.1")
    result = run_invoke("nodes.list", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[node list] ok: SWARM_NODES matches" in result.stdout


@pytest.mark.docker
def test_add_member_extends_haproxy(bench, make_env, env_dir):
    path = start_bench(bench, make_env, env_dir, "b=127.0.0.2")
    settings = load_settings(ENV)
    args = ("nodes.add", "--name", "a", "--address", "127.0.0.1", "--host", "local")

    dry = run_invoke(*args, "--dry-run", "--env", ENV, env_dir=env_dir)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "+    server a 127.0.0.1:" in dry.stdout
    assert "would set SWARM_NODES=b=127.0.0.2,a=127.0.0.1" in dry.stdout
    assert listed_nodes(path) == "b=127.0.0.2"
    assert up_servers(settings) == ["b"]

    result = run_invoke(*args, "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[a] unchanged: already in the swarm" in result.stdout
    assert "[local] changed: reloaded" in result.stdout
    assert listed_nodes(path) == "b=127.0.0.2,a=127.0.0.1"
    assert path.read_text().startswith(COMMENT)
    assert path.stat().st_mode & 0o777 == 0o600
    wait_for_servers(settings, ["a", "b"])
    assert bench.client().count(20).by_node.get("a", 0) > 0


@pytest.mark.docker
def test_add_second_run_unchanged(bench, make_env, env_dir):
    path = start_bench(bench, make_env, env_dir, "b=127.0.0.2,a=127.0.0.1")
    settings = load_settings(ENV)
    text = path.read_bytes()
    pid = worker_pid(settings)
    result = run_invoke(
        "nodes.add",
        "--name",
        "a",
        "--address",
        "127.0.0.1",
        "--host",
        "local",
        "--env",
        ENV,
        env_dir=env_dir,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "] changed" not in result.stdout
    assert path.read_bytes() == text
    assert worker_pid(settings) == pid


@pytest.mark.docker
def test_remove_stale_entry_shrinks_haproxy(bench, make_env, env_dir):
    path = start_bench(bench, make_env, env_dir, "a=127.0.0.1,b=127.0.0.2")
    settings = load_settings(ENV)

    dry = run_invoke(
        "nodes.remove", "--name", "b", "--dry-run", "--env", ENV, env_dir=env_dir
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "-    server b 127.0.0.2:" in dry.stdout
    assert listed_nodes(path) == "a=127.0.0.1,b=127.0.0.2"
    assert up_servers(settings) == ["a", "b"]

    result = run_invoke(
        "nodes.remove", "--name", "b", "--yes", "--env", ENV, env_dir=env_dir
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[b] unchanged: not in the swarm: only SWARM_NODES changes" in out
    assert "[local] changed: reloaded" in out
    assert listed_nodes(path) == "a=127.0.0.1"
    assert path.read_text().startswith(COMMENT)
    wait_for_servers(settings, ["a"])

    again = run_invoke(
        "nodes.remove", "--name", "b", "--yes", "--env", ENV, env_dir=env_dir
    )
    assert again.returncode == 1
    assert "node b not found" in again.stderr
    assert listed_nodes(path) == "a=127.0.0.1"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "a", "--yes"), "is a swarm manager"),
        (("--name", "ghost", "--yes"), "node ghost not found"),
        (("--name", "b"), "needs confirmation: pass --yes"),
    ],
)
def test_remove_rejected_changes_nothing(swarm, make_env, env_dir, args, message):
    path = make_env(ENV, SWARM_NODES="a=127.0.0.1,b=127.0.0.2")
    text = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "nodes.remove", *args, "--env", ENV],
        cwd=REPO,
        env={**os.environ, "OPS_ENV_DIR": str(env_dir)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert message in result.stderr
    assert path.read_bytes() == text
    availability = docker(
        "node", "inspect", "self", "--format", "{{.Spec.Availability}}"
    )
    assert availability.stdout.strip() == "active"


def test_nodes_value_joins_entries():
    entries = [Node("a", "127.0.0.1"), Node("b", "10.0.0.2")]
    assert nodes_value(entries) == "a=127.0.0.1,b=10.0.0.2"
