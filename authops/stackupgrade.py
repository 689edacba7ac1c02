"""stack.upgrade: move the running stack to a new authentik release, with a backup first.

The order: decide (no downgrade, no skipped major release), back up the
database, deploy the new tag and wait, then write the tag to the env file.
A failed deploy is rolled back to the images the services ran before, and
the env file stays as it was. A restore is never automatic: authentik may
have migrated the database before it failed, and only the operator can
judge whether the old version still runs on it.
"""

import dataclasses
import time

from invoke.exceptions import Exit

from authops import dbdump, output
from authops.db import parse_number, shown
from authops.envupdate import update_env_file
from authops.errors import CHANGED, FAILED, OK, UNCHANGED, WOULD_CHANGE, OpsError
from authops.hosts import Host
from authops.releases import decide_upgrade
from authops.settings import Settings, load_settings
from authops.stackaudit import append_audit
from authops.stackdeploy import deploy, rollback_locked
from authops.stacklock import stack_lock
from authops.swarm import find_manager, service_tasks, services_of_stack
from authops.tasking import ENV_HELP, ops_task

TAG_KEY = "AUTHENTIK_TAG"
CONFIRM_POLL = 3  # seconds between checks that the old version serves again


@dataclasses.dataclass(frozen=True)
class RunningVersion:
    """The tag the stack runs, and each service's image before the upgrade."""

    tag: str
    images: dict[str, str]  # service name -> image reference without digest
    deployed: bool


def image_reference(service: dict) -> str:
    """Return the service's image without its `@sha256:` digest."""
    image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    return image.split("@", 1)[0]


def image_tag(reference: str) -> str:
    """Return the tag of an image reference; `latest` when it has none.

    A colon before the last slash belongs to a registry's port, not a tag.
    """
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def running_version(host: Host, settings: Settings) -> RunningVersion:
    """Return the tag the stack's services run, else the env file's when not deployed.

    Raises OpsError when the services run different tags: an earlier change
    did not finish.
    """
    services = services_of_stack(host, settings.stack_name)
    if not services:
        return RunningVersion(settings.get(TAG_KEY), {}, deployed=False)
    images = {service["Spec"]["Name"]: image_reference(service) for service in services}
    tags = sorted({image_tag(image) for image in images.values()})
    if len(tags) > 1:
        listed = ", ".join(f"{name} runs {image}" for name, image in images.items())
        raise OpsError(
            f"the services of {settings.stack_name} run different tags ({listed}): finish "
            f"the last change first with `invoke stack.deploy` or `invoke stack.rollback`"
        )
    return RunningVersion(tags[0], images, deployed=True)


def with_tag(settings: Settings, tag: str) -> Settings:
    return dataclasses.replace(settings, values={**settings.values, TAG_KEY: tag})


def check_allowed(current: str, target: str) -> None:
    """Raise OpsError when authentik does not support going from `current` to `target`."""
    decision = decide_upgrade(current, target)
    if not decision.allowed:
        raise OpsError(
            f"upgrade from {current} to {target} rejected: {decision.reason}. "
            "Nothing was changed."
        )
    output.status("release order", OK, f"{current} -> {target}: {decision.reason}")
    if decision.warning:
        output.warn(decision.warning)


def write_tag(settings: Settings, tag: str, dry_run: bool) -> None:
    """Set AUTHENTIK_TAG in the env file, keeping its comments, order and mode."""
    changed = update_env_file(
        settings.path, settings.env_name, {TAG_KEY: tag}, dry_run=dry_run
    )
    if not changed:
        output.status(str(settings.path), UNCHANGED, f"{TAG_KEY} is {tag}")
    elif dry_run:
        output.status(str(settings.path), WOULD_CHANGE, f"would set {TAG_KEY}={tag}")
    else:
        output.status(str(settings.path), CHANGED, f"{TAG_KEY} set to {tag}")


def back_up(settings: Settings) -> str:
    """Dump the database, verify the dump with pg_restore --list; return its path as shown."""
    plan = dbdump.plan_backup(settings)
    output.phase(f"backing up database {settings.database.name}")
    summary = dbdump.write_dump(settings.database, plan.path)
    dbdump.rotate(plan)
    path = shown(summary.path)
    output.status(
        path,
        CHANGED,
        f"{summary.size} bytes, {summary.entries} entries listed by pg_restore --list",
    )
    return path


