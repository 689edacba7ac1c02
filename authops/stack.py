"""Tasks for the authentik stack on Docker Swarm: render, plan, deploy, status, logs, rollback, remove.

Other modules call `deploy`, `service_health` and `wait_converged`.
"""

import sys

from invoke import Collection
from invoke.exceptions import Exit

from authops import output, stackupgrade
from authops.errors import OK, WARNING, OpsError
from authops.settings import load_settings
from authops.stackdeploy import current_plan, deploy, remove, rollback, show_plan
from authops.stackfile import render_stack
from authops.stackstatus import service_health, service_logs
from authops.stackwait import wait_converged
from authops.swarm import find_manager
from authops.tasking import DRY_RUN_HELP, ENV_HELP, ops_task

__all__ = ["deploy", "service_health", "wait_converged", "ns"]

TIMEOUT_HELP = "Seconds to wait for the services to converge (default: DEPLOY_TIMEOUT)."
BREAK_LOCK_HELP = (
    "Break a deploy lock older than the timeout, left by a deploy that died."
)


def parse_timeout(timeout: str | None) -> int | None:
    """Return --timeout as seconds, or None for DEPLOY_TIMEOUT."""
    if timeout is None:
        return None
    if not str(timeout).isdigit() or int(timeout) <= 0:
        raise OpsError(f"--timeout {timeout!r} is not a positive number of seconds")
    return int(timeout)


@ops_task(help={"env": ENV_HELP})
def render(c, env=None):
    """Print the stack file exactly as stack.deploy would deploy it."""
    settings = load_settings(env)
    rendered = render_stack(settings)
    output.emit(rendered.text.rstrip("\n"))


@ops_task(help={"env": ENV_HELP})
def plan(c, env=None):
    """Show, service by service, what a deploy would change in the running stack."""
    settings = load_settings(env)
    rendered = render_stack(settings)
    host = find_manager(settings)
    try:
        output.phase(f"plan for {settings.stack_name} on {host.name}")
        show_plan(current_plan(host, rendered, settings.stack_name))
    finally:
        host.close()


@ops_task(
    name="deploy",
    help={
        "env": ENV_HELP,
        "dry_run": "Run the pre-flight checks and show the plan; create and deploy nothing.",
        "timeout": TIMEOUT_HELP,
        "break_lock": BREAK_LOCK_HELP,
        "prune": "Also remove running services of the stack that the stack file no longer has.",
    },
)
def deploy_task(
    c, env=None, dry_run=False, timeout=None, break_lock=False, prune=False
):
    """Check, deploy the stack and wait until it converges; exit 1 if it fails or rolls back."""
    settings = load_settings(env)
    seconds = parse_timeout(timeout)
    if not deploy(settings, seconds, dry_run, break_lock, prune):
        raise Exit(
            f"error: deploy of {settings.stack_name} failed; see the lines above. "
            f"Check with `invoke stack.status --env {settings.env_name}`.",
            code=1,
        )


@ops_task(help={"env": ENV_HELP})
def status(c, env=None):
    """Show each service: replicas running, update state, and its tasks per node."""
    settings = load_settings(env)
    services = service_health(settings)
    if not services:
        raise OpsError(f"stack {settings.stack_name} is not deployed")
    for service in services:
        state = OK if service.healthy else WARNING
        update = service.update_state or "none"
        detail = f"{service.running}/{service.desired} running, image {service.image}, update {update}"
        if service.update_message:
            detail += f" ({service.update_message})"
        output.status(service.name, state, detail)
        for task in service.tasks:
            error = f": {task.error}" if task.error else ""
            output.info(f"{task.node}: {task.state} since {task.since}{error}")


@ops_task(
    help={
        "env": ENV_HELP,
        "service": "server or worker.",
        "since": "Only lines since this time: a timestamp or a duration such as 10m.",
        "tail": "Only this many lines from the end of each task's log.",
    }
)
def logs(c, service, env=None, since=None, tail=None):
    """Print the logs of the server or worker service from all its tasks."""
    settings = load_settings(env)
    if service not in ("server", "worker"):
        raise OpsError(
            f"service {service!r} is not part of the stack: use server or worker"
        )
    sys.stdout.write(output.redact(service_logs(settings, service, since, tail)))


@ops_task(
    name="rollback",
    help={
        "env": ENV_HELP,
        "dry_run": DRY_RUN_HELP,
        "timeout": TIMEOUT_HELP,
        "break_lock": BREAK_LOCK_HELP,
    },
)
def rollback_task(c, env=None, dry_run=False, timeout=None, break_lock=False):
    """Roll every service back to its previous spec and wait until it converges."""
    settings = load_settings(env)
    seconds = parse_timeout(timeout)
    if not rollback(settings, seconds, dry_run, break_lock):
        raise Exit(f"error: rollback of {settings.stack_name} failed", code=1)


def confirm_removal(stack: str, yes: bool) -> None:
    """Require --yes, or the stack name typed at an interactive prompt."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise OpsError(f"removing stack {stack} needs confirmation: pass --yes")
    answer = input(
        f"Remove stack {stack}? Its volumes and data stay. Type the stack name: "
    )
    if answer.strip() != stack:
        raise OpsError("the typed name does not match: nothing was removed")


@ops_task(
    name="remove",
    help={
        "env": ENV_HELP,
        "dry_run": DRY_RUN_HELP,
        "yes": "Remove without asking to type the stack name.",
        "break_lock": BREAK_LOCK_HELP,
    },
)
def remove_task(c, env=None, dry_run=False, yes=False, break_lock=False):
    """Remove the stack's services and secrets; volumes and NFS data stay."""
    settings = load_settings(env)
    if not dry_run:
        confirm_removal(settings.stack_name, yes)
    remove(settings, dry_run, break_lock)


ns = Collection("stack")
ns.add_task(render)
ns.add_task(plan)
ns.add_task(deploy_task)
ns.add_task(status)
ns.add_task(logs)
ns.add_task(rollback_task)
ns.add_task(remove_task)
ns.add_task(stackupgrade.upgrade)
