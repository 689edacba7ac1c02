"""The plan of a deploy: what the rendered stack file changes in the running services.

Both sides are brought to one comparable form per field: the stack file's
service definition, and `docker service inspect` of the running service.
Secrets compare by name only; their names change with their content.
Anything else in the stack file (health check, update policy, ...) is
covered by the spec hash label that stackfile adds to each service.
"""

import shlex
from dataclasses import dataclass, field

from authops.stackfile import SPEC_HASH_LABEL, unescape
from authops.swarm import short_name

NEW = "new"
CHANGED = "changed"
UNCHANGED = "unchanged"
NOT_IN_FILE = "not in stack file"
OTHER_SETTINGS = "other settings"

FIELDS = (
    "image",
    "command",
    "user",
    "environment",
    "secrets",
    "mounts",
    "replicas",
    "ports",
    "placement",
)


@dataclass
class ServicePlan:
    name: str
    state: str
    changes: list[tuple[str, str]] = field(default_factory=list)

    def detail(self) -> str:
        return "; ".join(f"{name}: {change}" for name, change in self.changes)


@dataclass
class StackPlan:
    stack: str
    services: list[ServicePlan]

    @property
    def changed(self) -> bool:
        return any(plan.state in (NEW, CHANGED) for plan in self.services)


# --- The stack file's side -------------------------------------------------


def desired_mount(volume: dict, document: dict, stack: str) -> str:
    kind = volume.get("type", "volume")
    if kind == "tmpfs":
        return f"tmpfs size={(volume.get('tmpfs') or {}).get('size', 0)}"
    read_only = " read-only" if volume.get("read_only") else ""
    if kind == "bind":
        return f"bind {unescape(volume['source'])}{read_only}"
    declared = (document.get("volumes") or {}).get(volume["source"]) or {}
    if declared.get("external"):
        return f"volume {declared.get('name', volume['source'])}{read_only}"
    options = {
        key: unescape(str(value))
        for key, value in (declared.get("driver_opts") or {}).items()
    }
    driver = declared.get("driver", "local")
    return f"volume {stack}_{volume['source']} {describe_driver(driver, options)}{read_only}"


def describe_driver(driver: str, options: dict[str, str]) -> str:
    listed = ",".join(f"{key}={options[key]}" for key in sorted(options))
    return f"({driver}: {listed})" if listed else f"({driver})"


def desired_ports(service: dict) -> list[str]:
    return sorted(
        describe_port(
            port.get("published"),
            port["target"],
            port.get("protocol", "tcp"),
            port.get("mode", "ingress"),
        )
        for port in service.get("ports") or []
    )


def describe_port(published, target, protocol: str, mode: str) -> str:
    return f"{published}->{target}/{protocol} ({mode})"


def desired_fields(service: dict, document: dict, stack: str) -> dict:
    """Return the comparable fields of one service of the rendered stack file."""
    deploy = service.get("deploy") or {}
    command = service.get("command") or []
    return {
        "image": unescape(service["image"]),
        "command": shlex.split(command) if isinstance(command, str) else command,
        "user": service.get("user", ""),
        "environment": {
            key: unescape(str(value))
            for key, value in (service.get("environment") or {}).items()
        },
        "secrets": sorted(
            secret["source"] if isinstance(secret, dict) else secret
            for secret in service.get("secrets") or []
        ),
        "mounts": {
            volume["target"]: desired_mount(volume, document, stack)
            for volume in service.get("volumes") or []
        },
        "replicas": deploy.get("replicas", 1),
        "ports": desired_ports(service),
        "placement": sorted((deploy.get("placement") or {}).get("constraints") or []),
        OTHER_SETTINGS: (deploy.get("labels") or {}).get(SPEC_HASH_LABEL),
    }


# --- The running service's side -----------------------------------------------


