"""smtp.test --via authentik: task lookup, node choice and the command sequence.

No stack runs here, so the flow test puts a stand-in `docker` script first on
PATH. The script prints canned output for the few docker commands of the flow
and logs each call. The real run against a deployed stack is part of the lab.
"""

import os
import stat
import textwrap

import pytest
from invoke import Context
from invoke.exceptions import Exit

from authops import hosts, smtp, smtp_worker
from authops.errors import OpsError
from authops.settings import Node
from authops.smtp_worker import Manager, WorkerTask

FULL_ID = "w9kq1nq2b1x8l0c3f5y7z9a1b"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            f"{FULL_ID}\tnode-2\tRunning 3 minutes ago\n",
            [WorkerTask(FULL_ID, "node-2", "Running 3 minutes ago")],
        ),
        (
            "aaa\tnode-1\tPreparing 2 seconds ago\nbbb\tnode-3\tRunning 1 hour ago\n",
            [
                WorkerTask("aaa", "node-1", "Preparing 2 seconds ago"),
                WorkerTask("bbb", "node-3", "Running 1 hour ago"),
            ],
        ),
        ("", []),
        ("garbage line without tabs\n\n", []),
        ("ccc\t\tRunning 1 second ago\n", []),
    ],
    ids=["one", "two", "empty", "malformed", "no node"],
)
def test_parse_tasks(text, expected):
    assert smtp_worker.parse_tasks(text) == expected


@pytest.mark.parametrize(
    "states, expected",
    [
        (["Preparing 1 second ago", "Running 5 seconds ago"], 1),
        (["Starting 1 second ago"], None),
        (["Running 2 days ago", "Running 1 day ago"], 0),
        ([], None),
    ],
)
def test_running_task_skips_not_running(states, expected):
    tasks = [WorkerTask(f"t{i}", "n", state) for i, state in enumerate(states)]
    task = smtp_worker.running_task(tasks)
    assert task == (None if expected is None else tasks[expected])


NODES = [
    Node("manager-1", "10.0.0.1"),
    Node("worker-1", "10.0.0.11"),
    Node("worker-2", "admin@10.0.0.12:2222"),
    Node("lab", "127.0.0.1"),
    Node("here", "local"),
]


@pytest.mark.parametrize(
    "node, manager_spec, expected",
    [
        ("manager-1", "ops@10.0.0.1", "ops@10.0.0.1"),
        ("worker-1", "ops@10.0.0.1", "10.0.0.11"),
        ("worker-2", "ops@10.0.0.1", "admin@10.0.0.12:2222"),
        ("worker-1", "10.0.0.11", "10.0.0.11"),
        ("lab", "ops@10.0.0.1", "local"),
        ("here", "ops@10.0.0.1", "local"),
    ],
    ids=[
        "manager itself",
        "listed worker",
        "listed with user and port",
        "address is the manager host",
        "loopback address",
        "local",
    ],
)
def test_node_host(node, manager_spec, expected):
    manager = Manager(hosts.connect("local"), manager_spec, "manager-1")
    assert smtp_worker.node_host(node, NODES, manager) == expected


def test_node_host_unlisted_node_rejected():
    manager = Manager(hosts.connect("local"), "local", "manager-1")
    with pytest.raises(OpsError, match="worker-9, which is not in SWARM_NODES"):
        smtp_worker.node_host("worker-9", NODES, manager)


@pytest.mark.parametrize(
    "text, failed",
    [
        ('{"event": "Sending mail", "level": "debug"}', False),
        ("smtplib.SMTPAuthenticationError: (535, b'5.7.8 invalid')", True),
        ("Traceback (most recent call last):", True),
        ('{"event": "failed to send email", "level": "warning"}', True),
        ('{"event": "Failed to load GeoIP database", "level": "warning"}', False),
    ],
)
def test_failure_lines(text, failed):
    assert bool(smtp_worker.failure_lines(text)) == failed


