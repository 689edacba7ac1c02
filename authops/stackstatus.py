"""The stack as it runs: services, replicas, update state, tasks per node, and logs."""

from dataclasses import dataclass, field

from authops.errors import OpsError
from authops.hosts import Host
from authops.settings import Settings
from authops.swarm import (
    find_manager,
    node_names,
    run_docker,
    service_tasks,
    services_of_stack,
)


@dataclass(frozen=True)
class TaskState:
    node: str
    state: str
    since: str
    error: str


@dataclass
class ServiceHealth:
    """One service of the stack as Swarm reports it."""

    name: str
    image: str
    desired: int
    running: int
    update_state: str
    update_message: str
    tasks: list[TaskState] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        updating_badly = self.update_state in (
            "paused",
            "rollback_started",
            "rollback_paused",
        )
        return self.running >= self.desired and not updating_badly


def task_states(tasks: list[dict], nodes: dict[str, str]) -> list[TaskState]:
    """Return the tasks Swarm wants running, with the node each runs on."""
    states = []
    for task in tasks:
        if task.get("DesiredState") != "running":
            continue
        status = task.get("Status") or {}
        states.append(
            TaskState(
                node=nodes.get(
                    task.get("NodeID", ""), task.get("NodeID") or "unassigned"
                ),
                state=status.get("State", "?"),
                since=status.get("Timestamp", "")[:19],
                error=status.get("Err", ""),
            )
        )
    return states


def health_of(host: Host, service: dict, nodes: dict[str, str]) -> ServiceHealth:
    spec = service["Spec"]
    update = service.get("UpdateStatus") or {}
    tasks = task_states(service_tasks(host, service["ID"]), nodes)
    return ServiceHealth(
        name=spec["Name"],
        image=spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0],
        desired=((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0),
        running=sum(1 for task in tasks if task.state == "running"),
        update_state=update.get("State", ""),
        update_message=update.get("Message", ""),
        tasks=tasks,
    )


def stack_health(host: Host, stack: str) -> list[ServiceHealth]:
    services = services_of_stack(host, stack)
    if not services:
        return []
    nodes = node_names(host)
    return [health_of(host, service, nodes) for service in services]


def service_health(settings: Settings) -> list[ServiceHealth]:
    """Return the health of each service of the stack, from the first reachable manager."""
    host = find_manager(settings)
    try:
        return stack_health(host, settings.stack_name)
    finally:
        host.close()


def service_logs(
    settings: Settings, service: str, since: str | None, tail: str | None
) -> str:
    """Return the logs of one service (`server` or `worker`) from every task."""
    host = find_manager(settings)
    name = f"{settings.stack_name}_{service}"
    args = ["service", "logs", "--timestamps", "--no-trunc"]
    if since:
        args += ["--since", since]
    if tail:
        args += ["--tail", tail]
    try:
        result = run_docker(host, [*args, name], timeout=120)
    finally:
        host.close()
    if not result.ok:
        raise OpsError(f"{host.name}: logs of {name} failed: {result.error_text()}")
    return result.stdout + result.stderr