def running_mount(mount: dict) -> str:
    kind = mount.get("Type")
    read_only = " read-only" if mount.get("ReadOnly") else ""
    if kind == "tmpfs":
        return f"tmpfs size={(mount.get('TmpfsOptions') or {}).get('SizeBytes', 0)}"
    if kind == "bind":
        return f"bind {mount.get('Source')}{read_only}"
    driver = (mount.get("VolumeOptions") or {}).get("DriverConfig") or {}
    if not driver:
        return f"volume {mount.get('Source')}{read_only}"
    description = describe_driver(
        driver.get("Name", "local"), driver.get("Options") or {}
    )
    return f"volume {mount.get('Source')} {description}{read_only}"


def strip_digest(image: str) -> str:
    """Return `name:tag` for `name:tag@sha256:...`, as the CLI pins a resolved image."""
    return image.split("@", 1)[0]


def running_fields(service: dict) -> dict:
    """Return the comparable fields of `docker service inspect` of one service."""
    spec = service["Spec"]
    task = spec.get("TaskTemplate") or {}
    container = task.get("ContainerSpec") or {}
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return {
        "image": strip_digest(container.get("Image", "")),
        "command": container.get("Args") or [],
        "user": container.get("User", ""),
        "environment": dict(
            item.split("=", 1) if "=" in item else (item, "")
            for item in container.get("Env") or []
        ),
        "secrets": sorted(
            secret["SecretName"] for secret in container.get("Secrets") or []
        ),
        "mounts": {
            mount["Target"]: running_mount(mount)
            for mount in container.get("Mounts") or []
        },
        "replicas": ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas"),
        "ports": sorted(
            describe_port(
                port.get("PublishedPort"),
                port.get("TargetPort"),
                port.get("Protocol", "tcp"),
                port.get("PublishMode", "ingress"),
            )
            for port in ports
        ),
        "placement": sorted((task.get("Placement") or {}).get("Constraints") or []),
        OTHER_SETTINGS: (spec.get("Labels") or {}).get(SPEC_HASH_LABEL),
    }


# --- The difference ---------------------------------------------------------


def describe_mapping_change(old: dict, new: dict) -> str:
    parts = [f"+{key}={new[key]}" for key in sorted(new.keys() - old.keys())]
    parts += [f"-{key}" for key in sorted(old.keys() - new.keys())]
    parts += [
        f"{key}: {old[key]} -> {new[key]}"
        for key in sorted(old.keys() & new.keys())
        if old[key] != new[key]
    ]
    return ", ".join(parts)


def describe_list_change(old: list, new: list) -> str:
    parts = [f"+{item}" for item in new if item not in old]
    parts += [f"-{item}" for item in old if item not in new]
    return ", ".join(parts) or f"order {old} -> {new}"


def describe_change(old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        return describe_mapping_change(old, new)
    if isinstance(old, list) and isinstance(new, list):
        return describe_list_change(old, new)
    return f"{old} -> {new}"


def diff_service(desired: dict, running: dict) -> list[tuple[str, str]]:
    """Return (field, change) for each field that differs; the spec hash only when alone."""
    changes = [
        (name, describe_change(running[name], desired[name]))
        for name in FIELDS
        if desired[name] != running[name]
    ]
    if not changes and desired[OTHER_SETTINGS] != running[OTHER_SETTINGS]:
        changes.append(
            (
                OTHER_SETTINGS,
                "changed (health check, restart, update or rollback policy, ...)",
            )
        )
    return changes


def plan_stack(document: dict, stack: str, running: list[dict]) -> StackPlan:
    """Compare each service of the stack file with the running one of the same name."""
    by_name = {
        short_name(service["Spec"]["Name"], stack): service for service in running
    }
    plans = []
    for name, service in (document.get("services") or {}).items():
        desired = desired_fields(service, document, stack)
        if name not in by_name:
            plans.append(ServicePlan(name, NEW))
            continue
        changes = diff_service(desired, running_fields(by_name[name]))
        plans.append(ServicePlan(name, CHANGED if changes else UNCHANGED, changes))
    for name in sorted(by_name.keys() - (document.get("services") or {}).keys()):
        plans.append(ServicePlan(name, NOT_IN_FILE))
    return StackPlan(stack, plans)
