"""Tasks for the swarm's nodes: list them, add a worker, remove one.

SWARM_NODES in the env file lists the nodes that serve authentik, and
HAProxy's backends follow it. nodes.add and nodes.remove change the swarm
and that list together, then reload HAProxy on every HAProxy host.
"""

import dataclasses
import sys

from invoke import Collection

from authops import output
from authops.db import parse_number
from authops.doctor import compare_node_lists
from authops.envupdate import update_env_file
from authops.errors import CHANGED, OK, UNCHANGED, WARNING, WOULD_CHANGE, OpsError
from authops.haproxy import reload_hosts, report_outcomes
from authops.haproxycfg import render_config
from authops.hosts import Host, connect
from authops.nodeswarm import (
    describe_role,
    drain,
    find_node,
    is_usable,
    join,
    join_state,
    leave,
    manager_address,
    remove_node,
    wait_down,
    wait_drained,
    wait_ready,
)
from authops.schema import KEYS_BY_NAME
from authops.settings import Node, Settings, load_settings
from authops.swarm import find_manager, may_run_authentik, swarm_info, swarm_nodes
from authops.tasking import ENV_HELP, ops_task
from authops.validate import check_value

NODES_KEY = "SWARM_NODES"
JOIN_TIMEOUT = 120  # seconds for a joined node to become Ready


def listed_entry(settings: Settings, node: dict) -> Node | None:
    """Return the SWARM_NODES entry that names the swarm node or its address."""
    for entry in settings.nodes:
        if entry.name == node["Hostname"] or entry.address == node.get("Addr"):
            return entry
    return None


def describe_node(settings: Settings, node: dict) -> str:
    placement = settings.get("PLACEMENT")
    entry = listed_entry(settings, node)
    parts = [
        node.get("Addr") or "address unknown",
        describe_role(node),
        node.get("Status", "?"),
        node.get("Availability", "?"),
        "may run authentik"
        if may_run_authentik(node, placement)
        else f"PLACEMENT ({placement}) keeps authentik off it",
        f"in {NODES_KEY} as {entry.name}" if entry else f"not in {NODES_KEY}",
    ]
    return ", ".join(parts)


def show_nodes(settings: Settings, nodes: list[dict]) -> None:
    """Print one line per swarm node and per SWARM_NODES entry missing from the swarm."""
    for node in nodes:
        state = OK if is_usable(node) else WARNING
        output.status(node["Hostname"], state, describe_node(settings, node))
    for entry in settings.nodes:
        if find_node(nodes, entry.name, entry.address) is None:
            output.status(
                entry.name,
                WARNING,
                f"{entry.address} is in {NODES_KEY} but not in the swarm",
            )
    for check in compare_node_lists(settings, nodes):
        output.status(check.name, check.state, check.detail)


def nodes_value(entries: list[Node]) -> str:
    return ",".join(f"{entry.name}={entry.address}" for entry in entries)


def with_nodes(settings: Settings, entries: list[Node]) -> Settings:
    values = {**settings.values, NODES_KEY: nodes_value(entries)}
    return dataclasses.replace(settings, values=values)


def write_nodes(settings: Settings, entries: list[Node], dry_run: bool) -> Settings:
    """Write SWARM_NODES, keeping the file's mode and comments; return the new settings."""
    value = nodes_value(entries)
    changed = update_env_file(
        settings.path, settings.env_name, {NODES_KEY: value}, dry_run=dry_run
    )
    path = str(settings.path)
    if not changed:
        output.status(path, UNCHANGED, f"{NODES_KEY}={value}")
    elif dry_run:
        output.status(path, WOULD_CHANGE, f"would set {NODES_KEY}={value}")
    else:
        output.status(path, CHANGED, f"{NODES_KEY}={value}")
    return (
        with_nodes(settings, entries) if dry_run else load_settings(settings.env_name)
    )


def reload_haproxy(settings: Settings, dry_run: bool) -> None:
    """Render the HAProxy configuration for the new node list and reload it on every host."""
    verb = "checking" if dry_run else "reloading"
    output.phase(f"{verb} haproxy on {', '.join(settings.haproxy_hosts)}")
    text = render_config(settings)
    report_outcomes("haproxy.reload", reload_hosts(settings, text, dry_run=dry_run))


def parse_timeout(timeout: str | None, default: int) -> int:
    return parse_number("--timeout", timeout, 1, 86400) if timeout else default


# --- nodes.list -------------------------------------------------------------


@ops_task(name="list", help={"env": ENV_HELP})
def list_nodes(c, env=None):
    """Show each swarm node (address, role, status, availability) against SWARM_NODES."""
    settings = load_settings(env)
    manager = find_manager(settings)
    try:
        output.phase(f"swarm nodes, as manager {manager.name} lists them")
        nodes = swarm_nodes(manager)
    finally:
        manager.close()
    show_nodes(settings, nodes)


# --- nodes.add --------------------------------------------------------------


