"""nfs.prepare on `local` and over SSH: owner, mode, second run, dry run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_invoke(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OPS_ENV_DIR": str(env_dir)}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(params=["local", "ssh"])
def nfs_env(request, make_env, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    if request.param == "local":
        make_env("nfs", NFS_SERVER="local", NFS_EXPORT=str(export))
    else:
        sshd = request.getfixturevalue("sshd")
        ssh = sshd.env_values()
        make_env(
            "nfs",
            NFS_SERVER="127.0.0.1",
            NFS_SSH_HOST=sshd.spec(),
            NFS_EXPORT=str(export),
            SSH_KEY=ssh["SSH_KEY"],
            SSH_KNOWN_HOSTS=ssh["SSH_KNOWN_HOSTS"],
        )
    return export


def test_prepare_creates_owned_directories(nfs_env, env_dir):
    result = run_invoke("nfs.prepare", "--env", "nfs", env_dir=env_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("media", "templates", "certs"):
        info = (nfs_env / name).stat()
        assert (info.st_uid, info.st_gid) == (1000, 1000)
        assert oct(info.st_mode & 0o777) == "0o755"
    assert result.stdout.count("] changed") == 3


def test_prepare_second_run_unchanged(nfs_env, env_dir):
    run_invoke("nfs.prepare", "--env", "nfs", env_dir=env_dir)
    again = run_invoke("nfs.prepare", "--env", "nfs", env_dir=env_dir)
    assert again.returncode == 0
    assert again.stdout.count("] unchanged") == 3


def test_prepare_dry_run_creates_nothing(nfs_env, env_dir):
    result = run_invoke("nfs.prepare", "--env", "nfs", "--dry-run", env_dir=env_dir)
    assert result.returncode == 0
    assert result.stdout.count("] would change") == 3
    assert list(nfs_env.iterdir()) == []


def test_prepare_fixes_wrong_owner(nfs_env, env_dir):
    (nfs_env / "media").mkdir()
    result = run_invoke("nfs.prepare", "--env", "nfs", env_dir=env_dir)
    assert result.returncode == 0
    assert (nfs_env / "media").stat().st_uid == 1000
