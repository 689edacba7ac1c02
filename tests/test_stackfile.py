"""The rendered stack file: values, mounts, ports, secrets and the override merge."""

import pytest
import yaml

from authops.errors import OpsError
from authops.settings import load_settings
from authops.stackfile import (
    deep_merge,
    render_stack,
    server_update_order,
    stack_problems,
    unescape,
)

SOCKET = "/var/run/docker.sock"


def render(make_env, **changes):
    """Render the lab's stack file with some env keys changed, without the lab override."""
    changes.setdefault("STACK_OVERRIDE", None)
    make_env("test", **changes)
    return render_stack(load_settings("test"))


def targets(service: dict) -> list[str]:
    return [volume["target"] for volume in service["volumes"]]


def test_render_dollar_doubled_in_file(make_env):
    rendered = render(make_env, SMTP_USERNAME="mailer$1$$x")
    assert "mailer$$1$$$$x" in rendered.text


def test_render_dollar_reaches_service_once(make_env):
    rendered = render(make_env, SMTP_USERNAME="mailer$1$$x")
    environment = yaml.safe_load(rendered.text)["services"]["server"]["environment"]
    assert unescape(environment["AUTHENTIK_EMAIL__USERNAME"]) == "mailer$1$$x"


@pytest.mark.parametrize(
    ("mount", "worker_has_socket"), [("true", True), ("false", False)]
)
def test_render_docker_socket(make_env, mount, worker_has_socket):
    services = render(make_env, MOUNT_DOCKER_SOCKET=mount).document["services"]
    assert (SOCKET in targets(services["worker"])) is worker_has_socket
    assert SOCKET not in targets(services["server"])


@pytest.mark.parametrize(
    "placement", ["node.role == worker", "node.labels.sso == true"]
)
def test_render_placement(make_env, placement):
    services = render(make_env, PLACEMENT=placement).document["services"]
    for name in ("server", "worker"):
        assert services[name]["deploy"]["placement"]["constraints"] == [placement]


@pytest.mark.parametrize("mode", ["host", "ingress"])
def test_render_publish_mode(make_env, mode):
    ports = render(make_env, PUBLISH_MODE=mode).document["services"]["server"]["ports"]
    assert [port["mode"] for port in ports] == [mode, mode]


def test_render_published_ports(make_env):
    services = render(make_env, HTTP_PORT="8001", HTTPS_PORT="8444").document[
        "services"
    ]
    published = {
        port["target"]: port["published"] for port in services["server"]["ports"]
    }
    assert published == {9000: 8001, 9443: 8444}
    assert "ports" not in services["worker"]


def test_render_never_publishes_metrics(make_env):
    for service in render(make_env).document["services"].values():
        for port in service.get("ports", []):
            assert 9300 not in (port["target"], port["published"])


def test_problems_reject_published_metrics(make_env):
    rendered = render(make_env)
    server = rendered.document["services"]["server"]
    server["ports"].append({"target": 9300, "published": 9300})
    problems = stack_problems(rendered.document, rendered.text, rendered.secrets)
    assert any("9300" in problem for problem in problems)


def test_render_separate_nfs_volumes(make_env):
    document = render(
        make_env, NFS_SERVER="nfs.example.com", NFS_EXPORT="/export/sso"
    ).document
    volumes = document["volumes"]
    assert sorted(volumes) == ["certs", "media", "templates"]
    for name, volume in volumes.items():
        options = volume["driver_opts"]
        assert volume["driver"] == "local"
        assert options["type"] == "nfs"
        assert options["o"] == "addr=nfs.example.com,nolock,soft,rw,nfsvers=4"
        assert options["device"] == f":/export/sso/{name}"
    server = document["services"]["server"]
    sources = {v["target"]: v.get("source") for v in server["volumes"]}
    assert sources == {
        "/media": "media",
        "/templates": "templates",
        "/certs": "certs",
        "/dev/shm": None,
    }


def test_render_shm_tmpfs_512mb(make_env):
    for service in render(make_env).document["services"].values():
        shm = [v for v in service["volumes"] if v["target"] == "/dev/shm"]
        assert shm == [
            {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 536870912}}
        ]


def test_render_utc_without_localtime(make_env):
    rendered = render(make_env)
    assert "/etc/localtime" not in rendered.text
    for service in rendered.document["services"].values():
        assert service["environment"]["TZ"] == "UTC"


