"""stack.upgrade on the local single-node swarm, with the stand-in image under new tags.

The tests run in file order on one stack: rejected upgrades first, then a
patch and a major upgrade, then a failed one. Each new tag is the stand-in
image tagged again with `docker tag`; a tag with no image makes a deploy fail.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from authops import stackupgrade
from authops.errors import OpsError
from authops.localsvc import docker, ensure_dockerd
from authops.settings import load_settings
from authops.stack import deploy
from authops.stacklock import lock_path, read_holder
from authops.stackupgrade import image_tag, upgrade_stack
from authops.standin import LOOPBACK_IMAGE, TAG, ensure_standin_image
from authops.swarm import find_manager
from tests.support.haproxylab import run_invoke
from tests.support.stacklab import (
    StackLab,
    free_port,
    http_status,
    inspect_service,
    make_nfs_folders,
    new_stack_name,
    remove_lock,
    remove_stack,
    start_database,
)

TIMEOUT = 150  # seconds for one deploy to converge
ENV = "upgrade"
PATCH_TAG = "2025.10.4"
MAJOR_TAG = "2025.12.1"
SLOW_TAG = "2025.12.2"  # deployed with a timeout shorter than its start-up
MISSING_TAG = "2025.12.9"  # no image has this tag
COMMENT = "# Upgraded with stack.upgrade; keep this comment.\n"


@pytest.mark.parametrize(
    ("reference", "tag"),
    [
        ("ghcr.io/goauthentik/server:2025.10.3", "2025.10.3"),
        ("127.0.0.1:1/authops/authentik-standin:2025.12.1", "2025.12.1"),
        ("registry:5000/server", "latest"),
        ("server:2025.10.3@sha256:" + "a" * 64, "2025.10.3"),
    ],
)
def test_image_tag(reference, tag):
    assert image_tag(reference) == tag


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A deployed stack at TAG, with its own database, ports, env file and backup folder."""
    if os.geteuid() != 0:
        pytest.skip("dockerd and PostgreSQL as the postgres user need root")
    ensure_dockerd()
    ensure_standin_image()
    for tag in (PATCH_TAG, MAJOR_TAG, SLOW_TAG):
        docker("tag", f"{LOOPBACK_IMAGE}:{TAG}", f"{LOOPBACK_IMAGE}:{tag}")

    base = tmp_path_factory.mktemp("upgrade")
    env_dir = base / "env"
    env_dir.mkdir()
    database_dir = Path(tempfile.mkdtemp(prefix="authops-upgrade-db-"))
    database_dir.chmod(0o755)
    cluster = start_database(database_dir / "postgres")
    stack = StackLab(
        stack=new_stack_name("authops-upgrade"),
        env_dir=env_dir,
        cluster=cluster,
        nfs_export=make_nfs_folders(base / "nfs"),
        http_port=free_port(),
        https_port=free_port(),
    )
    stack.backups = base / "backups"

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPS_ENV_DIR", str(env_dir))
        patch.delenv("OPS_ENV", raising=False)
        stack.write_env(ENV, BACKUP_DIR=str(stack.backups))
        path = env_dir / f"{ENV}.env"
        path.write_text(COMMENT + path.read_text())
        assert deploy(load_settings(ENV), TIMEOUT, False)
        yield stack

    remove_stack(stack.stack)
    remove_lock(stack.stack)
    cluster.stop()
    shutil.rmtree(database_dir, ignore_errors=True)
    for tag in (PATCH_TAG, MAJOR_TAG, SLOW_TAG):
        docker("rmi", f"{LOOPBACK_IMAGE}:{tag}", check=False)


def env_path(lab: StackLab) -> Path:
    return lab.env_dir / f"{ENV}.env"


def dumps(lab: StackLab) -> list[Path]:
    return sorted(lab.backups.glob("*.dump")) if lab.backups.is_dir() else []


def service_images(lab: StackLab) -> dict[str, str]:
    return {
        name: inspect_service(f"{lab.stack}_{name}")["Spec"]["TaskTemplate"][
            "ContainerSpec"
        ]["Image"]
        for name in ("server", "worker")
    }


def spec_versions(lab: StackLab) -> dict[str, int]:
    return {
        name: inspect_service(f"{lab.stack}_{name}")["Version"]["Index"]
        for name in ("server", "worker")
    }


def ready_status(lab: StackLab) -> int | None:
    return http_status(f"https://127.0.0.1:{lab.https_port}/-/health/ready/")


@pytest.mark.docker
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("2026.2.1", "skips a major release"),
        ("2025.8.1", "does not support downgrades"),
        ("latest", "not an authentik release tag"),
    ],
)
def test_rejected_before_any_change(lab, tag, reason):
    before = spec_versions(lab)
    text = env_path(lab).read_bytes()
    with pytest.raises(OpsError, match=reason) as caught:
        upgrade_stack(load_settings(ENV), tag, TIMEOUT, dry_run=False)
    assert "Nothing was changed" in str(caught.value)
    assert dumps(lab) == []
    assert spec_versions(lab) == before
    assert env_path(lab).read_bytes() == text