def show_dry_run(settings: Settings, tag: str, timeout: int | None) -> None:
    plan = dbdump.plan_backup(settings)
    output.status(
        shown(plan.path),
        WOULD_CHANGE,
        f"would dump {settings.database.name} with pg_dump -Fc and verify it",
    )
    deploy(with_tag(settings, tag), timeout, dry_run=True)
    write_tag(settings, tag, dry_run=True)


def upgrade_stack(
    settings: Settings, tag: str, timeout: int | None, dry_run: bool
) -> None:
    """Upgrade the stack to `tag`; raise OpsError or Exit when it is rejected or fails.

    Outside a dry run the deploy lock is held from before the running
    version is read until the rollback, so that no other deploy slips in
    between the backup and the upgrade.
    """
    host = find_manager(settings)
    try:
        if dry_run:
            current = check_upgrade(settings, host, tag)
            if current.tag == tag:
                finish_unchanged(settings, tag, current, dry_run=True)
            else:
                show_dry_run(settings, tag, timeout)
            return
        # The backup, the deploy and a rollback each take up to about a deploy
        # timeout, so a live upgrade's lock must not count as stale before that.
        stale_after = 3 * (timeout or settings.number("DEPLOY_TIMEOUT"))
        with stack_lock(host, settings.stack_name, "upgrade", stale_after):
            apply_upgrade(settings, host, tag, timeout)
    finally:
        host.close()


def check_upgrade(settings: Settings, host: Host, tag: str) -> RunningVersion:
    """Read the running version and raise OpsError unless going to `tag` is supported."""
    current = running_version(host, settings)
    where = "running" if current.deployed else "not deployed; env file"
    output.phase(
        f"upgrading {settings.stack_name} from {current.tag} ({where}) to {tag}"
    )
    check_allowed(current.tag, tag)
    return current


def apply_upgrade(
    settings: Settings, host: Host, tag: str, timeout: int | None
) -> None:
    """Back up, deploy `tag` and write it to the env file; roll back when the deploy fails."""
    current = check_upgrade(settings, host, tag)
    if current.tag == tag:
        finish_unchanged(settings, tag, current, dry_run=False)
        return

    backup = back_up(settings)
    if deploy(with_tag(settings, tag), timeout, lock_held=True):
        write_tag(settings, tag, dry_run=False)
        output.info(f"upgraded to {tag}; the backup taken before it is {backup}")
        return
    if not current.deployed:
        raise Exit(
            f"error: the first deploy of {settings.stack_name} with {tag} failed; see the "
            f"lines above. Nothing ran before, so nothing was rolled back.",
            code=1,
        )
    restore_previous(settings, current)
    raise Exit(
        output.redact(
            f"error: the upgrade to {tag} failed and {settings.stack_name} was rolled back "
            f"to {current.tag}, which serves again; {settings.path} still says "
            f"{TAG_KEY}={settings.get(TAG_KEY)}. If authentik {tag} migrated the database "
            f"before it failed, the old version may not work on it: then stop the stack and "
            f"restore the backup taken before the upgrade with "
            f"`invoke db.restore {backup} --env {settings.env_name} --yes`"
        ),
        code=1,
    )


def finish_unchanged(
    settings: Settings, tag: str, current: RunningVersion, dry_run: bool
) -> None:
    """Handle a target that the stack already runs: at most the env file changes."""
    if not current.deployed:
        raise OpsError(
            f"stack {settings.stack_name} is not deployed and the env file already sets "
            f"{TAG_KEY}={tag}: deploy it with `invoke stack.deploy --env {settings.env_name}`"
        )
    output.status(settings.stack_name, UNCHANGED, f"the services already run {tag}")
    write_tag(settings, tag, dry_run)


