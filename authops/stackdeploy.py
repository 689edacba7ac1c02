"""Deploy, roll back and remove the stack on the swarm, under the deploy lock."""

import shlex
import time

from authops import output
from authops.errors import CHANGED, FAILED, OK, UNCHANGED, WOULD_CHANGE, OpsError
from authops.hosts import Host
from authops.settings import Settings
from authops.stackaudit import append_audit
from authops.stackfile import SERVICES, RenderedStack, render_stack
from authops.stacklock import stack_lock
from authops.stackplan import NEW, NOT_IN_FILE, StackPlan, plan_stack
from authops.stackpreflight import preflight
from authops.stacksecrets import (
    create_secrets,
    existing_secrets,
    remove_unused_secrets,
)
from authops.stackstatus import stack_health
from authops.stackwait import WaitResult, snapshot, wait_converged
from authops.swarm import find_manager, run_docker, services_of_stack, short_name

# Seconds a failed deploy waits for Swarm's rollback to run the old tasks again.
ROLLBACK_SETTLE = 90

DEPLOY_COMMAND_TIMEOUT = 300  # seconds for `docker stack deploy` itself
REMOVE_WAIT = 120  # seconds to wait for removed services to disappear


def current_plan(host: Host, rendered: RenderedStack, stack: str) -> StackPlan:
    return plan_stack(rendered.document, stack, services_of_stack(host, stack))


def show_plan(plan: StackPlan, prune: bool = False) -> None:
    """Print one line per service: new, changed (with each field), unchanged."""
    for service in plan.services:
        detail = service.detail()
        if service.state == NEW:
            detail = "not deployed yet: will be created"
        elif service.state == NOT_IN_FILE and prune:
            detail = "runs, but the stack file no longer has it: removed by --prune"
        elif service.state == NOT_IN_FILE:
            detail = "runs, but the stack file no longer has it: kept (add --prune to remove it)"
        output.status(f"{plan.stack}_{service.name}", service.state, detail)


def needs_deploy(plan: StackPlan, prune: bool) -> bool:
    pruned = prune and any(s.state == NOT_IN_FILE for s in plan.services)
    return plan.changed or pruned


def run_stack_deploy(
    host: Host, rendered: RenderedStack, stack: str, prune: bool
) -> None:
    """Write the stack file to a temporary file on the manager and deploy it."""
    created = host.run("mktemp /tmp/authops-stack.XXXXXX", check=True)
    path = created.stdout.strip()
    try:
        host.upload(rendered.text.encode(), path, mode=0o600)
        prune_flag = ["--prune"] if prune else []
        result = run_docker(
            host,
            ["stack", "deploy", "--with-registry-auth", *prune_flag, "-c", path, stack],
            timeout=DEPLOY_COMMAND_TIMEOUT,
        )
    finally:
        host.run(f"rm -f {shlex.quote(path)}")
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            output.info(line.strip())
    if not result.ok:
        raise OpsError(
            f"{host.name}: `docker stack deploy` of {stack} failed: {result.error_text()}"
        )


def report_failures(result: WaitResult, action: str) -> str:
    """Print each failed service with its reason; return a one-line summary."""
    for name, reason in result.failures.items():
        output.status(name, FAILED, reason)
    names = ", ".join(result.failures)
    return f"{action} failed for {names}"


def deploy(
    settings: Settings,
    timeout: int | None = None,
    dry_run: bool = False,
    break_lock: bool = False,
    prune: bool = False,
    lock_held: bool = False,
) -> bool:
    """Deploy the stack and wait for it to converge; return False when it failed.

    A dry run runs the pre-flight checks and prints the plan, and creates,
    deploys and removes nothing. `prune` removes services that the stack
    file no longer has. With `lock_held` the caller holds the deploy lock
    already, as stack.upgrade does.
    """
    timeout = timeout or settings.number("DEPLOY_TIMEOUT")
    stack = settings.stack_name
    output.phase(f"rendering the stack file of {stack}")
    rendered = render_stack(settings)
    output.phase("pre-flight checks")
    host = find_manager(settings)
    try:
        preflight(settings, host)
        if dry_run:
            return dry_run_deploy(host, rendered, stack, prune)
        if lock_held:
            return deploy_locked(settings, host, rendered, timeout, prune)
        with stack_lock(host, stack, "deploy", timeout, break_lock):
            return deploy_locked(settings, host, rendered, timeout, prune)
    finally:
        host.close()


