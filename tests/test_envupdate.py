"""Rewriting an env file in place: values, mode and symbolic links kept."""

from authops.envfile import parse_text
from authops.envupdate import update_env_file


def test_update_changes_only_given_key(make_env):
    path = make_env("prod")
    changed = update_env_file(path, "prod", {"SMTP_TIMEOUT": "30"})
    values = parse_text(path.read_text()).values()
    assert changed == ["SMTP_TIMEOUT"]
    assert values["SMTP_TIMEOUT"] == "30"
    assert path.stat().st_mode & 0o777 == 0o600


def test_update_keeps_symbolic_link(make_env, tmp_path):
    real = make_env("prod")
    link_dir = tmp_path / "linked"
    link_dir.mkdir()
    link = link_dir / "prod.env"
    link.symlink_to(real)
    update_env_file(link, "prod", {"SMTP_TIMEOUT": "30"})
    assert link.is_symlink()
    assert parse_text(real.read_text()).values()["SMTP_TIMEOUT"] == "30"


def test_dry_run_writes_nothing(make_env):
    path = make_env("prod")
    before = path.read_bytes()
    changed = update_env_file(path, "prod", {"SMTP_TIMEOUT": "30"}, dry_run=True)
    assert changed == ["SMTP_TIMEOUT"]
    assert path.read_bytes() == before
