"""The deploy plan: each difference between the stack file and a running service."""

import pytest

from authops.settings import load_settings
from authops.stackfile import render_stack
from authops.stackplan import CHANGED, NEW, NOT_IN_FILE, UNCHANGED, plan_stack
from tests.support.swarmspec import inspect_service

STACK = "authentik"


@pytest.fixture
def document(make_env):
    make_env("test", STACK_OVERRIDE=None)
    return render_stack(load_settings("test")).document


def running(document, name="server"):
    return inspect_service(document, STACK, name)


def container(service):
    return service["Spec"]["TaskTemplate"]["ContainerSpec"]


def set_env(service, key, value):
    env = [item for item in container(service)["Env"] if not item.startswith(f"{key}=")]
    if value is not None:
        env.append(f"{key}={value}")
    container(service)["Env"] = env


def rename_first_secret(service):
    container(service)["Secrets"][0]["SecretName"] = "authentik_secret_key_000000000000"


def change_media_device(service):
    mount = container(service)["Mounts"][0]
    mount["VolumeOptions"]["DriverConfig"]["Options"]["device"] = ":/old/media"


def change_shm_size(service):
    container(service)["Mounts"][3]["TmpfsOptions"]["SizeBytes"] = 67108864


def change_port(service, key, value):
    service["Spec"]["EndpointSpec"]["Ports"][1][key] = value


# Each case changes the running server, then names the field that the plan
# must report and a piece of its detail.
CASES = [
    (
        "image",
        lambda s: container(s).update(Image="ghcr.io/goauthentik/server:2025.10.2"),
        "ghcr.io/goauthentik/server:2025.10.2 -> ",
    ),
    (
        "environment",
        lambda s: set_env(s, "AUTHENTIK_EMAIL__TIMEOUT", "99"),
        "AUTHENTIK_EMAIL__TIMEOUT: 99 -> 10",
    ),
    (
        "environment",
        lambda s: set_env(s, "AUTHENTIK_LOG_LEVEL", "debug"),
        "-AUTHENTIK_LOG_LEVEL",
    ),
    (
        "environment",
        lambda s: set_env(s, "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS", None),
        "+AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS=127.0.0.1/32,172.31.250.0/24",
    ),
    ("secrets", rename_first_secret, "-authentik_secret_key_000000000000"),
    ("mounts", change_media_device, "/media: volume authentik_media"),
    (
        "mounts",
        change_shm_size,
        "/dev/shm: tmpfs size=67108864 -> tmpfs size=536870912",
    ),
    (
        "replicas",
        lambda s: s["Spec"]["Mode"]["Replicated"].update(Replicas=3),
        "3 -> 1",
    ),
    ("ports", lambda s: change_port(s, "PublishedPort", 443), "-443->9443/tcp (host)"),
    (
        "ports",
        lambda s: change_port(s, "PublishMode", "ingress"),
        "+9445->9443/tcp (host)",
    ),
    (
        "placement",
        lambda s: s["Spec"]["TaskTemplate"].update(
            Placement={"Constraints": ["node.role == worker"]}
        ),
        "+node.role == manager, -node.role == worker",
    ),
    ("command", lambda s: container(s).update(Args=["worker"]), "+server, -worker"),
    ("user", lambda s: container(s).update(User="root"), "root -> "),
    (
        "other settings",
        lambda s: s["Spec"]["Labels"].update({"authops.spec-hash": "0" * 16}),
        "health check",
    ),
]


@pytest.mark.parametrize(("field", "change", "detail"), CASES)
def test_plan_reports_field(document, field, change, detail):
    service = running(document)
    change(service)
    plan = plan_stack(document, STACK, [service, running(document, "worker")])
    server = plan.services[0]
    assert server.state == CHANGED
    assert [name for name, _ in server.changes] == [field]
    assert detail in server.changes[0][1]
    assert plan.changed


def test_plan_identical_unchanged(document):
    plan = plan_stack(document, STACK, [running(document), running(document, "worker")])
    assert [service.state for service in plan.services] == [UNCHANGED, UNCHANGED]
    assert not plan.changed


def test_plan_ignores_resolved_digest(document):
    service = running(document)
    container(service)["Image"] += "@sha256:" + "a" * 64
    plan = plan_stack(document, STACK, [service, running(document, "worker")])
    assert plan.services[0].state == UNCHANGED


def test_plan_secret_value_hidden(document, make_env):
    make_env(
        "test",
        STACK_OVERRIDE=None,
        AUTHENTIK_POSTGRESQL__PASSWORD="new-pa$$word-987654",
    )
    changed = render_stack(load_settings("test")).document
    plan = plan_stack(changed, STACK, [running(document), running(document, "worker")])
    detail = plan.services[0].detail()
    assert "new-pa$$word-987654" not in detail
    assert "secrets: +authentik_db_password_" in detail


def test_plan_new_service(document):
    plan = plan_stack(document, STACK, [running(document)])
    assert [(s.name, s.state) for s in plan.services] == [
        ("server", UNCHANGED),
        ("worker", NEW),
    ]
    assert plan.changed


def test_plan_nothing_running_all_new(document):
    plan = plan_stack(document, STACK, [])
    assert [service.state for service in plan.services] == [NEW, NEW]


def test_plan_extra_service_kept(document):
    extra = running(document)
    extra["Spec"]["Name"] = f"{STACK}_outpost"
    services = [running(document), running(document, "worker"), extra]
    plan = plan_stack(document, STACK, services)
    assert plan.services[-1].name == "outpost"
    assert plan.services[-1].state == NOT_IN_FILE
    assert not plan.changed
