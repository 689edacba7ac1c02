"""Rendering of haproxy/haproxy.cfg.j2: table-driven cases, each also validated by haproxy -c."""

import re
import subprocess
import sys

import pytest

from authops.errors import OpsError
from authops.haproxycfg import (
    TEMPLATE_PATH,
    describe_errors,
    embedded_checksum,
    fill_checksum,
    render_config,
)
from authops.settings import load_settings
from tests.support.certificates import issue, make_ca
from tests.support.haproxylab import REPO

DOMAIN = "sso.example.com"


@pytest.fixture
def render(make_env, tmp_path):
    """Render the template for the lab's values with some keys changed, certificates in tmp."""
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    leaf = issue(make_ca(), [DOMAIN])
    (cert_dir / f"{DOMAIN}.pem").write_bytes(leaf.fullchain + leaf.privkey)

    def make(**changes: str) -> str:
        values = {
            "SSO_DOMAIN": DOMAIN,
            "HAPROXY_CERT_DIR": str(cert_dir),
            "HAPROXY_STATS_SOCKET": str(tmp_path / "admin.sock"),
            "HAPROXY_PIDFILE": str(tmp_path / "haproxy.pid"),
            **changes,
        }
        make_env("render", **values)
        return render_config(load_settings("render"))

    return make