def check_new_entry(settings: Settings, name: str, address: str) -> None:
    """Raise OpsError for an invalid NAME=ADDRESS or one that contradicts SWARM_NODES."""
    problems = check_value(KEYS_BY_NAME[NODES_KEY], f"{name}={address}")
    if problems:
        raise OpsError(f"--name {name!r} --address {address!r}: {problems[0]}")
    for entry in settings.nodes:
        if entry.name == name and entry.address != address:
            raise OpsError(
                f"{NODES_KEY} lists {name} with address {entry.address}, not {address}: "
                f"remove it with `invoke nodes.remove --name {name}` first, or fix the address"
            )
        if entry.address == address and entry.name != name:
            raise OpsError(
                f"{NODES_KEY} lists {address} as {entry.name}: use --name {entry.name}"
            )


def join_swarm(
    settings: Settings,
    manager: Host,
    name: str,
    address: str,
    spec: str,
    timeout: int,
    dry_run: bool,
) -> None:
    """Join the host to the swarm as a worker unless it is a node already; wait until Ready."""
    node = find_node(swarm_nodes(manager), name, address)
    if node is not None:
        output.status(
            name,
            UNCHANGED,
            f"already in the swarm as {node['Hostname']}, {describe_role(node)}, "
            f"{node.get('Status')}",
        )
        warn_unfit(settings, node)
        return

    target = connect(spec, settings.values)
    try:
        manager_swarm = swarm_info(manager)
        try:
            state = join_state(swarm_info(target), manager_swarm)
        except OpsError as error:
            raise OpsError(f"{spec} cannot join: {error}") from None
        if state == "member":
            raise OpsError(
                f"{spec} is in this swarm already, but not as {name} or {address}: "
                f"run `invoke nodes.list` and give the --name or --address it has there"
            )
        if dry_run:
            output.status(
                name,
                WOULD_CHANGE,
                f"would join {spec} as a worker through {manager_address(manager_swarm)} "
                f"and wait until it is Ready",
            )
            return
        output.phase(f"joining {spec} to the swarm as a worker")
        join(manager, target, address)
    finally:
        target.close()
    node = wait_ready(manager, name, address, timeout)
    output.status(name, CHANGED, f"joined as {node['Hostname']}, Ready")
    warn_unfit(settings, node)


def warn_unfit(settings: Settings, node: dict) -> None:
    """Warn when the node cannot serve authentik: not Ready, drained, or excluded by PLACEMENT."""
    if not is_usable(node):
        output.warn(
            f"{node['Hostname']} is {node.get('Status')} and {node.get('Availability')}: "
            f"HAProxy's checks keep it out of rotation until it serves"
        )
    if not may_run_authentik(node, settings.get("PLACEMENT")):
        output.warn(
            f"PLACEMENT ({settings.get('PLACEMENT')}) keeps authentik off "
            f"{node['Hostname']}, so its backend in HAProxy stays down"
        )


@ops_task(
    help={
        "name": "Name of the node in SWARM_NODES and HAProxy; its host name in the swarm, "
        "or any name when --address matches the node.",
        "address": "Address that HAProxy and the swarm reach the node at (its IP).",
        "host": "How to reach the new node over SSH: `local` or [user@]host[:port].",
        "timeout": f"Seconds to wait for the node to be Ready (default: {JOIN_TIMEOUT}).",
        "dry_run": "Show the steps and the HAProxy diff; join, write and reload nothing.",
        "env": ENV_HELP,
    }
)
def add(c, name, address, host, dry_run=False, timeout=None, env=None):
    """Join a host to the swarm as a worker, add it to SWARM_NODES and reload HAProxy."""
    settings = load_settings(env)
    check_new_entry(settings, name, address)
    seconds = parse_timeout(timeout, JOIN_TIMEOUT)
    manager = find_manager(settings)
    try:
        output.phase(f"adding node {name} ({address}) through manager {manager.name}")
        join_swarm(settings, manager, name, address, host, seconds, dry_run)
    finally:
        manager.close()

    entries = list(settings.nodes)
    if not any(entry.name == name for entry in entries):
        entries.append(Node(name, address))
    reload_haproxy(write_nodes(settings, entries, dry_run), dry_run)


# --- nodes.remove -----------------------------------------------------------


def removal_problem(
    settings: Settings,
    nodes: list[dict],
    node: dict | None,
    entry: Node | None,
    name: str,
) -> str | None:
    """Return why the node must not be removed, or None when it may be."""
    if node is None and entry is None:
        known = ", ".join(n["Hostname"] for n in nodes) or "none"
        listed = ", ".join(e.name for e in settings.nodes) or "none"
        return (
            f"node {name} not found: the swarm has {known}, {NODES_KEY} lists {listed}; "
            f"nothing was changed"
        )
    if node is not None and node.get("ManagerStatus"):
        return (
            f"{name} is a swarm manager: demote it first with `docker node demote "
            f"{node['Hostname']}` on a manager (keep 1, 3 or 5 managers), then run again"
        )
    placement = settings.get("PLACEMENT")
    if node is not None and may_run_authentik(node, placement):
        others = [
            other
            for other in nodes
            if other["ID"] != node["ID"]
            and is_usable(other)
            and may_run_authentik(other, placement)
        ]
        if not others:
            return (
                f"{name} is the last Ready and Active node that may run authentik "
                f"(PLACEMENT {placement}): add another with `invoke nodes.add` first"
            )
    if entry is not None and len(settings.nodes) == 1:
        return (
            f"{name} is the only entry of {NODES_KEY}, so HAProxy would have no "
            f"backend: add another node first"
        )
    return None


