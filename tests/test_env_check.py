"""env.check: one table case per rule, each message naming the key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from authops.envfile import parse_text
from authops.validate import ERROR, WARNING, validate_env
from tests.support.envfiles import lab_values, render_env

REPO = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]


def problems_for(changes: dict[str, str | None], *, text_suffix: str = ""):
    values = lab_values()
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return validate_env(parse_text(render_env(values) + text_suffix))


CASES = [
    # (case id, changes, key named in the message, text expected in the message)
    ("missing", {"SSO_DOMAIN": None}, "SSO_DOMAIN", "is missing"),
    (
        "empty",
        {"AUTHENTIK_POSTGRESQL__HOST": ""},
        "AUTHENTIK_POSTGRESQL__HOST",
        "is empty",
    ),
    (
        "guide placeholder",
        {"AUTHENTIK_SECRET_KEY": "your_long_random_secret_key_here"},
        "AUTHENTIK_SECRET_KEY",
        "placeholder",
    ),
    (
        "example placeholder",
        {"AUTHENTIK_POSTGRESQL__PASSWORD": "CHANGE_ME"},
        "AUTHENTIK_POSTGRESQL__PASSWORD",
        "placeholder",
    ),
    (
        "angle placeholder",
        {"SMTP_USERNAME": "<smtp-username>"},
        "SMTP_USERNAME",
        "placeholder",
    ),
    (
        "short secret key",
        {"AUTHENTIK_SECRET_KEY": "a" * 49},
        "AUTHENTIK_SECRET_KEY",
        "shorter than 50",
    ),
    (
        "tls and ssl",
        {"SMTP_USE_TLS": "true", "SMTP_USE_SSL": "true"},
        "SMTP_USE_TLS",
        "both true",
    ),
    (
        "587 without tls",
        {"SMTP_PORT": "587", "SMTP_USE_TLS": "false"},
        "SMTP_USE_TLS",
        "port 587",
    ),
    (
        "465 without ssl",
        {"SMTP_PORT": "465", "SMTP_USE_TLS": "false", "SMTP_USE_SSL": "false"},
        "SMTP_USE_SSL",
        "port 465",
    ),
    (
        "465 with tls",
        {"SMTP_PORT": "465", "SMTP_USE_TLS": "true", "SMTP_USE_SSL": "false"},
        "SMTP_USE_SSL",
        "port 465",
    ),
    ("port text", {"SMTP_PORT": "abc"}, "SMTP_PORT", "not a port"),
    (
        "port zero",
        {"AUTHENTIK_POSTGRESQL__PORT": "0"},
        "AUTHENTIK_POSTGRESQL__PORT",
        "not a port",
    ),
    ("port too big", {"HTTPS_PORT": "70000"}, "HTTPS_PORT", "not a port"),
    ("timeout negative", {"SMTP_TIMEOUT": "-1"}, "SMTP_TIMEOUT", "positive"),
    ("timeout zero", {"SMTP_TIMEOUT": "0"}, "SMTP_TIMEOUT", "positive"),
    ("timeout fraction", {"SMTP_TIMEOUT": "2.5"}, "SMTP_TIMEOUT", "positive"),
    ("replicas zero", {"SERVER_REPLICAS": "0"}, "SERVER_REPLICAS", "positive"),
    ("sender no at", {"SMTP_FROM": "authentik"}, "SMTP_FROM", "not an email"),
    (
        "sender display name",
        {"SMTP_FROM": "SSO <sso@example.com>"},
        "SMTP_FROM",
        "not an email",
    ),
    ("tag missing", {"AUTHENTIK_TAG": None}, "AUTHENTIK_TAG", "is missing"),
    ("tag latest", {"AUTHENTIK_TAG": "latest"}, "AUTHENTIK_TAG", "latest"),
    ("tag before redis-free", {"AUTHENTIK_TAG": "2025.8.4"}, "AUTHENTIK_TAG", "Redis"),
    ("tag old year", {"AUTHENTIK_TAG": "2024.12.3"}, "AUTHENTIK_TAG", "Redis"),
    (
        "tag garbage",
        {"AUTHENTIK_TAG": "v2025-10"},
        "AUTHENTIK_TAG",
        "not an authentik release",
    ),
    (
        "image with tag",
        {"AUTHENTIK_IMAGE": "ghcr.io/goauthentik/server:2025.10.3"},
        "AUTHENTIK_IMAGE",
        "without tag",
    ),
    ("bool word", {"SMTP_USE_TLS": "yes"}, "SMTP_USE_TLS", "not a boolean"),
    (
        "host list bad",
        {"SWARM_MANAGERS": "local,bad host"},
        "SWARM_MANAGERS",
        "not a host",
    ),
    ("host list empty items", {"HAPROXY_HOSTS": ","}, "HAPROXY_HOSTS", "no host"),
    ("node without address", {"SWARM_NODES": "worker1"}, "SWARM_NODES", "NAME=ADDRESS"),
    ("node twice", {"SWARM_NODES": "a=127.0.0.1,a=127.0.0.2"}, "SWARM_NODES", "twice"),
    (
        "hostile db name",
        {"AUTHENTIK_POSTGRESQL__NAME": 'a"; DROP DATABASE x; --'},
        "AUTHENTIK_POSTGRESQL__NAME",
        "identifier",
    ),
    (
        "hostile role",
        {"AUTHENTIK_POSTGRESQL__USER": "Robert'); --"},
        "AUTHENTIK_POSTGRESQL__USER",
        "identifier",
    ),
    (
        "sslmode",
        {"AUTHENTIK_POSTGRESQL__SSLMODE": "on"},
        "AUTHENTIK_POSTGRESQL__SSLMODE",
        "not valid",
    ),
    ("publish mode", {"PUBLISH_MODE": "mesh"}, "PUBLISH_MODE", "not valid"),
    ("placement", {"PLACEMENT": "workers"}, "PLACEMENT", "placement constraint"),
    ("relative path", {"NFS_EXPORT": "export/authentik"}, "NFS_EXPORT", "absolute"),
    ("domain", {"SSO_DOMAIN": "sso_example!"}, "SSO_DOMAIN", "host name"),
    (
        "same ports",
        {"HTTP_PORT": "9445", "HTTPS_PORT": "9445"},
        "HTTPS_PORT",
        "equals HTTP_PORT",
    ),
    (
        "smtp user without password",
        {"SMTP_PASSWORD": ""},
        "SMTP_PASSWORD",
        "is empty while SMTP_USERNAME",
    ),
    (
        "override missing",
        {"STACK_OVERRIDE": "stack/none.yml"},
        "STACK_OVERRIDE",
        "not found",
    ),
    (
        "quoted trailing space",
        {"AUTHENTIK_POSTGRESQL__PASSWORD": '"pa$word-0123456789 "'},
        "AUTHENTIK_POSTGRESQL__PASSWORD",
        "white space",
    ),
]


@pytest.mark.parametrize(
    ("changes", "key", "text"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rule_names_key(changes, key, text):
    errors = [problem for problem in problems_for(changes) if problem.severity == ERROR]
    matching = [problem for problem in errors if problem.key == key]
    assert matching, f"no error for {key}; got {[str(p) for p in errors]}"
    assert key in str(matching[0])
    assert text in str(matching[0])


def test_lab_env_is_valid():
    assert [str(p) for p in problems_for({}) if p.severity == ERROR] == []


def test_bad_line_named_by_number():
    problems = problems_for({}, text_suffix="this line has no equals sign\n")
    bad = [p for p in problems if "not KEY=VALUE" in p.message]
    assert len(bad) == 1
    assert bad[0].line == len(lab_values()) + 1


@pytest.mark.parametrize(
    "line",
    [
        'AUTHENTIK_POSTGRESQL__PASSWORD="pw-5ecret-value\n',
        "export SMTP_PASSWORD='pw-5ecret-value\n",
        "SMTP_FROM='a@example.com\nSMTP_PASSWORD=pw-5ecret-value\n",
    ],
)
def test_bad_line_hides_secret(line):
    problems = problems_for({}, text_suffix=line)
    bad = [str(p) for p in problems if "not KEY=VALUE" in p.message]
    assert len(bad) == 1
    assert "5ecret" not in bad[0]


def test_windows_line_endings():
    text = render_env(lab_values()).replace("\n", "\r\n")
    problems = validate_env(parse_text(text))
    assert any("Windows line endings" in str(p) for p in problems)


def test_windows_line_endings_do_not_leak_into_values():
    text = render_env(lab_values()).replace("\n", "\r\n")
    assert parse_text(text).values()["SSO_DOMAIN"] == "sso.lab.test"


def test_key_set_twice_names_both_lines():
    problems = problems_for({}, text_suffix="SSO_DOMAIN=other.lab.test\n")
    twice = [p for p in problems if p.key == "SSO_DOMAIN" and "twice" in p.message]
    assert len(twice) == 1
    assert "lines 2 and" in twice[0].message


def test_unknown_key_suggests_known_one():
    problems = problems_for({"AUTHENTIK_POSTGRESQL_HOST": "db"})
    unknown = [p for p in problems if p.key == "AUTHENTIK_POSTGRESQL_HOST"]
    assert unknown[0].severity == WARNING
    assert "AUTHENTIK_POSTGRESQL__HOST" in unknown[0].message


def test_unknown_key_lower_case_suggested():
    problems = problems_for({"smtp_host": "smtp.example.com"})
    unknown = [p for p in problems if p.key == "smtp_host"]
    assert "SMTP_HOST" in unknown[0].message


def test_dollar_kept_literally():
    values = parse_text("AUTHENTIK_POSTGRESQL__PASSWORD=a$b${HOME}$$c\n").values()
    assert values["AUTHENTIK_POSTGRESQL__PASSWORD"] == "a$b${HOME}$$c"


def run_invoke(
    *args: str, env_dir: Path, **extra_env: str
) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "OPS_ENV"}
    environment.update(OPS_ENV_DIR=str(env_dir), **extra_env)
    return subprocess.run(
        [*INVOKE, *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_reports_every_problem_without_traceback(make_env, env_dir):
    make_env("broken", SSO_DOMAIN=None, SMTP_PORT="abc", AUTHENTIK_TAG="latest")
    result = run_invoke("env.check", "--env", "broken", env_dir=env_dir)
    assert result.returncode == 1
    assert "SSO_DOMAIN" in result.stdout
    assert "SMTP_PORT" in result.stdout
    assert "AUTHENTIK_TAG" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_group_readable_file_rejected(make_env, env_dir):
    make_env("prod").chmod(0o640)
    result = run_invoke("env.check", "--env", "prod", env_dir=env_dir)
    assert result.returncode == 1
    assert "chmod 600" in result.stdout


def test_cli_lab_may_be_group_readable(make_env, env_dir):
    make_env("lab").chmod(0o644)
    result = run_invoke("env.check", "--env", "lab", env_dir=env_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_missing_env_file_says_how_to_create(env_dir):
    result = run_invoke("env.check", "--env", "nowhere", env_dir=env_dir)
    assert result.returncode == 1
    assert "env.init --env nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_invalid_env_name(env_dir):
    result = run_invoke("env.check", "--env", "../etc/passwd", env_dir=env_dir)
    assert result.returncode == 1
    assert "invalid env name" in result.stderr


def test_cli_default_from_ops_env(make_env, env_dir):
    make_env("staging")
    result = run_invoke("env.check", env_dir=env_dir, OPS_ENV="staging")
    assert result.returncode == 0
    assert "staging.env" in result.stdout


def test_example_domain_warned():
    problems = problems_for({"SSO_DOMAIN": "sso.example.com"})
    warned = [p for p in problems if p.key == "SSO_DOMAIN"]
    assert warned[0].severity == WARNING
    assert "example domain" in warned[0].message
