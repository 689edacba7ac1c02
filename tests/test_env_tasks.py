"""env.init and env.example: generated files, modes and second runs."""

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from authops.envfile import parse_text

REPO = Path(__file__).resolve().parent.parent


def run_invoke(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    import os

    environment = {**os.environ, "OPS_ENV_DIR": str(env_dir)}
    environment.pop("OPS_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_output_passes_check(env_dir):
    created = run_invoke("env.init", "--env", "prod", env_dir=env_dir)
    assert created.returncode == 0, created.stderr
    checked = run_invoke("env.check", "--env", "prod", env_dir=env_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_init_file_private_with_fresh_secrets(env_dir):
    run_invoke("env.init", "--env", "prod", env_dir=env_dir)
    path = env_dir / "prod.env"
    values = parse_text(path.read_text()).values()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(values["AUTHENTIK_SECRET_KEY"]) >= 50
    assert values["AUTHENTIK_POSTGRESQL__PASSWORD"] != "CHANGE_ME"


def test_init_secrets_differ_between_runs(env_dir):
    run_invoke("env.init", "--env", "one", env_dir=env_dir)
    run_invoke("env.init", "--env", "two", env_dir=env_dir)
    one = parse_text((env_dir / "one.env").read_text()).values()
    two = parse_text((env_dir / "two.env").read_text()).values()
    assert one["AUTHENTIK_SECRET_KEY"] != two["AUTHENTIK_SECRET_KEY"]


def test_init_prints_no_secret(env_dir):
    result = run_invoke("env.init", "--env", "prod", env_dir=env_dir)
    values = parse_text((env_dir / "prod.env").read_text()).values()
    assert values["AUTHENTIK_SECRET_KEY"] not in result.stdout + result.stderr


def test_init_refuses_overwrite(env_dir):
    run_invoke("env.init", "--env", "prod", env_dir=env_dir)
    before = (env_dir / "prod.env").read_bytes()
    again = run_invoke("env.init", "--env", "prod", env_dir=env_dir)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert (env_dir / "prod.env").read_bytes() == before


def test_init_dry_run_writes_nothing(env_dir):
    result = run_invoke("env.init", "--env", "prod", "--dry-run", env_dir=env_dir)
    assert result.returncode == 0
    assert "would change" in result.stdout
    assert not (env_dir / "prod.env").exists()


def test_example_replaces_every_secret(make_env, env_dir):
    make_env("prod", SMTP_PASSWORD="smtp-s3cret-value")
    result = run_invoke("env.example", "--env", "prod", env_dir=env_dir)
    assert result.returncode == 0, result.stderr
    example = (env_dir / "prod.example.env").read_text()
    values = parse_text(example).values()
    assert values["AUTHENTIK_SECRET_KEY"] == "CHANGE_ME"
    assert values["AUTHENTIK_POSTGRESQL__PASSWORD"] == "CHANGE_ME"
    assert values["SMTP_PASSWORD"] == "CHANGE_ME"
    assert "smtp-s3cret-value" not in example
    assert values["SSO_DOMAIN"] == "sso.lab.test"


def test_example_second_run_unchanged(make_env, env_dir):
    make_env("prod")
    run_invoke("env.example", "--env", "prod", env_dir=env_dir)
    again = run_invoke("env.example", "--env", "prod", env_dir=env_dir)
    assert "unchanged" in again.stdout


@pytest.mark.parametrize(
    "line_start",
    ["export SMTP_PASSWORD=", "SMTP_PASSWORD = ", "  SMTP_PASSWORD="],
)
def test_example_replaces_secret_line_forms(make_env, env_dir, line_start):
    path = make_env("prod", SMTP_PASSWORD=None)
    path.write_text(path.read_text() + f"{line_start}smtp-s3cret-value\n")
    result = run_invoke("env.example", "--env", "prod", env_dir=env_dir)
    example = (env_dir / "prod.example.env").read_text()
    assert result.returncode == 0, result.stderr
    assert "smtp-s3cret-value" not in example
    assert parse_text(example).values()["SMTP_PASSWORD"] == "CHANGE_ME"


def test_example_rejects_multiline_secret(make_env, env_dir):
    path = make_env("prod", AUTHENTIK_SECRET_KEY=None)
    secret = "k" * 40 + "\n" + "q" * 40
    path.write_text(path.read_text() + f'AUTHENTIK_SECRET_KEY="{secret}"\n')
    result = run_invoke("env.example", "--env", "prod", env_dir=env_dir)
    assert result.returncode == 1
    assert "AUTHENTIK_SECRET_KEY" in result.stderr
    assert "q" * 40 not in result.stdout + result.stderr
    assert not (env_dir / "prod.example.env").exists()


def test_example_target_directory(make_env, env_dir):
    make_env("prod")
    (env_dir / "prod.example.env").mkdir()
    result = run_invoke("env.example", "--env", "prod", env_dir=env_dir)
    assert result.returncode == 1
    assert "is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_dangling_symlink_kept(env_dir):
    (env_dir / "prod.env").symlink_to(env_dir / "elsewhere.env")
    result = run_invoke("env.init", "--env", "prod", env_dir=env_dir)
    assert result.returncode == 1
    assert "already exists" in result.stderr
    assert not (env_dir / "elsewhere.env").exists()


def test_init_folder_missing(env_dir):
    result = run_invoke("env.init", "--env", "prod", env_dir=env_dir / "missing")
    assert result.returncode == 1
    assert "OPS_ENV_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_directory_named(env_dir):
    (env_dir / "prod.env").mkdir()
    result = run_invoke("env.check", "--env", "prod", env_dir=env_dir)
    assert result.returncode == 1
    assert "is a directory" in result.stderr


def test_gitignore_keeps_real_env_files_out():
    ignored = subprocess.run(
        ["git", "check-ignore", "env/prod.env"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    lab = subprocess.run(
        ["git", "check-ignore", "env/lab.env"], cwd=REPO, capture_output=True, text=True
    )
    example = subprocess.run(
        ["git", "check-ignore", "env/prod.example.env"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ignored.returncode == 0
    assert lab.returncode == 1
    assert example.returncode == 1
