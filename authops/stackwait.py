"""Wait for the stack's services to converge after a deploy or a rollback.

`docker stack deploy` returns before anything runs, and Swarm rolls a failed
update back without failing any command. So the tool polls each service:
its UpdateStatus, and its tasks. A service has converged when its update
(if any) completed and as many tasks as replicas run the current spec.
Swarm reports a task with a health check as running only once it is healthy.
"""

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from authops import output
from authops.hosts import Host
from authops.swarm import run_docker, service_tasks, services_of_stack, short_name

POLL_INTERVAL = 3  # seconds between polls
PROGRESS_INTERVAL = 15  # seconds after which an unchanged progress line repeats
REPEATED_FAILURES = 3  # new tasks failing with the same error: the deploy failed
LOG_LINES = 3  # lines of a failed task's log shown with the error
LOG_SCAN = 50  # lines of its log searched for errors
ERROR_WORDS = re.compile(r"error|fatal|fail|refus", re.IGNORECASE)

NO_PREVIOUS_VERSION = (
    "new service, so Swarm has no previous version to roll back to and it "
    "stays failing until a fixed deploy or stack.remove; "
)
FAILED_UPDATE = ("paused", "rollback_paused", "rollback_completed")
ROLLING_BACK = "rollback_started"


@dataclass(frozen=True)
class Snapshot:
    """A service before the deploy: what belongs to an earlier update."""

    update_started: str | None
    task_ids: frozenset[str]


@dataclass
class Progress:
    name: str
    done: bool = False
    failure: str | None = None  # set when the deploy of this service failed
    final: bool = False  # no further change expected: stop waiting for it
    summary: str = ""


@dataclass
class WaitResult:
    ok: bool
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def snapshot(host: Host, stack: str) -> dict[str, Snapshot]:
    """Record each running service's update start and task IDs before a change."""
    snapshots = {}
    for service in services_of_stack(host, stack):
        name = service["Spec"]["Name"]
        tasks = service_tasks(host, service["ID"])
        snapshots[short_name(name, stack)] = Snapshot(
            (service.get("UpdateStatus") or {}).get("StartedAt"),
            frozenset(task["ID"] for task in tasks),
        )
    return snapshots


def task_fingerprint(task_spec: dict) -> str:
    """Return the parts of a task spec that an update changes, as one string.

    A task's copy of the spec carries defaults that the service's does not
    (DNSConfig, StopGracePeriod, Runtime), so whole specs never compare equal.
    """
    container = task_spec.get("ContainerSpec") or {}
    parts = {
        "image": container.get("Image"),
        "args": container.get("Args"),
        "env": sorted(container.get("Env") or []),
        "user": container.get("User"),
        "secrets": sorted(s["SecretName"] for s in container.get("Secrets") or []),
        "mounts": [
            (m.get("Type"), m.get("Source"), m.get("Target"))
            for m in container.get("Mounts") or []
        ],
        "healthcheck": container.get("Healthcheck"),
        "placement": (task_spec.get("Placement") or {}).get("Constraints"),
        "force": task_spec.get("ForceUpdate"),
    }
    return json.dumps(parts, sort_keys=True)


def task_error(task: dict) -> str:
    status = task.get("Status") or {}
    error = status.get("Err") or status.get("Message") or status.get("State", "")
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    return f"{error} (exit code {exit_code})" if exit_code else error


def task_state(task: dict) -> str:
    return (task.get("Status") or {}).get("State", "")


def culprit_task(tasks: list[dict]) -> dict | None:
    """Return the task that best explains a failure: the latest failed or rejected one.

    Without one, the latest task that completed: a server or worker never
    exits on its own, and Swarm stops an unhealthy container with SIGTERM,
    after which it may exit 0 and count as complete, without an error.
    """
    for states in (("failed", "rejected"), ("complete",)):
        matching = [task for task in tasks if task_state(task) in states]
        if matching:
            return max(matching, key=lambda task: task["Status"].get("Timestamp", ""))
    return None


def task_log_tail(host: Host, task_id: str) -> str:
    """Return the last lines a task logged, preferring error lines, to show beside its error."""
    result = run_docker(
        host,
        ["service", "logs", "--raw", "--no-trunc", "--tail", str(LOG_SCAN), task_id],
        timeout=30,
    )
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if ERROR_WORDS.search(line)]
    picked = (errors or lines)[-LOG_LINES:]
    return " | ".join(line[:300] for line in picked)


def update_failure(state: str, message: str) -> str:
    """Describe a failed update state in words, with Swarm's own message."""
    described = {
        "rollback_started": "the update failed; Swarm is rolling back to the previous version",
        "rollback_completed": "the update failed; Swarm rolled back to the previous version",
        "paused": "the update failed and is paused",
        "rollback_paused": "the update failed and its rollback failed too (paused)",
    }[state]
    return f"{described} ({message})" if message else described


def failure_reason(host: Host, tasks: list[dict], message: str) -> str:
    """Describe a failed service: Swarm's update message, the task's error and its log."""
    parts = [message] if message else []
    task = culprit_task(tasks)
    if task is not None:
        parts.append(f"task {task['ID'][:12]} {task_state(task)}: {task_error(task)}")
        tail = task_log_tail(host, task["ID"])
        if tail:
            parts.append(f"last log lines: {tail}")
    return "; ".join(parts) or "unknown reason"


