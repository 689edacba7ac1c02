"""stack.deploy on the local single-node swarm, with the stand-in image.

The tests run in file order and share one stack: each starts from the state
the previous one left, as an operator's deploys follow each other.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from authops import stackdeploy, stacklock
from authops.errors import OpsError
from authops.localsvc import docker, ensure_dockerd
from authops.settings import load_settings
from authops.stack import deploy, service_health
from authops.stacksecrets import secret_versions
from authops.standin import ensure_standin_image
from tests.support.stacklab import (
    DB_PASSWORD,
    SMTP_USERNAME,
    StackLab,
    audit_lines,
    free_port,
    http_status,
    inspect_service,
    make_nfs_folders,
    new_stack_name,
    remove_lock,
    remove_stack,
    running_containers,
    stack_secrets,
    start_database,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

TIMEOUT = 150  # seconds for one deploy to converge


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A deployable stack: database, folders, ports and env files of its own."""
    if os.geteuid() != 0:
        pytest.skip("dockerd and PostgreSQL as the postgres user need root")
    ensure_dockerd()
    ensure_standin_image()
    base = tmp_path_factory.mktemp("stack")
    env_dir = base / "env"
    env_dir.mkdir()
    # pytest's own folder is private to root, and PostgreSQL runs as postgres.
    database_dir = Path(tempfile.mkdtemp(prefix="authops-stack-db-"))
    database_dir.chmod(0o755)
    cluster = start_database(database_dir / "postgres")
    stack = StackLab(
        stack=new_stack_name("authops-test"),
        env_dir=env_dir,
        cluster=cluster,
        nfs_export=make_nfs_folders(base / "nfs"),
        http_port=free_port(),
        https_port=free_port(),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPS_ENV_DIR", str(env_dir))
        patch.delenv("OPS_ENV", raising=False)
        yield stack
    remove_stack(stack.stack)
    remove_lock(stack.stack)
    cluster.stop()
    shutil.rmtree(database_dir, ignore_errors=True)


def settings_for(lab: StackLab, name: str = "good", **changes):
    return load_settings(lab.write_env(name, **changes))


def ready_status(lab: StackLab) -> int | None:
    return http_status(f"https://127.0.0.1:{lab.https_port}/-/health/ready/")


def versions(lab: StackLab) -> dict[str, tuple[int, str]]:
    """Return each service's spec version and update time."""
    result = {}
    for name in ("server", "worker"):
        service = inspect_service(f"{lab.stack}_{name}")
        result[name] = (service["Version"]["Index"], service["UpdatedAt"])
    return result


def service_env(lab: StackLab, name: str) -> dict[str, str]:
    spec = inspect_service(f"{lab.stack}_{name}")["Spec"]
    items = spec["TaskTemplate"]["ContainerSpec"]["Env"]
    return dict(item.split("=", 1) for item in items)


def test_first_deploy_converges(lab, capsys):
    assert deploy(settings_for(lab), TIMEOUT, False)
    out = capsys.readouterr().out
    assert f"[{lab.stack}_server] new" in out
    assert "converged" in out
    assert audit_lines(lab.stack)[-1].endswith("result=ok")


def test_services_healthy_after_deploy(lab):
    health = {service.name: service for service in service_health(settings_for(lab))}
    for name in (f"{lab.stack}_server", f"{lab.stack}_worker"):
        assert health[name].running == 1
        assert health[name].healthy


def test_ready_on_published_https_port(lab):
    assert ready_status(lab) == 200


def test_live_on_published_http_port(lab):
    assert http_status(f"http://127.0.0.1:{lab.http_port}/-/health/live/") == 200


def test_second_deploy_changes_nothing(lab, capsys):
    before = versions(lab)
    assert deploy(settings_for(lab), TIMEOUT, False)
    out = capsys.readouterr().out
    assert versions(lab) == before
    assert f"[{lab.stack}] unchanged" in out
    assert "deploying" not in out
    assert audit_lines(lab.stack)[-1].endswith("result=unchanged")


def test_unchanged_deploy_waits_for_restart(lab, capsys):
    """A killed task makes an unchanged deploy wait until Swarm runs it again."""
    before = versions(lab)
    docker("kill", *running_containers(f"{lab.stack}_server"))
    assert deploy(settings_for(lab), TIMEOUT, False)
    out = capsys.readouterr().out
    assert "not every task runs" in out
    assert f"[{lab.stack}] unchanged" in out
    assert versions(lab) == before
    health = {service.name: service for service in service_health(settings_for(lab))}
    assert health[f"{lab.stack}_server"].healthy


def test_dollar_reaches_service_once(lab):
    assert service_env(lab, "server")["AUTHENTIK_EMAIL__USERNAME"] == SMTP_USERNAME


def test_dollar_reaches_container_once(lab):
    container = running_containers(f"{lab.stack}_worker")[0]
    result = docker("exec", container, "printenv", "AUTHENTIK_EMAIL__USERNAME")
    assert result.stdout.strip() == SMTP_USERNAME


def test_secrets_absent_from_service_inspect(lab):
    settings = settings_for(lab)
    for name in ("server", "worker"):
        text = docker("service", "inspect", f"{lab.stack}_{name}").stdout
        for value in settings.secrets().values():
            assert value not in text


def test_secrets_absent_from_container_inspect(lab):
    settings = settings_for(lab)
    for name in ("server", "worker"):
        container = running_containers(f"{lab.stack}_{name}")[0]
        text = docker("inspect", container).stdout
        for value in settings.secrets().values():
            assert value not in text


def test_secrets_are_mounted_files(lab):
    container = running_containers(f"{lab.stack}_server")[0]
    path = service_env(lab, "server")["AUTHENTIK_POSTGRESQL__PASSWORD"]
    assert path.startswith("file:///run/secrets/")
    result = docker("exec", container, "cat", path[len("file://") :])
    assert result.stdout.strip() == DB_PASSWORD


def test_concurrent_deploy_names_holder(lab):
    record = json.dumps(
        {
            "who": "alice@admin1",
            "since": "2026-01-01T00:00:00Z",
            "pid": 4242,
            "action": "deploy",
        }
    )
    host = stackdeploy.find_manager(settings_for(lab))
    assert stacklock.try_acquire(host, stacklock.lock_path(lab.stack), record)
    try:
        with pytest.raises(OpsError, match="alice@admin1") as caught:
            deploy(settings_for(lab), TIMEOUT, False)
        assert "--break-lock" in str(caught.value)
        with pytest.raises(OpsError, match="older than"):
            deploy(settings_for(lab), TIMEOUT, False, break_lock=True)
    finally:
        remove_lock(lab.stack)


def test_changed_setting_rolls_out(lab, capsys):
    assert deploy(settings_for(lab, SMTP_TIMEOUT="20"), TIMEOUT, False)
    out = capsys.readouterr().out
    assert "AUTHENTIK_EMAIL__TIMEOUT: 10 -> 20" in out
    assert service_env(lab, "worker")["AUTHENTIK_EMAIL__TIMEOUT"] == "20"
    assert (
        inspect_service(f"{lab.stack}_server")["UpdateStatus"]["State"] == "completed"
    )
    assert ready_status(lab) == 200


def test_broken_image_fails_and_keeps_serving(lab, capsys):
    settings = settings_for(
        lab, "broken", SMTP_TIMEOUT="20", AUTHENTIK_TAG="2025.10.99"
    )
    assert not deploy(settings, TIMEOUT, False)
    out = capsys.readouterr().out
    assert f"[{lab.stack}_server] failed" in out
    assert "No such image" in out
    assert "rolled back" in out
    assert ready_status(lab) == 200
    image = inspect_service(f"{lab.stack}_server")["Spec"]["TaskTemplate"][
        "ContainerSpec"
    ]["Image"]
    assert image.endswith(":2025.10.3")
    assert "result=failed" in audit_lines(lab.stack)[-1]


def test_wrong_password_stopped_by_preflight(lab):
    before = versions(lab)
    settings = settings_for(
        lab,
        "badpassword",
        SMTP_TIMEOUT="20",
        AUTHENTIK_POSTGRESQL__PASSWORD="wrong-password-123456",
    )
    with pytest.raises(OpsError, match="pre-flight"):
        deploy(settings, TIMEOUT, False)
    assert versions(lab) == before


def test_wrong_password_rolls_back(lab, capsys, monkeypatch):
    # The pre-flight check would stop this deploy; skip it to see Swarm's side.
    monkeypatch.setattr(stackdeploy, "preflight", lambda settings, host: None)
    settings = settings_for(
        lab,
        "badpassword",
        SMTP_TIMEOUT="20",
        AUTHENTIK_POSTGRESQL__PASSWORD="wrong-password-123456",
    )
    assert not deploy(settings, TIMEOUT, False)
    out = capsys.readouterr().out
    assert f"[{lab.stack}_server] failed" in out
    assert "password authentication failed" in out
    assert ready_status(lab) == 200
    assert service_env(lab, "server")["AUTHENTIK_EMAIL__TIMEOUT"] == "20"


def test_unused_secret_versions_removed(lab):
    wrong = settings_for(
        lab, "badpassword", AUTHENTIK_POSTGRESQL__PASSWORD="wrong-password-123456"
    )

    wrong_name = secret_versions(wrong)["db_password"].name
    assert wrong_name in stack_secrets(lab.stack)
    assert deploy(settings_for(lab, SMTP_TIMEOUT="30"), TIMEOUT, False)
    assert wrong_name not in stack_secrets(lab.stack)
    good = secret_versions(settings_for(lab))["db_password"].name
    assert good in stack_secrets(lab.stack)


def test_dry_run_creates_nothing(lab, capsys):
    before = versions(lab)
    secrets_before = stack_secrets(lab.stack)
    settings = settings_for(
        lab, "dry", SMTP_TIMEOUT="40", AUTHENTIK_SECRET_KEY="x" * 60
    )
    assert deploy(settings, TIMEOUT, True)
    out = capsys.readouterr().out
    assert "would create secret" in out
    assert "AUTHENTIK_EMAIL__TIMEOUT: 30 -> 40" in out
    assert versions(lab) == before
    assert stack_secrets(lab.stack) == secrets_before


def test_rollback_returns_previous_spec(lab):
    assert stackdeploy.rollback(settings_for(lab), TIMEOUT)
    assert service_env(lab, "server")["AUTHENTIK_EMAIL__TIMEOUT"] == "20"
    assert (
        inspect_service(f"{lab.stack}_server")["UpdateStatus"]["State"]
        == "rollback_completed"
    )
    assert ready_status(lab) == 200


def test_rollback_twice_changes_nothing(lab, capsys):
    before = versions(lab)
    assert stackdeploy.rollback(settings_for(lab), TIMEOUT)
    assert versions(lab) == before
    assert "already rolled back" in capsys.readouterr().out


def test_fresh_service_failure_named(lab, capsys):
    stack = new_stack_name("authops-fresh")
    settings = settings_for(
        lab,
        "fresh",
        STACK_NAME=stack,
        AUTHENTIK_TAG="2025.10.99",
        HTTP_PORT=str(free_port()),
        HTTPS_PORT=str(free_port()),
    )
    try:
        assert not deploy(settings, TIMEOUT, False)
    finally:
        remove_stack(stack)
        remove_lock(stack)
    out = capsys.readouterr().out
    assert "no previous version" in out
    assert "No such image" in out


def test_remove_deletes_services_and_secrets(lab):
    stackdeploy.remove(settings_for(lab))
    assert service_health(settings_for(lab)) == []
    assert stack_secrets(lab.stack) == set()
