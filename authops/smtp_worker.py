"""The mail test through authentik: `ak test_email ADDRESS` in a running worker container.

Steps:

1. Connect to the first reachable host of SWARM_MANAGERS that is a swarm
   manager, and note its node name (`docker info`).
2. There, list the running tasks of the service STACK_NAME_worker
   (`docker service ps`) and pick one whose current state is Running.
3. Reach the task's node. The rule: the manager's own node is the manager
   host itself; any other node must be listed in SWARM_NODES as NAME=ADDRESS,
   and ADDRESS is the SSH target (`local` or a loopback address means this
   machine). A node that is not listed is an error: this version does not
   guess SSH targets from node names.
4. On the node, find the task's container by its label
   com.docker.swarm.task.id and run `docker exec CONTAINER ak test_email ADDRESS`.
5. Report the command's exit code and output, and the worker service's log
   lines about mail since the command started.
"""

import re
import shlex
import time
from dataclasses import dataclass

from authops import hosts, output
from authops.errors import FAILED, OK, WARNING, OpsError
from authops.hosts import Host
from authops.settings import Node, Settings
from authops.validate import HOST_SPEC_PATTERN

TASK_FORMAT = "{{.ID}}\t{{.Node}}\t{{.CurrentState}}"
INFO_FORMAT = "{{.Name}}\t{{.Swarm.ControlAvailable}}"
LOOPBACK_ADDRESSES = {hosts.LOCAL, "localhost", "127.0.0.1", "::1", "[::1]"}
DOCKER_TIMEOUT = 60  # seconds for each docker CLI call other than the exec
# NOTE: an estimate. `ak` starts Django before it sends, which takes tens of
# seconds on a busy node; SMTP_TIMEOUT is added for the send itself.
AK_START_ALLOWANCE = 120  # seconds
# Extra seconds of worker log before the command started, for clock and
# rounding slack.
LOG_MARGIN = 5
MAX_LOG_LINES = 20
MAIL_LINE = re.compile(r"mail|smtp", re.IGNORECASE)
# Output of a failed send: Python exceptions of smtplib, ssl and socket, or a
# line that mentions mail and an error.
ERROR_WORDS = r"(error|exception|failed|refused|timed out)"
FAILURE_LINE = re.compile(
    r"Traceback \(most recent call last\)|SMTP\w*(Error|Exception)|SSL\w*Error"
    r"|gaierror|ConnectionRefusedError|TimeoutError"
    rf"|(mail|smtp).*{ERROR_WORDS}|{ERROR_WORDS}.*(mail|smtp)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class WorkerTask:
    task_id: str
    node: str
    state: str


@dataclass(frozen=True)
class Manager:
    host: Host
    spec: str
    node: str


def parse_tasks(text: str) -> list[WorkerTask]:
    """Parse `docker service ps --format TASK_FORMAT` output into tasks, skipping malformed lines."""
    tasks = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split("\t")]
        if len(parts) == 3 and all(parts):
            tasks.append(WorkerTask(*parts))
    return tasks


def running_task(tasks: list[WorkerTask]) -> WorkerTask | None:
    """Return the first task whose current state is Running (not Preparing or Starting)."""
    return next((task for task in tasks if task.state.startswith("Running")), None)


def host_of(spec: str) -> str:
    match = HOST_SPEC_PATTERN.match(spec)
    return match["host"] if match else spec


def node_host(node: str, nodes: list[Node], manager: Manager) -> str:
    """Return the host spec that reaches `node`, by the rule in this module's docstring."""
    if node == manager.node:
        return manager.spec
    for entry in nodes:
        if entry.name != node:
            continue
        if entry.address in LOOPBACK_ADDRESSES:
            return hosts.LOCAL
        if entry.address == host_of(manager.spec):
            return manager.spec
        return entry.address
    listed = ", ".join(entry.name for entry in nodes) or "none"
    raise OpsError(
        f"the worker task runs on node {node}, which is not in SWARM_NODES (listed: {listed}): "
        f"add {node}=ADDRESS to SWARM_NODES so that this tool can reach it over SSH"
    )


def docker_info(host: Host) -> tuple[str, bool]:
    """Return the node name of `host` and whether it is a swarm manager."""
    result = host.run(f"docker info --format '{INFO_FORMAT}'", timeout=DOCKER_TIMEOUT)
    if not result.ok:
        raise OpsError(f"{host.name}: `docker info` failed: {result.error_text()}")
    name, _, control = result.stdout.strip().partition("\t")
    return name, control.strip() == "true"


def first_manager(settings: Settings) -> Manager:
    """Connect to the first host of SWARM_MANAGERS that is reachable and a manager."""
    problems = []
    for spec in settings.managers:
        try:
            host = hosts.connect(spec, settings.values)
        except OpsError as error:
            output.status(spec, WARNING, str(error))
            problems.append(f"{spec}: {error}")
            continue
        try:
            node, is_manager = docker_info(host)
        except OpsError as error:
            host.close()
            output.status(spec, WARNING, str(error))
            problems.append(str(error))
            continue
        if is_manager:
            output.status(spec, OK, f"swarm manager, node {node}")
            return Manager(host, spec, node)
        host.close()
        output.status(spec, WARNING, f"node {node} is not a swarm manager")
        problems.append(f"{spec}: not a swarm manager")
    raise OpsError(
        f"no reachable swarm manager in SWARM_MANAGERS: {'; '.join(problems)}"
    )