@pytest.mark.docker
def test_dry_run_changes_nothing(lab, capsys):
    before = spec_versions(lab)
    text = env_path(lab).read_bytes()
    upgrade_stack(load_settings(ENV), MAJOR_TAG, TIMEOUT, dry_run=True)
    out = capsys.readouterr().out
    assert "would dump" in out
    assert f"AUTHENTIK_TAG={MAJOR_TAG}" in out
    assert f":{TAG} -> {LOOPBACK_IMAGE}:{MAJOR_TAG}" in out
    assert dumps(lab) == []
    assert spec_versions(lab) == before
    assert env_path(lab).read_bytes() == text


@pytest.mark.docker
def test_backup_runs_under_lock(lab, monkeypatch):
    """The deploy lock is held from the backup on, and released when the upgrade stops."""
    holders = []

    def stopping_back_up(settings):
        host = find_manager(settings)
        try:
            holders.append(read_holder(host, lock_path(settings.stack_name)))
        finally:
            host.close()
        raise OpsError("backup stopped by the test")

    monkeypatch.setattr(stackupgrade, "back_up", stopping_back_up)
    settings = load_settings(ENV)
    with pytest.raises(OpsError, match="stopped by the test"):
        upgrade_stack(settings, PATCH_TAG, TIMEOUT, dry_run=False)
    assert holders[0] is not None
    assert holders[0].action == "upgrade"
    host = find_manager(settings)
    try:
        assert read_holder(host, lock_path(settings.stack_name)) is None
    finally:
        host.close()


@pytest.mark.docker
@pytest.mark.timeout(900)
@pytest.mark.parametrize("tag", [PATCH_TAG, MAJOR_TAG])
def test_upgrade_succeeds(lab, capsys, tag):
    dumps_before = dumps(lab)
    upgrade_stack(load_settings(ENV), tag, TIMEOUT, dry_run=False)
    out = capsys.readouterr().out
    new_dumps = sorted(set(dumps(lab)) - set(dumps_before))
    assert len(new_dumps) == 1
    assert str(new_dumps[0]) in out
    assert "entries listed by pg_restore --list" in out
    for image in service_images(lab).values():
        assert image.split("@")[0] == f"{LOOPBACK_IMAGE}:{tag}"
    assert load_settings(ENV).get("AUTHENTIK_TAG") == tag
    assert f"AUTHENTIK_TAG set to {tag}" in out
    assert ready_status(lab) == 200


@pytest.mark.docker
def test_env_file_keeps_comment_and_mode(lab):
    path = env_path(lab)
    assert path.read_text().startswith(COMMENT)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.docker
def test_same_tag_again_unchanged(lab, capsys):
    before = spec_versions(lab)
    dumps_before = dumps(lab)
    upgrade_stack(load_settings(ENV), MAJOR_TAG, TIMEOUT, dry_run=False)
    out = capsys.readouterr().out
    assert f"unchanged: the services already run {MAJOR_TAG}" in out
    assert dumps(lab) == dumps_before
    assert spec_versions(lab) == before


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_timed_out_upgrade_rolled_back(lab, capsys):
    text = env_path(lab).read_bytes()
    with pytest.raises(Exit) as caught:
        upgrade_stack(load_settings(ENV), SLOW_TAG, 1, dry_run=False)
    out = capsys.readouterr().out
    assert caught.value.code == 1
    assert "timed out after 1 s" in out
    assert "--> rolling back" in out
    assert f"[{lab.stack}] changed: rolled back in" in out
    assert ready_status(lab) == 200
    for image in service_images(lab).values():
        assert image.split("@")[0] == f"{LOOPBACK_IMAGE}:{MAJOR_TAG}"
    assert env_path(lab).read_bytes() == text


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_failed_upgrade_keeps_previous_serving(lab):
    dumps_before = dumps(lab)
    text = env_path(lab).read_bytes()
    result = run_invoke(
        "stack.upgrade",
        "--tag",
        MISSING_TAG,
        "--timeout",
        str(TIMEOUT),
        "--env",
        ENV,
        env_dir=lab.env_dir,
        timeout=600,
    )
    out = result.stdout + result.stderr
    print(out)
    new_dumps = sorted(set(dumps(lab)) - set(dumps_before))
    assert result.returncode == 1
    assert len(new_dumps) == 1
    assert f"invoke db.restore {new_dumps[0]} --env {ENV} --yes" in out
    assert "rolled back" in out
    assert ready_status(lab) == 200
    for image in service_images(lab).values():
        assert image.split("@")[0] == f"{LOOPBACK_IMAGE}:{MAJOR_TAG}"
    assert env_path(lab).read_bytes() == text