def directives(text: str) -> list[str]:
    """Return the configuration lines without comments and blank lines, stripped."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def haproxy_check(text: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "rendered.cfg"
    path.write_text(text)
    return subprocess.run(
        ["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=60
    )


VARIANTS = {
    "lab": {},
    "five nodes": {
        "SWARM_NODES": ",".join(f"worker{i}=10.0.10.2{i}" for i in range(1, 6))
    },
    "sticky": {"HAPROXY_STICKY": "true"},
    "redirect port": {"HAPROXY_REDIRECT_PORT": "8080"},
    "ipv6": {"HAPROXY_BIND_ADDRESS": "::1", "SWARM_NODES": "v6=fd00::21"},
    "any address": {"HAPROXY_BIND_ADDRESS": "*", "HAPROXY_BIND_PORT": "443"},
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_render_variant_passes_haproxy_check(render, tmp_path, name):
    result = haproxy_check(render(**VARIANTS[name]), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("nodes", "https_port", "expected"),
    [
        ("lab=127.0.0.1", "9445", ["server lab 127.0.0.1:9445"]),
        (
            "w1=10.0.10.21,w2=10.0.10.22,w3=node3.example.com",
            "9443",
            [
                "server w1 10.0.10.21:9443",
                "server w2 10.0.10.22:9443",
                "server w3 node3.example.com:9443",
            ],
        ),
        ("v6=fd00::21", "9445", ["server v6 [fd00::21]:9445"]),
    ],
)
def test_render_servers_from_nodes(render, nodes, https_port, expected):
    text = render(SWARM_NODES=nodes, HTTPS_PORT=https_port)
    servers = [line for line in directives(text) if line.startswith("server ")]
    assert servers == expected


@pytest.mark.parametrize(
    ("sticky", "present"),
    [("true", True), ("false", False)],
)
def test_render_sticky_table(render, sticky, present):
    lines = directives(render(HAPROXY_STICKY=sticky))
    assert ("stick on src" in lines) is present
    assert (
        any(line.startswith("stick-table ") and "expire 30m" in line for line in lines)
        is present
    )


def test_render_one_forwarded_for(render):
    lines = directives(render())
    assert lines.count("option forwardfor") == 1
    assert "http-request del-header X-Forwarded-For" in lines
    setters = [
        line
        for line in lines
        if re.search(r"(set|add)-header X-Forwarded-For", line, re.IGNORECASE)
    ]
    assert setters == []


def test_render_health_check_ready_and_200(render):
    lines = directives(render())
    assert "option httpchk" in lines
    assert (
        f"http-check send meth GET uri /-/health/ready/ ver HTTP/1.1 hdr Host {DOMAIN}"
        in lines
    )
    expects = [line for line in lines if line.startswith("http-check expect")]
    assert expects == ["http-check expect status 200"]


def test_render_failover_settings(render):
    lines = directives(render())
    default_server = next(line for line in lines if line.startswith("default-server"))
    for setting in ("inter 1s", "fall 2", "rise 2", "ssl verify none", "maxconn"):
        assert setting in default_server
    assert "option redispatch 1" in lines
    assert "retries 3" in lines
    assert "timeout server 60s" in lines
    assert "timeout tunnel 1h" in lines


def test_render_frontend_bind_and_headers(render):
    lines = directives(
        render(HAPROXY_BIND_ADDRESS="127.0.0.1", HAPROXY_BIND_PORT="8443")
    )
    assert "bind 127.0.0.1:8443 ssl crt" in " ".join(lines)
    assert any(line.endswith("alpn h2,http/1.1") for line in lines)
    text = "\n".join(lines)
    assert "max-age=63072000; includeSubDomains; preload" in text
    assert "X-Content-Type-Options nosniff" in text
    assert "Referrer-Policy strict-origin-when-cross-origin" in text
    assert "geolocation=(), microphone=(), camera=()" in text
    assert "del-header Server" in text
    assert "del-header X-Powered-By" in text
    assert "X-XSS-Protection" not in text


@pytest.mark.parametrize(
    ("port", "binds", "redirects"),
    [("", 1, 0), ("8080", 2, 1)],
)
def test_render_redirect_port_optional(render, port, binds, redirects):
    lines = directives(render(HAPROXY_REDIRECT_PORT=port))
    assert len([line for line in lines if line.startswith("bind ")]) == binds
    assert len([line for line in lines if "http-request redirect" in line]) == redirects


def test_render_is_deterministic(render):
    assert render() == render()


def test_render_checksum_verifies(render):
    text = render()
    checksum = embedded_checksum(text)
    assert checksum is not None
    assert fill_checksum(text.replace(checksum, "0" * 64)) == text


def test_render_checksum_follows_content(render):
    assert embedded_checksum(render()) != embedded_checksum(
        render(HAPROXY_STICKY="true")
    )


def test_render_undefined_variable_named(make_env, tmp_path):
    template = tmp_path / "bad.cfg.j2"
    template.write_text(TEMPLATE_PATH.read_text() + "\n# {{ NO_SUCH_KEY }}\n")
    make_env("render")
    with pytest.raises(OpsError, match="NO_SUCH_KEY"):
        render_config(load_settings("render"), template)


def test_render_syntax_error_names_line(make_env, tmp_path):
    template = tmp_path / "bad.cfg.j2"
    template.write_text("global\n{% if %}\n")
    make_env("render")
    with pytest.raises(OpsError, match="line 2"):
        render_config(load_settings("render"), template)


def test_render_non_utf8_template_named(make_env, tmp_path):
    make_env("render")
    template = tmp_path / "latin1.cfg.j2"
    template.write_bytes(b"global\n    # caf\xe9\n")
    with pytest.raises(OpsError, match="not valid UTF-8"):
        render_config(load_settings("render"), template)


def test_describe_errors_names_line_and_text():
    text = "global\n    bogus-keyword 1\n"
    haproxy_output = (
        "[NOTICE]   (1) : haproxy version is 2.6.12\n"
        "[ALERT]    (1) : config : parsing [/tmp/x.cfg:2] : unknown keyword 'bogus-keyword' in 'global' section\n"
        "[ALERT]    (1) : config : Error(s) found in configuration file : /tmp/x.cfg\n"
        "[ALERT]    (1) : config : Fatal errors found in configuration.\n"
    )
    assert describe_errors(text, haproxy_output) == (
        "line 2 (`bogus-keyword 1`): unknown keyword 'bogus-keyword' in 'global' section"
    )


def test_render_task_prints_config(render, env_dir):
    expected = render()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "haproxy.render", "--env", "render"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
