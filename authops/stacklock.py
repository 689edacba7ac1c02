"""The deploy lock on the swarm manager: one operator changes a stack at a time.

The lock is a directory, created with `mkdir`, which either succeeds or
fails atomically. A file in it records who holds the lock, since when, and
the process and action. A lock older than the deploy timeout counts as
stale and can be broken with `--break-lock`.
"""

import getpass
import json
import os
import secrets
import shlex
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from authops import output
from authops.errors import OpsError
from authops.hosts import Host

LOCK_DIR = "/var/lib/authops/locks"


@dataclass(frozen=True)
class LockHolder:
    who: str
    since: str
    pid: str
    action: str
    age: int  # seconds since the lock was taken, by the manager's clock

    def describe(self) -> str:
        return f"{self.who} since {self.since} (pid {self.pid}, {self.action})"


def operator_name() -> str:
    """Return user@host of the person running this tool, for locks and the audit log."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def lock_path(stack: str) -> str:
    return f"{LOCK_DIR}/{stack}.lock"


def try_acquire(host: Host, path: str, record: str) -> bool:
    quoted = shlex.quote(path)
    command = (
        f"mkdir -p {shlex.quote(LOCK_DIR)} && mkdir {quoted} 2>/dev/null "
        f"&& cat > {quoted}/owner"
    )
    return host.run(command, stdin=record).ok


def read_holder(host: Host, path: str) -> LockHolder | None:
    """Return who holds the lock at `path`, or None when it is gone."""
    quoted = shlex.quote(path)
    result = host.run(
        f"test -d {quoted} || exit 3; "
        f"echo $(( $(date +%s) - $(stat -c %Y {quoted}) )); cat {quoted}/owner 2>/dev/null"
    )
    if result.exit_code == 3:
        return None
    age_line, _, record = result.stdout.partition("\n")
    try:
        owner = json.loads(record or "{}")
    except ValueError:
        owner = {}
    return LockHolder(
        who=owner.get("who", "unknown"),
        since=owner.get("since", "unknown time"),
        pid=str(owner.get("pid", "?")),
        action=owner.get("action", "unknown action"),
        age=int(age_line.strip() or 0),
    )


def owner_record(action: str, token: str) -> str:
    """Return the lock file's content: who, since when, which process and action."""
    return json.dumps(
        {
            "who": operator_name(),
            "since": utc_now(),
            "pid": os.getpid(),
            "action": action,
            "token": token,
        }
    )


def acquire(
    host: Host, stack: str, action: str, stale_after: int, break_lock: bool
) -> str:
    """Take the stack's lock on the manager and return its token, or raise naming the holder."""
    path = lock_path(stack)
    token = secrets.token_hex(8)
    record = owner_record(action, token)
    if try_acquire(host, path, record):
        return token

    holder = read_holder(host, path)
    if holder is None and try_acquire(host, path, record):
        return token  # the holder released it in between
    if holder is None:
        raise OpsError(f"{host.name}: could not create the lock {path}")

    check_breakable(host, stack, holder, stale_after, break_lock)
    output.warn(f"breaking the stale lock of {holder.describe()}, {holder.age} s old")
    host.run(f"rm -rf {shlex.quote(path)}")
    if not try_acquire(host, path, record):
        raise OpsError(f"{host.name}: could not take the lock {path} after breaking it")
    return token


def check_breakable(
    host: Host, stack: str, holder: LockHolder, stale_after: int, break_lock: bool
) -> None:
    """Raise, naming the holder, unless --break-lock was given for a stale lock."""
    if not break_lock:
        raise OpsError(
            f"stack {stack} is locked on {host.name} by {holder.describe()}: "
            f"another {holder.action} is running. Wait for it to finish. If it died, "
            f"the lock is stale after {stale_after} s: then run again with --break-lock "
            f"(stack.deploy, stack.rollback and stack.remove take it; for other tasks, "
            f"`invoke stack.deploy --break-lock` breaks the lock and deploys the env file)."
        )
    if holder.age < stale_after:
        raise OpsError(
            f"stack {stack} is locked on {host.name} by {holder.describe()}, taken {holder.age} s ago: "
            f"--break-lock breaks only a lock older than {stale_after} s (the deploy timeout)"
        )


def release(host: Host, stack: str, token: str) -> None:
    """Remove the lock, unless someone broke it and took it over meanwhile."""
    quoted = shlex.quote(lock_path(stack))
    host.run(f"grep -qF {shlex.quote(token)} {quoted}/owner && rm -rf {quoted}")


@contextmanager
def stack_lock(
    host: Host, stack: str, action: str, stale_after: int, break_lock: bool = False
) -> Iterator[None]:
    """Hold the stack's lock on the manager for the duration of the block."""
    token = acquire(host, stack, action, stale_after, break_lock)
    try:
        yield
    finally:
        release(host, stack, token)