def dry_run_deploy(
    host: Host, rendered: RenderedStack, stack: str, prune: bool
) -> bool:
    output.phase(f"plan for {stack} on {host.name}")
    plan = current_plan(host, rendered, stack)
    show_plan(plan, prune)
    create_secrets(host, stack, rendered.secrets, dry_run=True)
    state = WOULD_CHANGE if needs_deploy(plan, prune) else UNCHANGED
    output.status(stack, state, "dry run: nothing was created or deployed")
    return True


def deploy_locked(
    settings: Settings,
    host: Host,
    rendered: RenderedStack,
    timeout: int,
    prune: bool,
) -> bool:
    stack = settings.stack_name
    output.phase(f"plan for {stack} on {host.name}")
    plan = current_plan(host, rendered, stack)
    show_plan(plan, prune)
    if not needs_deploy(plan, prune):
        if not wait_unchanged_running(host, stack, timeout):
            append_audit(
                host, "deploy", stack, settings.image, "unchanged, not running"
            )
            return False
        remove_unused_secrets(host, stack)
        output.status(stack, UNCHANGED, "the running services match the stack file")
        append_audit(host, "deploy", stack, settings.image, "unchanged")
        return True

    output.phase("creating secrets")
    create_secrets(host, stack, rendered.secrets, dry_run=False)
    before = snapshot(host, stack)
    output.phase(f"deploying {stack}")
    run_stack_deploy(host, rendered, stack, prune)

    output.phase(f"waiting up to {timeout} s for {stack} to converge")
    result = wait_converged(host, stack, list(SERVICES), before, timeout)
    if not result.ok:
        summary = report_failures(result, "deploy")
        wait_previous_serving(host, stack, ROLLBACK_SETTLE)
        append_audit(host, "deploy", stack, settings.image, f"failed: {summary}")
        return False
    remove_unused_secrets(host, stack)
    output.status(stack, CHANGED, f"converged in {result.seconds:.0f} s")
    append_audit(host, "deploy", stack, settings.image, "ok")
    return True


def wait_unchanged_running(host: Host, stack: str, timeout: int) -> bool:
    """Wait until every task of an unchanged stack runs; False when one does not in time.

    A spec that matches the stack file can still have a task that is not
    running: after a node or dockerd restart, or while Swarm restarts a
    crashed task. Reporting "unchanged" then would let the next step (a
    HAProxy reload, doctor) find a service down.
    """
    if all(service.healthy for service in stack_health(host, stack)):
        return True
    output.phase(
        f"the spec of {stack} is unchanged, but not every task runs: "
        f"waiting up to {timeout} s"
    )
    result = wait_converged(host, stack, list(SERVICES), snapshot(host, stack), timeout)
    if not result.ok:
        report_failures(result, "start")
        return False
    output.status(stack, OK, f"every task runs after {result.seconds:.0f} s")
    return True


