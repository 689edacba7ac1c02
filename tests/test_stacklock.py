"""The deploy lock and the audit line, on `local` with a lock folder of the test's own."""

import os
import time

import pytest

from authops import stacklock
from authops.errors import OpsError
from authops.hosts import connect
from authops.stackaudit import audit_line

STACK = "locktest"


@pytest.fixture
def host(tmp_path, monkeypatch):
    monkeypatch.setattr(stacklock, "LOCK_DIR", str(tmp_path / "locks"))
    return connect("local")


def age_lock(seconds: int) -> None:
    path = stacklock.lock_path(STACK)
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_lock_taken_and_released(host):
    token = stacklock.acquire(host, STACK, "deploy", 600, False)
    assert os.path.isdir(stacklock.lock_path(STACK))
    stacklock.release(host, STACK, token)
    assert not os.path.exists(stacklock.lock_path(STACK))


def test_lock_held_rejects_naming_holder(host):
    stacklock.acquire(host, STACK, "rollback", 600, False)
    with pytest.raises(OpsError) as caught:
        stacklock.acquire(host, STACK, "deploy", 600, False)
    message = str(caught.value)
    assert stacklock.operator_name() in message
    assert f"pid {os.getpid()}" in message
    assert "rollback" in message
    assert "--break-lock" in message


def test_break_lock_rejects_fresh_lock(host):
    stacklock.acquire(host, STACK, "deploy", 600, False)
    with pytest.raises(OpsError, match="older than 600 s"):
        stacklock.acquire(host, STACK, "deploy", 600, True)


def test_break_lock_takes_stale_lock(host):
    first = stacklock.acquire(host, STACK, "deploy", 600, False)
    age_lock(601)
    second = stacklock.acquire(host, STACK, "deploy", 600, True)
    assert second != first
    holder = stacklock.read_holder(host, stacklock.lock_path(STACK))
    assert holder is not None
    assert holder.age < 600


def test_release_keeps_lock_taken_over(host):
    first = stacklock.acquire(host, STACK, "deploy", 600, False)
    age_lock(601)
    stacklock.acquire(host, STACK, "deploy", 600, True)
    stacklock.release(host, STACK, first)
    assert os.path.isdir(stacklock.lock_path(STACK))


def test_lock_context_releases_on_error(host):
    with pytest.raises(RuntimeError), stacklock.stack_lock(host, STACK, "deploy", 600):
        raise RuntimeError("deploy failed")
    assert not os.path.exists(stacklock.lock_path(STACK))


def test_audit_line_one_line():
    line = audit_line("deploy", "sso", "img:1", "failed: a\nb  c")
    assert line.endswith(" deploy stack=sso image=img:1 result=failed: a b c\n")
    assert line.count("\n") == 1