def count_states(tasks: list[dict]) -> str:
    states = Counter((task.get("Status") or {}).get("State", "?") for task in tasks)
    return ", ".join(f"{count} {state}" for state, count in sorted(states.items()))


def repeated_error(tasks: list[dict]) -> tuple[str, int] | None:
    errors = Counter(
        task_error(task)
        for task in tasks
        if (task.get("Status") or {}).get("State") in ("failed", "rejected")
    )
    if not errors:
        return None
    error, count = errors.most_common(1)[0]
    return (error, count) if count >= REPEATED_FAILURES else None


def service_progress(
    host: Host,
    service: dict,
    before: Snapshot | None,
    rollback: bool,
    seen: dict[str, dict],
) -> Progress:
    """Judge one service: converged, still moving, or failed.

    `seen` collects every new task across polls, because Swarm prunes old
    tasks from the history, and with them the error of a failed one.
    """
    name = service["Spec"]["Name"]
    replicas = ((service["Spec"].get("Mode") or {}).get("Replicated") or {}).get(
        "Replicas", 1
    )
    status = service.get("UpdateStatus") or {}
    if before is not None and status.get("StartedAt") == before.update_started:
        status = {}  # left over from an earlier update
    state = status.get("State")
    tasks = service_tasks(host, service["ID"])
    seen.update(
        (t["ID"], t) for t in tasks if before is None or t["ID"] not in before.task_ids
    )
    new_tasks = list(seen.values())
    active = [t for t in tasks if t.get("DesiredState") == "running"]
    current = task_fingerprint(service["Spec"]["TaskTemplate"])
    running = [
        t
        for t in active
        if t["Status"].get("State") == "running"
        and task_fingerprint(t["Spec"]) == current
    ]
    summary = f"{len(running)}/{replicas} running"
    if state:
        summary += f", update {state}"
    others = [t for t in active if t not in running]
    if others:
        summary += f"; also {count_states(others)}"
    progress = Progress(name, summary=summary)

    expected_end = "rollback_completed" if rollback else "completed"
    if state in FAILED_UPDATE and not (rollback and state == expected_end):
        reason = update_failure(state, status.get("Message", ""))
        progress.failure = failure_reason(host, new_tasks, reason)
        progress.final = True
        return progress
    if state == ROLLING_BACK and not rollback:
        reason = update_failure(state, status.get("Message", ""))
        progress.failure = failure_reason(host, new_tasks, reason)
        return progress
    repeated = repeated_error(new_tasks)
    if repeated is not None:
        error, count = repeated
        reason = f"{count} tasks failed with: {error}"
        progress.failure = failure_reason(host, new_tasks, reason)
        progress.final = True
        return progress
    settled = state in (None, expected_end) if not rollback else state == expected_end
    progress.done = settled and len(running) == replicas == len(active)
    progress.final = progress.done
    return progress


def wait_converged(
    host: Host,
    stack: str,
    names: list[str],
    before: dict[str, Snapshot],
    timeout: float,
    *,
    rollback: bool = False,
) -> WaitResult:
    """Poll the services until each converged or failed, or the timeout passed.

    With `rollback`, a completed rollback is the goal instead of a failure.
    Prints one progress line per service when it changes, or every 15 s.
    """
    started = time.monotonic()
    printed: dict[str, tuple[str, float]] = {}
    seen: dict[str, dict[str, dict]] = {name: {} for name in names}
    while True:
        progress = poll(host, stack, names, before, rollback, seen)
        elapsed = time.monotonic() - started
        print_progress(progress, printed, elapsed)
        if all(item.final for item in progress):
            break
        if elapsed > timeout:
            for item in progress:
                if not item.final:
                    item.failure = (
                        f"timed out after {timeout:.0f} s: {item.summary}"
                        + (f"; {item.failure}" if item.failure else "")
                    )
            break
        time.sleep(POLL_INTERVAL)
    failures = {}
    for name, item in zip(names, progress, strict=True):
        if item.failure:
            fresh = NO_PREVIOUS_VERSION if name not in before else ""
            failures[item.name] = fresh + item.failure
    return WaitResult(not failures, failures, time.monotonic() - started)


def poll(
    host: Host,
    stack: str,
    names: list[str],
    before: dict[str, Snapshot],
    rollback: bool,
    seen: dict[str, dict[str, dict]],
) -> list[Progress]:
    services = {
        short_name(service["Spec"]["Name"], stack): service
        for service in services_of_stack(host, stack)
    }
    progress = []
    for name in names:
        if name not in services:
            progress.append(Progress(f"{stack}_{name}", summary="not created yet"))
            continue
        progress.append(
            service_progress(
                host, services[name], before.get(name), rollback, seen[name]
            )
        )
    return progress


def print_progress(
    progress: list[Progress], printed: dict[str, tuple[str, float]], elapsed: float
) -> None:
    for item in progress:
        if item.done:
            state = "converged"
        elif item.failure:
            state = "failing"
        else:
            state = "waiting"
        line = f"{state}: {item.summary}"
        last_line, last_time = printed.get(item.name, ("", -PROGRESS_INTERVAL))
        if line != last_line or elapsed - last_time >= PROGRESS_INTERVAL:
            output.status(item.name, state, f"{item.summary} ({elapsed:.0f} s)")
            printed[item.name] = (line, elapsed)