def wait_previous_serving(host: Host, stack: str, timeout: float) -> None:
    """After a failed update, wait until Swarm's own rollback runs the previous version again.

    With stop-first updates the old task was stopped before the new one
    failed, so the previous version serves only once its tasks run again.
    """
    rolling_back = [
        service["Spec"]["Name"]
        for service in services_of_stack(host, stack)
        if (service.get("UpdateStatus") or {}).get("State", "").startswith("rollback")
    ]
    if not rolling_back:
        return
    output.phase(
        f"waiting up to {timeout:.0f} s for the previous version of {', '.join(rolling_back)} to run"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = {service.name: service for service in stack_health(host, stack)}
        waiting = [
            name
            for name in rolling_back
            if name in health and health[name].running < health[name].desired
        ]
        if not waiting:
            output.status(stack, OK, "the previous version runs again")
            return
        time.sleep(2)
    output.status(
        stack,
        FAILED,
        "the previous version does not run yet: check `invoke stack.status`",
    )


def rollback(
    settings: Settings,
    timeout: int | None = None,
    dry_run: bool = False,
    break_lock: bool = False,
) -> bool:
    """Roll each service of the stack back to its previous spec and wait; False on failure."""
    timeout = timeout or settings.number("DEPLOY_TIMEOUT")
    stack = settings.stack_name
    host = find_manager(settings)
    try:
        services = services_of_stack(host, stack)
        if not services:
            raise OpsError(
                f"stack {stack} has no services on {host.name}: nothing to roll back"
            )
        targets = rollback_targets(services)
        if dry_run:
            for service in targets:
                output.status(
                    service["Spec"]["Name"],
                    WOULD_CHANGE,
                    "would roll back to its previous spec",
                )
            return True
        if not targets:
            return True
        with stack_lock(host, stack, "rollback", timeout, break_lock):
            return rollback_locked(settings, host, targets, timeout)
    finally:
        host.close()


def rollback_targets(services: list[dict]) -> list[dict]:
    """Return the services that can roll back; report why each other one cannot.

    A service whose last change was a rollback is skipped: its previous
    spec is the version that was rolled away from, often a failed deploy,
    and a second rollback would bring that back.
    """
    targets = []
    for service in services:
        name = service["Spec"]["Name"]
        state = (service.get("UpdateStatus") or {}).get("State", "")
        if not service.get("PreviousSpec"):
            output.status(name, UNCHANGED, "no previous spec to roll back to")
        elif state.startswith("rollback"):
            output.status(
                name,
                UNCHANGED,
                f"already rolled back (update state {state}): deploy to move forward",
            )
        else:
            targets.append(service)
    return targets


def rollback_locked(
    settings: Settings, host: Host, targets: list[dict], timeout: int
) -> bool:
    stack = settings.stack_name
    before = snapshot(host, stack)
    names = [short_name(service["Spec"]["Name"], stack) for service in targets]
    output.phase(f"rolling back {', '.join(names)}")
    for service in targets:
        run_docker(
            host,
            ["service", "rollback", "--detach", service["Spec"]["Name"]],
            check=True,
        )
    result = wait_converged(host, stack, names, before, timeout, rollback=True)
    image = previous_image(targets)
    if not result.ok:
        summary = report_failures(result, "rollback")
        append_audit(host, "rollback", stack, image, f"failed: {summary}")
        return False
    output.status(stack, CHANGED, f"rolled back in {result.seconds:.0f} s")
    append_audit(host, "rollback", stack, image, "ok")
    return True


def previous_image(services: list[dict]) -> str:
    images = {
        service["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
        for service in services
    }
    return ",".join(sorted(images))


def remove(settings: Settings, dry_run: bool = False, break_lock: bool = False) -> None:
    """Remove the stack's services and its secrets; the volumes and their data stay."""
    stack = settings.stack_name
    host = find_manager(settings)
    try:
        services = services_of_stack(host, stack)
        secrets = sorted(existing_secrets(host, stack))
        if dry_run:
            for service in services:
                output.status(
                    service["Spec"]["Name"], WOULD_CHANGE, "would remove service"
                )
            for name in secrets:
                output.status(name, WOULD_CHANGE, "would remove secret")
            return
        with stack_lock(
            host, stack, "remove", settings.number("DEPLOY_TIMEOUT"), break_lock
        ):
            remove_locked(settings, host, services)
    finally:
        host.close()


def remove_locked(settings: Settings, host: Host, services: list[dict]) -> None:
    stack = settings.stack_name
    if services:
        output.phase(f"removing stack {stack}")
        run_docker(host, ["stack", "rm", stack], check=True)
        wait_removed(host, stack)
        for service in services:
            output.status(service["Spec"]["Name"], CHANGED, "removed")
    else:
        output.status(stack, UNCHANGED, "no services to remove")
    remove_unused_secrets(host, stack)
    append_audit(host, "remove", stack, settings.image, "ok")


def stack_leftovers(host: Host, stack: str) -> list[str]:
    """Return what `docker stack rm` has not removed yet: services, containers, networks."""
    label = f"label=com.docker.stack.namespace={stack}"
    leftovers = [service["Spec"]["Name"] for service in services_of_stack(host, stack)]
    for kind, command in (
        ("container", ["ps", "-aq", "--filter", label]),
        ("network", ["network", "ls", "-q", "--filter", label]),
    ):
        result = run_docker(host, command)
        leftovers += [f"{kind} {name}" for name in result.stdout.split()]
    return leftovers


def wait_removed(host: Host, stack: str) -> None:
    """Wait until the stack's services, containers and networks are gone.

    `docker stack rm` returns before they are, and a deploy in that window
    fails with "network ... not found"; the secrets can go only afterwards.
    """
    deadline = time.monotonic() + REMOVE_WAIT
    while leftovers := stack_leftovers(host, stack):
        if time.monotonic() > deadline:
            raise OpsError(
                f"{', '.join(leftovers)} of {stack} still present {REMOVE_WAIT} s after `docker stack rm`: "
                "check `docker service ls`, `docker ps -a` and `docker network ls`"
            )
        time.sleep(1)
