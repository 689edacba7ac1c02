"""The benchmark's load generator and report writer, on tiny inputs.

These keep bench/ from rotting between benchmark runs. They assert what the
code records and writes, never how fast anything is: the speed figures live
on docs/benchmarks.md, from `make bench`.
"""

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from authops.localsvc import free_port
from bench import detection, failover, reload, report, rolling
from bench.load import RequestRecord, Target, run_load, summarize_records
from bench.stats import spread
from tests.support.certificates import issue, make_ca

HOST = "bench.test"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - the name http.server calls
        status = 503 if self.path == "/unavailable" else 200
        body = b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the signature http.server uses
        pass


@pytest.fixture
def server():
    """A plain HTTP server on 127.0.0.1: 503 on /unavailable, 200 elsewhere."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tls_server(tmp_path):
    """The same server over TLS, with a certificate for HOST from a test CA."""
    ca = make_ca()
    leaf = issue(ca, [HOST])
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "cert.pem").write_bytes(leaf.fullchain)
    (tmp_path / "key.pem").write_bytes(leaf.privkey)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, tmp_path / "ca.pem"
    httpd.shutdown()
    httpd.server_close()


def load(target: Target, requests: int = 6):
    return run_load(target, rate=200, duration=5, max_requests=requests)


def test_load_records_each_request(server):
    result = load(Target("127.0.0.1", server.server_port, HOST, path="/page"))
    assert len(result.records) == 6
    assert result.summary()["failed"] == 0
    assert {record.status for record in result.records} == {200}


def test_load_counts_error_status(server):
    result = load(Target("127.0.0.1", server.server_port, HOST, path="/unavailable"))
    assert result.summary()["failed"] == 6
    assert result.summary()["failures_by_outcome"] == {"HTTP 503": 6}


def test_load_records_refused_connection():
    result = load(Target("127.0.0.1", free_port(), HOST), requests=3)
    assert result.summary()["failures_by_outcome"] == {"ConnectionRefusedError": 3}


def test_load_over_verified_tls(tls_server):
    httpd, ca_file = tls_server
    result = load(Target("127.0.0.1", httpd.server_port, HOST, ca_file=ca_file))
    assert result.summary()["failed"] == 0


def test_load_rejects_wrong_certificate_name(tls_server):
    httpd, ca_file = tls_server
    target = Target("127.0.0.1", httpd.server_port, "other.test", ca_file=ca_file)
    result = load(target, requests=2)
    assert result.summary()["failed"] == 2


def test_load_stops_at_duration(server):
    target = Target("127.0.0.1", server.server_port, HOST)
    result = run_load(target, rate=10, duration=0.25, max_requests=1000)
    assert len(result.records) == 3  # due at 0, 0.1 and 0.2 s


@pytest.mark.parametrize("address", ["192.0.2.1", "10.0.0.1", "::2"])
def test_target_rejects_non_loopback(address):
    with pytest.raises(ValueError, match="not a loopback address"):
        Target(address, 443, HOST)


def test_spread_skips_missing_values():
    figure = spread([3.0, None, 1.0, 2.0])
    assert figure["median"] == 2.0
    assert figure["measured"] == 3
    assert figure["runs"] == 4


def test_spread_of_nothing_measured():
    assert spread([None, None])["median"] is None


# --- The report, from results shaped by the scenarios' own summaries --------


def records(failed: int, total: int = 4) -> list[RequestRecord]:
    return [
        RequestRecord(
            due=number * 0.1,
            start=number * 0.1,
            latency=0.01,
            status=None if number < failed else 200,
            error="ConnectionRefusedError" if number < failed else None,
        )
        for number in range(total)
    ]


def failover_run(project_seconds, reference_seconds, lost) -> dict:
    def figures(seconds, failed):
        return {
            "detection_seconds": seconds,
            "check_at_down": None if seconds is None else "b DOWN (L4CON)",
            "before": summarize_records(records(0)),
            "after": summarize_records(records(failed)),
        }

    return {
        "project": figures(project_seconds, 0),
        "reference": figures(reference_seconds, lost),
    }


def sample_results(hang_seconds: float) -> dict:
    reload_runs = [
        {
            "reload_seconds": 1.4,
            "all": summarize_records(records(0)),
            "during": summarize_records(records(0, 2)),
        }
    ]
    deploy_summary = summarize_records(records(2))
    deploy_runs = [
        {
            "deploy_seconds": 41.0,
            "converged_seconds": 33,
            "all": deploy_summary,
            "outage_seconds": rolling.outage(deploy_summary),
        }
    ]
    failover_runs = {
        "kill": [failover_run(1.0, 55.0, 3)],
        "hang": [failover_run(hang_seconds, 100.0, 3)],
        "not-ready": [failover_run(1.0, None, 0)],
    }
    detection_runs = {
        "tool": [{"exit_after_rollback": 3.0, "seconds": 29.0, "exit_code": 1}],
        "cli": [{"exit_after_rollback": 11.0, "seconds": 36.0, "exit_code": 0}],
    }
    return {
        "mode": "--quick",
        "runs": {
            "reload": 1,
            "deploy": 1,
            "failover": 1,
            "overhead": 1,
            "detection": 1,
        },
        "machine": {
            "date": "2026-01-01 00:00 UTC",
            "commit": "abc1234",
            "cpu": "Test CPU",
            "cores": 2,
            "memory_gib": 4.0,
            "os": "Debian 12",
            "kernel": "6.1.0",
            "haproxy": "HAProxy version 2.6",
            "docker_client": "28.2.2",
            "docker_daemon": "20.10.24",
            "postgres": "postgres (PostgreSQL) 15",
            "python": "3.11.7",
        },
        "versions": {"ansible": "ansible 12.3.0"},
        "results_file": "20260101T000000Z.json",
        "duration_seconds": 60.0,
        "scenarios": {
            "reload": {
                "runs": reload_runs,
                "summary": reload.summarize(reload_runs),
                "rate": 40.0,
                "lead": 2.0,
                "target": "127.0.0.1:8443",
            },
            "deploy": {
                "runs": deploy_runs,
                "summary": rolling.summarize(deploy_runs),
                "nodes": 1,
                "server_replicas": 1,
                "server_update_order": "stop-first",
                "rate": 20.0,
            },
            "failover": {
                "modes": failover_runs,
                "summary": failover.summarize(failover_runs),
                "caps": failover.DETECTION_CAP,
                "rate": 10.0,
            },
            "overhead": {
                "invoke_list": {"seconds": spread([1.0])},
                "bootstrap": {
                    "tool": spread([0.7]),
                    "ansible": spread([4.8]),
                    "ratio": 6.9,
                    "tool_changes": 0,
                    "ansible_changes": 0,
                    "ansible_version": "ansible 12.3.0",
                },
                "fan_out": {
                    "hosts": 5,
                    "parallel": spread([0.8]),
                    "serial": spread([1.5]),
                    "ratio": 1.9,
                },
            },
            "detection": {
                "runs": detection_runs,
                "summary": detection.summarize(detection_runs),
                "broken_tag": "2025.10.99",
            },
        },
    }


def test_report_writes_page(tmp_path):
    page = tmp_path / "docs" / "benchmarks.md"
    report.write(sample_results(hang_seconds=1.5), page)
    text = page.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "## Machine" in text
    assert "## How to reproduce" in text


def test_report_marks_deploy_failures_missed():
    text = report.render(sample_results(hang_seconds=1.5))
    assert "| rolling stack.deploy: failed requests | 0 | 2 | **missed** |" in text
    assert "`order: stop-first`" in text


def test_report_marks_slow_detection_missed():
    text = report.render(sample_results(hang_seconds=7.0))
    assert "failover, hang: seconds until DOWN" in text
    assert "7.0 s; 100.0 s | **missed** |" in text
    assert "two check timeouts" in text


def test_report_marks_fast_detection_met():
    text = report.render(sample_results(hang_seconds=1.5))
    assert "1.5 s; 100.0 s | met |" in text
    assert "two check timeouts" not in text


def test_report_shows_undetected_reference():
    text = report.render(sample_results(hang_seconds=1.5))
    assert "1.0 s; not DOWN within 70 s | met |" in text


def test_report_shows_exit_codes():
    text = report.render(sample_results(hang_seconds=1.5))
    assert "exit 1 after 3.0 s; exit 0 after 11.0 s | met |" in text


def test_report_names_failed_scenario():
    results = sample_results(hang_seconds=1.5)
    results["scenarios"]["reload"] = {"error": "haproxy.reload did not reload"}
    text = report.render(results)
    assert "This scenario failed in this run: haproxy.reload did not reload" in text


def test_report_explains_rollback_wait_timeout():
    results = sample_results(hang_seconds=1.5)
    tool_runs = results["scenarios"]["detection"]["runs"]["tool"]
    tool_runs[0]["output"] = "[stack] failed: the previous version does not serve"
    text = report.render(results)
    assert "`wait_previous_serving`" in text
    assert "Failure detection, time to exit" in text