def test_render_worker_root_server_default(make_env):
    services = render(make_env).document["services"]
    assert services["worker"]["user"] == "root"
    assert "user" not in services["server"]
    assert services["server"]["command"] == "server"
    assert services["worker"]["command"] == "worker"


def test_render_same_config_both_services(make_env):
    services = render(make_env).document["services"]
    for key in ("image", "environment", "secrets", "healthcheck"):
        assert services["server"][key] == services["worker"][key]


@pytest.mark.parametrize(
    ("key", "replicas"), [("SERVER_REPLICAS", "3"), ("WORKER_REPLICAS", "4")]
)
def test_render_replicas(make_env, key, replicas):
    name = key.split("_")[0].lower()
    services = render(make_env, **{key: replicas}).document["services"]
    assert services[name]["deploy"]["replicas"] == int(replicas)


def test_render_update_and_rollback_policy(make_env):
    deploy = render(make_env, UPDATE_MONITOR="45").document["services"]["worker"][
        "deploy"
    ]
    update = deploy["update_config"]
    assert update["parallelism"] == 1
    assert update["order"] == "start-first"
    assert update["failure_action"] == "rollback"
    assert update["monitor"] == "45s"
    assert deploy["rollback_config"]["monitor"] == "45s"
    assert deploy["restart_policy"]["condition"] == "any"


def test_render_healthcheck(make_env):
    rendered = render(
        make_env, HEALTHCHECK_INTERVAL="30", HEALTHCHECK_START_PERIOD="90"
    )
    healthcheck = rendered.document["services"]["server"]["healthcheck"]
    assert healthcheck["test"] == ["CMD", "ak", "healthcheck"]
    assert healthcheck["interval"] == "30s"
    assert healthcheck["timeout"] == "10s"
    assert healthcheck["start_period"] == "90s"


@pytest.mark.parametrize(
    ("mode", "replicas", "nodes", "order"),
    [
        ("host", "2", "a=10.0.0.1,b=10.0.0.2,c=10.0.0.3", "start-first"),
        ("host", "3", "a=10.0.0.1,b=10.0.0.2,c=10.0.0.3", "stop-first"),
        ("host", "1", "a=10.0.0.1", "stop-first"),
        ("ingress", "1", "a=10.0.0.1", "start-first"),
    ],
)
def test_server_update_order(make_env, mode, replicas, nodes, order):
    make_env(
        "test",
        PUBLISH_MODE=mode,
        SERVER_REPLICAS=replicas,
        SWARM_NODES=nodes,
        STACK_OVERRIDE=None,
    )
    settings = load_settings("test")
    assert server_update_order(settings) == order
    rendered = render_stack(settings)
    server = rendered.document["services"]["server"]["deploy"]
    assert server["update_config"]["order"] == order
    assert server["rollback_config"]["order"] == order


@pytest.mark.parametrize(("cidrs", "present"), [("10.0.0.5/32", True), (None, False)])
def test_render_trusted_proxies(make_env, cidrs, present):
    environment = render(make_env, TRUSTED_PROXY_CIDRS=cidrs).document["services"][
        "server"
    ]["environment"]
    assert ("AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS" in environment) is present
    if present:
        assert environment["AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS"] == cidrs


def test_render_secret_values_absent(make_env):
    rendered = render(make_env)
    for version in rendered.secrets.values():
        assert version.value not in rendered.text


def test_render_secrets_as_files(make_env):
    rendered = render(make_env)
    environment = rendered.document["services"]["server"]["environment"]
    purposes = {
        "AUTHENTIK_SECRET_KEY": "secret_key",
        "AUTHENTIK_POSTGRESQL__PASSWORD": "db_password",
        "AUTHENTIK_EMAIL__PASSWORD": "smtp_password",
    }
    for variable, purpose in purposes.items():
        name = rendered.secrets[purpose].name
        assert environment[variable] == f"file:///run/secrets/{name}"
        assert rendered.document["secrets"][name] == {"external": True}


def test_render_secret_mount_mode_octal(make_env):
    rendered = render(make_env)
    assert "mode: 0400" in rendered.text
    server = yaml.safe_load(rendered.text)["services"]["server"]
    assert {secret["mode"] for secret in server["secrets"]} == {0o400}


def test_render_without_smtp_password(make_env):
    rendered = render(make_env, SMTP_USERNAME=None, SMTP_PASSWORD=None)
    environment = rendered.document["services"]["server"]["environment"]
    assert "AUTHENTIK_EMAIL__PASSWORD" not in environment
    assert sorted(rendered.secrets) == ["db_password", "secret_key"]