def find_task(manager: Manager, service: str) -> WorkerTask:
    command = (
        f"docker service ps --no-trunc --filter desired-state=running "
        f"--format '{TASK_FORMAT}' {shlex.quote(service)}"
    )
    result = manager.host.run(command, timeout=DOCKER_TIMEOUT)
    if not result.ok:
        raise OpsError(
            f"{manager.spec}: listing the tasks of {service} failed: {result.error_text()}. "
            "Is the stack deployed (invoke stack.deploy)?"
        )
    tasks = parse_tasks(result.stdout)
    task = running_task(tasks)
    if task is None:
        states = ", ".join(f"{t.task_id[:12]} {t.state}" for t in tasks) or "no tasks"
        raise OpsError(
            f"{service} has no running task ({states}): check `docker service ps {service}` on a manager"
        )
    return task


def find_container(host: Host, task: WorkerTask) -> str:
    command = (
        "docker ps -q --no-trunc --filter "
        f"label=com.docker.swarm.task.id={shlex.quote(task.task_id)}"
    )
    result = host.run(command, timeout=DOCKER_TIMEOUT)
    containers = result.stdout.split()
    if not result.ok or not containers:
        reason = result.error_text() if not result.ok else "no container has its label"
        raise OpsError(
            f"{host.name}: no container for task {task.task_id[:12]} on node {task.node} ({reason}): "
            "the task may have just stopped; run the test again"
        )
    return containers[0]


def worker_log_lines(
    manager: Manager, host: Host, service: str, container: str, seconds: int
) -> list[str]:
    """Return the worker's log lines about mail from the last `seconds`.

    The service log covers every replica, because the message may be sent by
    another worker than the one that ran the command. When the log driver does
    not support `docker service logs`, the container's own log is used.
    """
    since = f"--since {seconds}s"
    result = manager.host.run(
        f"docker service logs --no-task-ids {since} {shlex.quote(service)}",
        timeout=DOCKER_TIMEOUT,
    )
    if not result.ok:
        result = host.run(
            f"docker logs {since} {shlex.quote(container)}", timeout=DOCKER_TIMEOUT
        )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if MAIL_LINE.search(line)][-MAX_LOG_LINES:]


def failure_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if FAILURE_LINE.search(line)]


def run(settings: Settings, recipient: str) -> bool:
    """Run `ak test_email` in a running worker and report it; return whether it succeeded."""
    service = f"{settings.stack_name}_worker"
    manager = first_manager(settings)
    node = None
    try:
        task = find_task(manager, service)
        detail = f"{task.task_id[:12]} on node {task.node} ({task.state})"
        output.status("task", OK, detail)
        spec = node_host(task.node, settings.nodes, manager)
        if spec == manager.spec:
            node = manager.host
        else:
            node = hosts.connect(spec, settings.values)
        container = find_container(node, task)
        output.status("container", OK, f"{container[:12]} on {spec}")
        return run_test_email(settings, manager, node, service, container, recipient)
    finally:
        if node is not None and node is not manager.host:
            node.close()
        manager.host.close()


def run_test_email(
    settings: Settings,
    manager: Manager,
    node: Host,
    service: str,
    container: str,
    recipient: str,
) -> bool:
    """Run the command in the container, then report its output and the worker's mail log lines."""
    command = (
        f"docker exec {shlex.quote(container)} ak test_email {shlex.quote(recipient)}"
    )
    started = time.monotonic()
    result = node.run(command, timeout=AK_START_ALLOWANCE + settings.smtp.timeout)
    seconds = int(time.monotonic() - started) + LOG_MARGIN
    text = result.stdout + result.stderr
    failures = failure_lines(text)
    if not result.ok:
        detail = f"exit code {result.exit_code}: {result.error_text()}"
        output.status("ak test_email", FAILED, detail)
    elif failures:
        detail = f"exit code 0, but the output reports: {failures[-1]}"
        output.status("ak test_email", FAILED, detail)
    else:
        detail = f"exit code 0; sent to {recipient} with authentik's mail settings"
        output.status("ak test_email", OK, detail)
    for line in text.splitlines()[-MAX_LOG_LINES:]:
        output.info(f"ak: {line}")

    log_lines = worker_log_lines(manager, node, service, container, seconds)
    log_failures = failure_lines("\n".join(log_lines))
    if log_failures:
        detail = f"a mail error in the last {seconds} s: {log_failures[-1]}"
        output.status("worker log", FAILED, detail)
    elif log_lines:
        output.status(
            "worker log",
            OK,
            f"{len(log_lines)} line(s) about mail in the last {seconds} s",
        )
    else:
        output.status("worker log", OK, f"nothing about mail in the last {seconds} s")
    for line in log_lines:
        output.info(f"log: {line}")
    return result.ok and not failures and not log_failures