def confirm_removal(name: str, yes: bool) -> None:
    """Require --yes, or the node's name typed at an interactive prompt."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise OpsError(f"removing node {name} needs confirmation: pass --yes")
    answer = input(
        f"Drain node {name}, take it out of HAProxy and the swarm? Type its name: "
    )
    if answer.strip() != name:
        raise OpsError("the typed name does not match: nothing was changed")


def drain_node(
    manager: Host, node: dict, stack: str, timeout: int, dry_run: bool
) -> None:
    """Drain the node and wait until no task of the stack runs on it."""
    name = node["Hostname"]
    if dry_run:
        output.status(
            name,
            WOULD_CHANGE,
            f"would drain it and wait until no task of {stack} runs there",
        )
        return
    if node.get("Availability") == "Drain":
        output.status(name, UNCHANGED, "drained already")
    else:
        drain(manager, node)
        output.status(name, CHANGED, "availability set to drain")
    output.phase(f"waiting up to {timeout} s for the tasks of {stack} to leave {name}")
    wait_drained(manager, node, stack, timeout)
    output.status(name, OK, f"no task of {stack} runs there")


def take_out_of_swarm(
    settings: Settings, manager: Host, node: dict, spec: str, dry_run: bool
) -> None:
    """Make the node leave over SSH, then remove it; remove it with --force if unreachable."""
    name = node["Hostname"]
    if dry_run:
        output.status(
            name,
            WOULD_CHANGE,
            f"would run `docker swarm leave` on {spec}, then `docker node rm` on the manager",
        )
        return
    try:
        target = connect(spec, settings.values)
        try:
            leave(target)
        finally:
            target.close()
    except OpsError as error:
        output.warn(f"{name}: could not leave the swarm itself: {error}")
        remove_node(manager, node, force=True)
        output.status(
            name,
            CHANGED,
            f"removed with --force; when {spec} is back, run `docker swarm leave "
            f"--force` there so that it stops acting as a node",
        )
        return
    wait_down(manager, node)
    remove_node(manager, node, force=False)
    output.status(name, CHANGED, "left the swarm and was removed")


def warn_replicas(settings: Settings, nodes_left: int) -> None:
    """Warn when host-mode ports leave too few nodes for SERVER_REPLICAS server tasks."""
    replicas = settings.number("SERVER_REPLICAS")
    if settings.get("PUBLISH_MODE") == "host" and replicas > nodes_left:
        output.warn(
            f"SERVER_REPLICAS is {replicas} but {NODES_KEY} keeps {nodes_left} node(s): with "
            f"host-mode ports a node runs one server task, so {replicas - nodes_left} task(s) "
            f"stay pending; lower SERVER_REPLICAS and run stack.deploy, or add a node"
        )


@ops_task(
    help={
        "name": "Node to remove: its name in SWARM_NODES or its host name in the swarm.",
        "yes": "Remove without asking to type the node's name.",
        "host": "How to reach the node over SSH for `docker swarm leave` (default: its "
        "address in SWARM_NODES, else the swarm's).",
        "timeout": "Seconds to wait for the stack's tasks to leave the drained node "
        "(default: DEPLOY_TIMEOUT).",
        "dry_run": "Show the steps and the HAProxy diff; drain, write, reload and remove nothing.",
        "env": ENV_HELP,
    }
)
def remove(c, name, yes=False, host=None, timeout=None, dry_run=False, env=None):
    """Drain a node, take it out of SWARM_NODES and HAProxy, then out of the swarm."""
    settings = load_settings(env)
    seconds = parse_timeout(timeout, settings.number("DEPLOY_TIMEOUT"))
    entry = next((e for e in settings.nodes if e.name == name), None)
    manager = find_manager(settings)
    try:
        nodes = swarm_nodes(manager)
        node = find_node(nodes, name, entry.address if entry else None)
        if entry is None and node is not None:
            entry = listed_entry(settings, node)
        problem = removal_problem(settings, nodes, node, entry, name)
        if problem:
            raise OpsError(problem)
        if not dry_run:
            confirm_removal(name, yes)
        output.phase(f"removing node {name} through manager {manager.name}")
        if node is None:
            output.status(
                name, UNCHANGED, f"not in the swarm: only {NODES_KEY} changes"
            )
        else:
            drain_node(manager, node, settings.stack_name, seconds, dry_run)

        remaining = [e for e in settings.nodes if entry is None or e.name != entry.name]
        warn_replicas(settings, len(remaining))
        reload_haproxy(write_nodes(settings, remaining, dry_run), dry_run)

        if node is not None:
            spec = host or (entry.address if entry else node.get("Addr"))
            take_out_of_swarm(settings, manager, node, spec, dry_run)
    finally:
        manager.close()


ns = Collection("nodes")
ns.add_task(list_nodes)
ns.add_task(add)
ns.add_task(remove)