# The stand-in docker CLI. Node "labnode" is this machine's node; the worker
# task runs there. $FAKE_EXEC_EXIT and $FAKE_EXEC_OUTPUT shape `docker exec`.
FAKE_DOCKER = textwrap.dedent(
    """\
    #!/bin/sh
    printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
    case "$1" in
    info) printf 'labnode\\ttrue\\n' ;;
    service)
        case "$2" in
        ps) printf 'aaa111\\tlabnode\\tShutdown 1 hour ago\\n%s\\tlabnode\\tRunning 5 minutes ago\\n' "$FAKE_TASK_ID" ;;
        logs) printf '%s\\n' 'authentik_worker.1@labnode | {"event": "Sending mail", "to": ["admin@lab.test"]}' 'authentik_worker.1@labnode | {"event": "Task finished"}' ;;
        esac ;;
    ps) [ "$5" = "label=com.docker.swarm.task.id=$FAKE_TASK_ID" ] && echo c0ffee0123456789 ;;
    exec) printf '%s\\n' "$FAKE_EXEC_OUTPUT"; exit "${FAKE_EXEC_EXIT:-0}" ;;
    *) echo "unexpected: $*" >&2; exit 2 ;;
    esac
    """
)


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    """Put the stand-in docker first on PATH; return the file that logs its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_TASK_ID", FULL_ID)
    monkeypatch.setenv("FAKE_EXEC_OUTPUT", '{"event": "Successfully sent mail."}')
    return log


def run_task(capsys, **options) -> tuple[int, str]:
    try:
        smtp.send_test(Context(), env="test", via="authentik", **options)
        code, message = 0, ""
    except Exit as error:
        code, message = error.code, str(error.message)
    captured = capsys.readouterr()
    return code, captured.out + captured.err + message


def test_via_authentik_runs_ak_in_task_container(fake_docker, make_env, capsys):
    make_env("test")
    code, text = run_task(capsys, to="admin@lab.test")
    calls = fake_docker.read_text().splitlines()
    assert code == 0, text
    assert calls[0] == "info --format {{.Name}}\t{{.Swarm.ControlAvailable}}"
    assert calls[1].startswith("service ps --no-trunc --filter desired-state=running")
    assert calls[1].endswith("authentik_worker")
    assert (
        calls[2]
        == f"ps -q --no-trunc --filter label=com.docker.swarm.task.id={FULL_ID}"
    )
    assert calls[3] == "exec c0ffee0123456789 ak test_email admin@lab.test"
    assert calls[4].startswith("service logs --no-task-ids --since ")
    assert "[ak test_email] ok: exit code 0" in text
    assert "Sending mail" in text
    assert "Task finished" not in text


@pytest.mark.parametrize(
    "exit_code, exec_output, expected",
    [
        ("1", "CommandError: something broke", "[ak test_email] failed: exit code 1"),
        (
            "0",
            "smtplib.SMTPAuthenticationError: (535, b'5.7.8 invalid')",
            "exit code 0, but the output reports",
        ),
    ],
    ids=["exit code", "error in output"],
)
def test_via_authentik_failure_exits_one(
    fake_docker, make_env, capsys, monkeypatch, exit_code, exec_output, expected
):
    make_env("test")
    monkeypatch.setenv("FAKE_EXEC_EXIT", exit_code)
    monkeypatch.setenv("FAKE_EXEC_OUTPUT", exec_output)
    code, text = run_task(capsys, to="admin@lab.test")
    assert code == 1
    assert expected in text
    assert "ak test_email failed" in text


def test_via_authentik_no_running_task(fake_docker, make_env, capsys, monkeypatch):
    make_env("test")
    monkeypatch.setenv("FAKE_TASK_ID", "")
    code, text = run_task(capsys, to="admin@lab.test")
    assert code == 1
    assert "has no running task" in text


def test_via_authentik_rejects_probe(make_env, capsys):
    make_env("test")
    code, text = run_task(capsys, to="admin@lab.test", probe=True)
    assert code == 1
    assert "--via direct only" in text
