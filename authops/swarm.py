"""Docker Swarm through the docker CLI on a manager: queries and the manager itself.

Every call runs `docker` through Host.run, so a remote manager over SSH and
`local` take the same code path. Reads use `--format '{{json .}}'` or the
JSON of `docker ... inspect`.
"""

import json
import shlex

from authops.errors import OpsError
from authops.hosts import CommandResult, Host, connect
from authops.settings import Settings

STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"
DOCKER_TIMEOUT = 120  # seconds for one docker command


def run_docker(
    host: Host,
    args: list[str],
    *,
    stdin: str | None = None,
    check: bool = False,
    timeout: float = DOCKER_TIMEOUT,
) -> CommandResult:
    """Run `docker ARGS` on the host; with `check`, a failure raises OpsError."""
    return host.run(
        shlex.join(["docker", *args]), stdin=stdin, timeout=timeout, check=check
    )


def docker_json_lines(host: Host, args: list[str]) -> list[dict]:
    """Run a docker listing command with `--format '{{json .}}'`; return one dict per line."""
    result = run_docker(host, [*args, "--format", "{{json .}}"], check=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def docker_inspect(host: Host, args: list[str]) -> list[dict]:
    """Run a docker inspect command; return its JSON list, or [] when the object is gone."""
    result = run_docker(host, args)
    if not result.ok:
        if "No such" in result.stderr or "not found" in result.stderr:
            return []
        raise OpsError(
            f"{host.name}: `docker {shlex.join(args)}` failed: {result.error_text()}"
        )
    return json.loads(result.stdout or "[]")


def service_ids(host: Host, stack: str) -> list[str]:
    result = run_docker(
        host,
        ["service", "ls", "-q", "--filter", f"label={STACK_NAMESPACE_LABEL}={stack}"],
        check=True,
    )
    return result.stdout.split()


def services_of_stack(host: Host, stack: str) -> list[dict]:
    """Return `docker service inspect` of every service of the stack."""
    ids = service_ids(host, stack)
    if not ids:
        return []
    return docker_inspect(host, ["service", "inspect", *ids])


def service_tasks(host: Host, service: str) -> list[dict]:
    """Return the full task objects of a service, the retained history included."""
    result = run_docker(host, ["service", "ps", "-q", "--no-trunc", service])
    if not result.ok:
        return []
    ids = result.stdout.split()
    if not ids:
        return []
    return docker_inspect(host, ["inspect", "--type", "task", *ids])


def node_names(host: Host) -> dict[str, str]:
    """Return each swarm node's host name by node ID."""
    return {
        row["ID"]: row["Hostname"] for row in docker_json_lines(host, ["node", "ls"])
    }


def swarm_nodes(host: Host) -> list[dict]:
    """Return `docker node ls` rows, each with the node's address added as `Addr`."""
    listing = host.run("docker node ls --format '{{json .}}'", check=True)
    nodes = [json.loads(line) for line in listing.stdout.splitlines() if line.strip()]
    addresses = host.run(
        "docker node inspect --format '{{.ID}} {{.Status.Addr}}' $(docker node ls -q)",
        check=True,
    )
    by_id = dict(
        line.split(maxsplit=1) for line in addresses.stdout.splitlines() if " " in line
    )
    for node in nodes:
        node["Addr"] = by_id.get(node["ID"], "")
    return nodes


def may_run_authentik(node: dict, placement: str) -> bool:
    """Return whether PLACEMENT lets the node run authentik; only node.role is understood."""
    compact = placement.replace(" ", "")
    is_manager = bool(node.get("ManagerStatus"))
    if compact == "node.role==worker":
        return not is_manager
    if compact == "node.role==manager":
        return is_manager
    return True


def swarm_info(host: Host) -> dict:
    """Return the `Swarm` section of `docker info` on the host, or raise OpsError."""
    result = run_docker(host, ["info", "--format", "{{json .Swarm}}"], timeout=30)
    if not result.ok:
        raise OpsError(
            f"{host.name}: docker is not available: {result.error_text()}: install "
            f"docker and start dockerd there"
        )
    return json.loads(result.stdout or "{}")


def short_name(service_name: str, stack: str) -> str:
    """Return `server` for `STACK_server`."""
    prefix = f"{stack}_"
    return (
        service_name[len(prefix) :] if service_name.startswith(prefix) else service_name
    )


def swarm_role(host: Host) -> str | None:
    """Return why the host cannot manage the swarm, or None when it can."""
    result = run_docker(host, ["info", "--format", "{{json .Swarm}}"], timeout=30)
    if not result.ok:
        return f"docker is not available: {result.error_text()}"
    swarm = json.loads(result.stdout or "{}")
    if swarm.get("LocalNodeState") != "active":
        return f"not part of a swarm (state {swarm.get('LocalNodeState') or 'unknown'})"
    if not swarm.get("ControlAvailable"):
        return "a swarm worker, not a manager"
    return None


def find_manager(settings: Settings) -> Host:
    """Connect to the first of SWARM_MANAGERS that is a reachable swarm manager."""
    problems = []
    for spec in settings.managers:
        try:
            host = connect(spec, settings.values)
        except OpsError as error:
            problems.append(str(error))
            continue
        problem = swarm_role(host)
        if problem is None:
            return host
        problems.append(f"{spec}: {problem}")
        host.close()
    listed = "\n  ".join(problems)
    raise OpsError(
        f"no swarm manager available among SWARM_MANAGERS:\n  {listed}\n"
        "Check the hosts with `invoke hosts.check`, or fix SWARM_MANAGERS in the env file."
    )