def test_secret_name_follows_value(make_env):
    first = render(make_env).secrets["db_password"].name
    same = render(make_env).secrets["db_password"].name
    changed = render(make_env, AUTHENTIK_POSTGRESQL__PASSWORD="another-pa$$word-42")
    assert first == same
    assert changed.secrets["db_password"].name != first
    assert first.startswith("authentik_db_password_")


def test_spec_hash_follows_settings(make_env):
    def label(rendered, name):
        return rendered.document["services"][name]["deploy"]["labels"][
            "authops.spec-hash"
        ]

    first = render(make_env)
    changed = render(make_env, HEALTHCHECK_INTERVAL="7")
    assert label(first, "server") == label(render(make_env), "server")
    assert label(changed, "server") != label(first, "server")
    assert label(changed, "worker") != label(first, "worker")


@pytest.mark.parametrize(
    ("base", "override", "merged"),
    [
        ({"a": 1}, {}, {"a": 1}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}, {"a": {"b": 1, "c": 3}}),
        ({"a": {"b": 1}}, {"a": {"d": {"e": 4}}}, {"a": {"b": 1, "d": {"e": 4}}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": {"b": 1}}, {"a": "x"}, {"a": "x"}),
        ({"a": 1}, {"n": {"m": 1}}, {"a": 1, "n": {"m": 1}}),
    ],
)
def test_deep_merge(base, override, merged):
    assert deep_merge(base, override) == merged


def test_deep_merge_leaves_base_alone():
    base = {"a": {"b": 1}}
    deep_merge(base, {"a": {"b": 2}})
    assert base == {"a": {"b": 1}}


def test_override_merged_with_context(make_env, tmp_path):
    override = tmp_path / "override.yml"
    override.write_text(
        "services:\n"
        "  server:\n"
        "    deploy:\n"
        "      replicas: 5\n"
        "    environment:\n"
        "      AUTHENTIK_LOG_LEVEL: {{ ('debug$' ~ values.STACK_NAME) | q }}\n"
        "volumes:\n"
        "  media:\n"
        "    driver_opts:\n"
        "      device: {{ nfs_directories.media | q }}\n"
    )
    rendered = render(make_env, STACK_OVERRIDE=str(override))
    server = rendered.document["services"]["server"]
    assert server["deploy"]["replicas"] == 5
    assert server["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert server["environment"]["AUTHENTIK_LOG_LEVEL"] == "debug$$authentik"
    assert server["environment"]["TZ"] == "UTC"
    media = rendered.document["volumes"]["media"]["driver_opts"]
    assert media["device"] == "/var/lib/authops-lab/nfs/media"
    assert media["type"] == "nfs"


def test_lab_override_binds_folders(make_env):
    rendered = render(make_env, STACK_OVERRIDE="stack/lab.override.yml")
    for name, volume in rendered.document["volumes"].items():
        assert volume["driver_opts"] == {
            "type": "none",
            "o": "bind",
            "device": f"/var/lib/authops-lab/nfs/{name}",
        }


def test_override_not_mapping_rejected(make_env, tmp_path):
    override = tmp_path / "override.yml"
    override.write_text("- a\n- b\n")
    with pytest.raises(OpsError, match="mapping"):
        render(make_env, STACK_OVERRIDE=str(override))


def test_override_publishing_metrics_rejected(make_env, tmp_path):
    override = tmp_path / "override.yml"
    override.write_text(
        "services:\n  server:\n    ports:\n      - {target: 9300, published: 9300}\n"
    )
    with pytest.raises(OpsError, match="9300"):
        render(make_env, STACK_OVERRIDE=str(override))


def test_render_output_parses_as_compose(make_env):
    document = yaml.safe_load(render(make_env).text)
    assert document["version"] == "3.8"
    assert sorted(document["services"]) == ["server", "worker"]
    assert not [key for key in document if key.startswith("x-")]


@pytest.mark.parametrize(
    ("version", "valid"), [("3.8", True), ("3.10", True), ("3.7", False), ("", False)]
)
def test_problems_compose_version(make_env, version, valid):
    rendered = render(make_env)
    rendered.document["version"] = version
    problems = stack_problems(rendered.document, rendered.text, rendered.secrets)
    assert (not any(p.startswith("version") for p in problems)) is valid
