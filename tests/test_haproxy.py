"""HAProxy tasks against a real haproxy 2.6 (master-worker) in front of two stand-in nodes.

Every haproxy, node and client runs on loopback. The client loops are bounded
by a request count, so a stuck test ends on its own.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from authops import hosts
from authops.haproxy import BACKUPS_KEPT, back_up, collect_status, start_haproxy
from authops.haproxycfg import TEMPLATE_PATH
from authops.haproxyruntime import server_states, show_info
from authops.localsvc import free_port
from authops.settings import load_settings
from tests.support.haproxylab import DOMAIN, Traffic, make_bench, run_invoke

ENV = "hx"
TRAFFIC_LIMIT = 3000  # requests; a test usually stops its loop earlier


@pytest.fixture
def bench(tmp_path, make_env):
    """Two stand-in nodes and an env file for an HAProxy that does not run yet."""
    bench = make_bench(tmp_path / "hx")
    make_env(ENV, **bench.env_values())
    yield bench
    bench.stop_haproxy()
    for node in bench.nodes:
        node.kill()


@pytest.fixture
def running(bench, env_dir):
    """The bench with the rendered configuration installed and haproxy started."""
    installed = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    settings = load_settings(ENV)
    outcome = start_haproxy(hosts.connect("local"), settings)
    assert outcome.state == "changed", outcome.detail
    wait_until(lambda: up_servers(settings) == ["a", "b"], timeout=15)
    return bench


def up_servers(settings) -> list[str]:
    states = server_states(hosts.connect("local"), settings)
    return sorted(state.name for state in states if state.is_up)


def worker_pid(settings) -> str:
    return show_info(hosts.connect("local"), settings)["Pid"]


def wait_until(condition, timeout: float) -> float:
    """Poll `condition` until it holds; return the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_start_second_run_unchanged(running, env_dir):
    result = run_invoke("haproxy.start", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert "[local] unchanged: already running" in result.stdout


def test_reload_unchanged_keeps_workers(running, env_dir):
    settings = load_settings(ENV)
    before = worker_pid(settings)
    result = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert "[local] unchanged" in result.stdout
    assert worker_pid(settings) == before


def test_reload_under_traffic_loses_nothing(running, env_dir, make_env):
    settings = load_settings(ENV)
    before = worker_pid(settings)
    make_env(ENV, **running.env_values(), HAPROXY_STICKY="true")
    traffic = Traffic(running.client(), TRAFFIC_LIMIT)
    wait_until(lambda: traffic.tally.total >= 100, timeout=30)
    sent_before_reload = traffic.tally.total
    result = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    sent_at_reload = traffic.tally.total
    wait_until(lambda: traffic.tally.total >= sent_at_reload + 200, timeout=30)
    tally = traffic.stop()
    print(
        f"{tally.total} requests, {sent_at_reload - sent_before_reload} while reloading"
    )
    assert result.returncode == 0, output_of(result)
    assert "[local] changed: reloaded" in result.stdout
    assert tally.failures == []
    assert sent_at_reload - sent_before_reload > 0
    assert tally.total >= 300
    assert worker_pid(settings) != before
    assert "stick on src" in running.config.read_text()


def test_reload_shows_diff_and_keeps_backup(running, env_dir, make_env):
    original = running.config.read_bytes()
    make_env(ENV, **running.env_values(), HAPROXY_STICKY="true")
    result = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert "+    stick on src" in result.stdout
    backups = list(running.directory.glob("haproxy.cfg.bak-*"))
    assert len(backups) == 1
    assert backups[0].read_bytes() == original
    assert f"previous file kept as {backups[0]}" in result.stdout
    assert "server a UP (L7OK 200)" in result.stdout
    assert "server b UP (L7OK 200)" in result.stdout


def test_reload_dry_run_changes_nothing(running, env_dir, make_env):
    settings = load_settings(ENV)
    before = running.config.read_bytes()
    worker = worker_pid(settings)
    temporary_before = set(Path("/tmp").glob("authops-haproxy.*"))
    make_env(ENV, **running.env_values(), HAPROXY_STICKY="true")
    result = run_invoke("haproxy.reload", "--env", ENV, "--dry-run", env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert "[local] would change: valid" in result.stdout
    assert "+    stick on src" in result.stdout
    assert running.config.read_bytes() == before
    assert worker_pid(settings) == worker
    assert list(running.directory.glob("haproxy.cfg.bak-*")) == []
    assert set(Path("/tmp").glob("authops-haproxy.*")) == temporary_before


def test_bad_template_rejected_running_untouched(running, env_dir, tmp_path):
    settings = load_settings(ENV)
    template = tmp_path / "bad.cfg.j2"
    template.write_text(
        TEMPLATE_PATH.read_text().replace(
            "    balance roundrobin\n", "    balance roundrobin\n    bogus-keyword 1\n"
        )
    )
    config_before = running.config.read_bytes()
    master_before = running.master_pid()
    worker_before = worker_pid(settings)
    result = run_invoke(
        "haproxy.reload", "--env", ENV, "--template", str(template), env_dir=env_dir
    )
    assert result.returncode != 0
    assert re.search(
        r"line \d+ \(`bogus-keyword 1`\): unknown keyword", output_of(result)
    )
    assert running.config.read_bytes() == config_before
    assert running.master_pid() == master_before
    assert worker_pid(settings) == worker_before
    assert sorted(p.name for p in running.directory.glob(".haproxy.cfg*")) == []


def test_check_names_error_line(bench, env_dir, tmp_path):
    template = tmp_path / "bad.cfg.j2"
    template.write_text(TEMPLATE_PATH.read_text() + "\nfrontend broken\n    bind\n")
    result = run_invoke(
        "haproxy.check", "--env", ENV, "--template", str(template), env_dir=env_dir
    )
    assert result.returncode == 1
    assert (
        "[local] failed: haproxy -c rejected the configuration: line" in result.stdout
    )
    assert "haproxy.check failed on 1 of 1: local" in result.stderr


def test_check_valid_config_ok(bench, env_dir):
    result = run_invoke("haproxy.check", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert "[local] ok: valid (HAProxy version 2.6" in result.stdout


def test_reload_without_servers_up_rolls_back(running, env_dir, make_env):
    settings = load_settings(ENV)
    before = running.config.read_bytes()
    dead_port = str(free_port("127.0.0.2"))
    make_env(ENV, **{**running.env_values(), "HTTPS_PORT": dead_port})
    result = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 1
    assert "no backend server is UP after the reload" in result.stdout
    assert "restored the previous" in result.stdout
    assert "reloaded it" in result.stdout
    assert running.config.read_bytes() == before
    wait_until(lambda: up_servers(settings) == ["a", "b"], timeout=15)


def test_dead_node_leaves_rotation_without_errors(running):
    settings = load_settings(ENV)
    client = running.client()
    traffic = Traffic(client, TRAFFIC_LIMIT)
    wait_until(lambda: traffic.tally.total >= 100, timeout=30)
    running.nodes[1].kill()
    detection = wait_until(lambda: up_servers(settings) == ["a"], timeout=15)
    sent = traffic.tally.total
    wait_until(lambda: traffic.tally.total >= sent + 100, timeout=30)
    tally = traffic.stop()
    print(f"node b marked DOWN {detection:.1f} s after it was killed")
    assert tally.failures == []
    assert tally.by_node.get("b", 0) > 0
    assert client.count(20).by_node == {"a": 20}


def test_unready_node_leaves_rotation(running):
    settings = load_settings(ENV)
    client = running.client()
    running.nodes[1].set_ready(False)
    detection = wait_until(lambda: up_servers(settings) == ["a"], timeout=15)
    print(f"node b marked DOWN {detection:.1f} s after readiness failed")
    assert client.count(20).by_node == {"a": 20}
    running.nodes[1].set_ready(True)
    wait_until(lambda: up_servers(settings) == ["a", "b"], timeout=20)
    assert set(client.count(20).by_node) == {"a", "b"}


def test_status_reports_each_server(running, env_dir):
    running.nodes[1].set_ready(False)
    wait_until(lambda: up_servers(load_settings(ENV)) == ["a"], timeout=15)
    result = run_invoke("haproxy.status", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert "server a UP (L7OK 200)" in result.stdout
    assert re.search(r"server b DOWN \(L7STS 503", result.stdout)
    assert "[local] ok: worker pid" in result.stdout
    assert "1 of 2 servers UP" in result.stdout


def test_status_fails_without_any_server(running, env_dir):
    for node in running.nodes:
        node.kill()
    wait_until(lambda: up_servers(load_settings(ENV)) == [], timeout=15)
    result = run_invoke("haproxy.status", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 1
    assert "[local] failed:" in result.stdout


def test_collect_status_for_doctor(running):
    [(spec, status, error)] = collect_status(load_settings(ENV))
    assert spec == "local"
    assert error is None
    assert status.config_current is True
    assert [state.name for state in status.servers_up] == ["a", "b"]


@pytest.mark.parametrize("client", ["socat", "python3"])
def test_runtime_api_clients(running, client):
    info = show_info(hosts.connect("local"), load_settings(ENV), client=client)
    assert info["Name"] == "HAProxy"


def test_headers_reach_node(running):
    status, headers, body = running.client().get(
        "/", headers={"X-Forwarded-For": "192.0.2.66", "Forwarded": "for=192.0.2.66"}
    )
    received = json.loads(body)["headers"]
    names = [name.lower() for name, _ in received]
    values = {name.lower(): value for name, value in received}
    assert status == 200
    assert names.count("x-forwarded-for") == 1
    assert values["x-forwarded-for"] == "127.0.0.1"
    assert values["host"] == DOMAIN
    assert values["x-forwarded-proto"] == "https"
    assert values["x-forwarded-host"] == DOMAIN
    assert values["forwarded"] == f'for=127.0.0.1;proto=https;host="{DOMAIN}"'


def test_security_headers_on_response(running):
    _, headers, _ = running.client().get("/")
    assert headers["Strict-Transport-Security"] == (
        "max-age=63072000; includeSubDomains; preload"
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert headers["Permissions-Policy"] == "geolocation=(), microphone=(), camera=()"
    assert "Server" not in headers
    assert "X-Powered-By" not in headers
    assert "X-XSS-Protection" not in headers


def test_unknown_host_gets_404(running):
    status, headers, _ = running.client().get("/", host="other.example.com")
    assert status == 404
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_http2_keeps_host(running):
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--http2",
            "--cacert",
            str(running.directory / "ca.pem"),
            "--resolve",
            f"{DOMAIN}:{running.port}:127.0.0.1",
            "--write-out",
            "\n%{http_version}",
            f"https://{DOMAIN}:{running.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, _, version = result.stdout.rpartition("\n")
    values = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert version == "2"
    assert values["host"] == f"{DOMAIN}:{running.port}"
    assert values["x-forwarded-host"] == f"{DOMAIN}:{running.port}"


def test_backups_pruned_to_newest(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text("current\n")
    for day in range(1, 8):
        (tmp_path / f"haproxy.cfg.bak-2025010{day}T000000Z").write_text(f"{day}\n")
    kept = back_up(hosts.connect("local"), str(config))
    backups = sorted(path.name for path in tmp_path.glob("haproxy.cfg.bak-*"))
    assert len(backups) == BACKUPS_KEPT
    assert backups[-1] == Path(kept).name
    assert Path(kept).read_text() == "current\n"
    assert "haproxy.cfg.bak-20250101T000000Z" not in backups


def test_tasks_over_ssh(running, sshd, env_dir, make_env, tmp_path):
    settings = load_settings(ENV)
    worker = worker_pid(settings)
    values = {
        **running.env_values(),
        **sshd.env_values(),
        "HAPROXY_HOSTS": sshd.spec(),
        "HAPROXY_STICKY": "true",
    }
    make_env(ENV, **values)
    check = run_invoke("haproxy.check", "--env", ENV, env_dir=env_dir)
    assert check.returncode == 0, output_of(check)
    assert f"[{sshd.spec()}] ok: valid" in check.stdout
    reload = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
    assert reload.returncode == 0, output_of(reload)
    assert (
        f"[{sshd.spec()}] changed: reloaded through the master process" in reload.stdout
    )
    assert worker_pid(settings) != worker
    status = run_invoke("haproxy.status", "--env", ENV, env_dir=env_dir)
    assert status.returncode == 0, output_of(status)
    assert "2 of 2 servers UP" in status.stdout