def restore_previous(settings: Settings, previous: RunningVersion) -> None:
    """Roll back every service not on its previous image, then confirm the old version serves.

    Swarm has usually rolled a failed service back already, because the
    stack sets `failure_action: rollback`. A second rollback would bring the
    failed spec back, so only services whose spec still names another image
    are rolled back. The rollback waits DEPLOY_TIMEOUT, whatever --timeout
    the upgrade had.
    Raises OpsError when the old version does not serve again in time.
    """
    timeout = settings.number("DEPLOY_TIMEOUT")
    stack = settings.stack_name
    output.phase(f"rolling {stack} back to {previous.tag}")
    host = find_manager(settings)
    try:
        services = services_of_stack(host, stack)
        targets = [
            service
            for service in services
            if image_reference(service) != previous.images.get(service["Spec"]["Name"])
            and service.get("PreviousSpec")
        ]
        for service in services:
            if service not in targets:
                output.status(
                    service["Spec"]["Name"],
                    UNCHANGED,
                    f"already on {image_reference(service)}",
                )
        # The caller, apply_upgrade, holds the deploy lock.
        if targets and not rollback_locked(settings, host, targets, timeout):
            raise OpsError(
                f"the upgrade failed and so did the rollback of {stack}: check "
                f"`invoke stack.status`, then run `invoke stack.rollback`"
            )
        confirm_serving(host, stack, previous, timeout)
        append_audit(
            host,
            "upgrade",
            stack,
            ",".join(sorted(set(previous.images.values()))),
            "failed: rolled back",
        )
    finally:
        host.close()


def serving_problems(host: Host, stack: str, previous: RunningVersion) -> list[str]:
    """Return why the stack does not yet serve with its previous images; [] when it does."""
    problems = []
    services = {s["Spec"]["Name"]: s for s in services_of_stack(host, stack)}
    for name, image in previous.images.items():
        service = services.get(name)
        if service is None:
            problems.append(f"{name} is gone")
            continue
        if image_reference(service) != image:
            problems.append(f"{name} spec names {image_reference(service)}")
            continue
        state = (service.get("UpdateStatus") or {}).get("State", "")
        if state in ("updating", "rollback_started", "paused", "rollback_paused"):
            problems.append(f"{name} update state {state}")
            continue
        replicas = ((service["Spec"].get("Mode") or {}).get("Replicated") or {}).get(
            "Replicas", 1
        )
        running = [
            task
            for task in service_tasks(host, service["ID"])
            if task.get("DesiredState") == "running"
            and (task.get("Status") or {}).get("State") == "running"
        ]
        on_image = [
            task
            for task in running
            if task["Spec"]["ContainerSpec"]["Image"].split("@", 1)[0] == image
        ]
        if len(on_image) < replicas or len(running) != len(on_image):
            problems.append(
                f"{name}: {len(on_image)}/{replicas} tasks run {image}, {len(running)} running in all"
            )
    return problems


def confirm_serving(
    host: Host, stack: str, previous: RunningVersion, timeout: int
) -> None:
    """Wait until every service runs all its replicas on its previous image, or raise OpsError."""
    deadline = time.monotonic() + timeout
    while True:
        problems = serving_problems(host, stack, previous)
        if not problems:
            for name, image in previous.images.items():
                output.status(name, OK, f"serves again with {image}")
            return
        if time.monotonic() > deadline:
            for problem in problems:
                output.status(stack, FAILED, problem)
            raise OpsError(
                f"the rollback of {stack} did not converge within {timeout} s: "
                f"{'; '.join(problems)}. Check `invoke stack.status`, then "
                f"`invoke stack.rollback` or deploy a fixed env file"
            )
        time.sleep(CONFIRM_POLL)


def parse_timeout(timeout: str | None) -> int | None:
    return parse_number("--timeout", timeout, 1, 86400) if timeout else None


@ops_task(
    help={
        "tag": "authentik release to upgrade to, such as 2025.12.1 (YEAR.MONTH.PATCH).",
        "dry_run": "Check the release order, run the deploy's pre-flight checks and "
        "show the plan; back up, deploy and write nothing.",
        "timeout": "Seconds to wait for the new version to converge (default: "
        "DEPLOY_TIMEOUT); a rollback after a failure waits DEPLOY_TIMEOUT.",
        "env": ENV_HELP,
    }
)
def upgrade(c, tag, dry_run=False, timeout=None, env=None):
    """Back up the database, deploy a newer authentik tag, and roll back if it fails."""
    settings = load_settings(env)
    upgrade_stack(settings, tag, parse_timeout(timeout), dry_run)
