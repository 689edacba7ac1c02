"""The lab as the scenarios use it: bring it up, wait until it is quiet, run tasks.

Other people may use the lab while the bench runs. So before each measured
run the bench waits until no deploy lock is held on the stack, every service
has converged, and requests through HAProxy succeed. A run then starts from
a healthy lab and measures only its own change.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from authops import REPO_ROOT
from authops.labenv import CA_CERT
from authops.localsvc import docker
from authops.settings import Settings
from authops.stacklock import lock_path
from bench.load import LoadGenerator, Target

LOGIN_PATH = "/if/flow/default-authentication-flow/"  # a page; returns 200
SETTLE_TIMEOUT = 600  # seconds to wait for a quiet, healthy lab
HEALTHY_STREAK = 20  # consecutive successful requests that count as healthy
QUIET_STATES = ("", "completed", "rollback_completed")


@dataclass
class TaskRun:
    """One `invoke` process: its exit code, output and monotonic start and end."""

    command: list[str]
    exit_code: int
    output: str
    started: float
    ended: float
    wall_ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def invoke(
    *arguments: str,
    env_dir: Path | None = None,
    timeout: float = 900,
    extra_env: dict[str, str] | None = None,
) -> TaskRun:
    """Run `invoke ARGUMENTS` from the checkout; `env_dir` selects OPS_ENV_DIR."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OPS_ENV", "OPS_ENV_DIR")
    }
    if env_dir is not None:
        environment["OPS_ENV_DIR"] = str(env_dir)
    environment.update(extra_env or {})
    command = [sys.executable, "-m", "invoke", *arguments]
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        exit_code, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        exit_code = -1
        output = f"timed out after {timeout} s\n{expired.stdout or ''}"
    return TaskRun(command, exit_code, output, started, time.monotonic(), time.time())


def lab_up(log) -> None:
    """Run `invoke lab.up` (idempotent) and fail with its output if it fails."""
    log("invoke lab.up")
    run = invoke("lab.up", timeout=1800)
    if run.exit_code != 0:
        raise RuntimeError(
            f"invoke lab.up failed (exit {run.exit_code}):\n{run.output}"
        )


def lab_target(settings: Settings) -> Target:
    """Return the load target: the lab's HAProxy, verified against the lab CA."""
    return Target(
        "127.0.0.1",
        int(settings.get("HAPROXY_BIND_PORT")),
        settings.domain,
        path=LOGIN_PATH,
        ca_file=CA_CERT,
        timeout=10.0,
    )


def stack_services(stack: str) -> list[dict]:
    listed = docker(
        "service",
        "ls",
        "-q",
        "--filter",
        f"label=com.docker.stack.namespace={stack}",
    ).stdout.split()
    if not listed:
        return []
    return json.loads(docker("service", "inspect", *listed).stdout)


def running_replicas(service: dict) -> int:
    tasks = docker(
        "service",
        "ps",
        "-q",
        "--filter",
        "desired-state=running",
        service["ID"],
    ).stdout.split()
    if not tasks:
        return 0
    inspected = json.loads(docker("inspect", *tasks).stdout)
    return sum(1 for task in inspected if task["Status"]["State"] == "running")


def stack_quiet(stack: str) -> str | None:
    """Return why the stack is not quiet (lock held, update running, replicas missing), or None."""
    if Path(lock_path(stack)).exists():
        return f"deploy lock {lock_path(stack)} is held"
    services = stack_services(stack)
    if not services:
        return f"stack {stack} has no services"
    for service in services:
        name = service["Spec"]["Name"]
        state = (service.get("UpdateStatus") or {}).get("State", "")
        if state not in QUIET_STATES:
            return f"{name} update state is {state}"
        expected = service["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
        running = running_replicas(service)
        if running < expected:
            return f"{name} runs {running}/{expected} tasks"
    return None


def serves(target: Target, streak: int = HEALTHY_STREAK) -> bool:
    """Return whether `streak` requests in a row succeed through `target`."""
    generator = LoadGenerator(
        target, rate=20, concurrency=2, max_requests=streak, max_duration=30
    ).start()
    generator.wait(60)
    result = generator.stop()
    return len(result.records) == streak and not result.failures()


def settle(stack: str, target: Target, log, timeout: float = SETTLE_TIMEOUT) -> float:
    """Wait until the stack is quiet and serves; return the seconds waited."""
    started = time.monotonic()
    reported = None
    while True:
        problem = stack_quiet(stack)
        if problem is None and not serves(target):
            problem = f"requests through {target.address}:{target.port} fail"
        if problem is None:
            return time.monotonic() - started
        if problem != reported:
            log(f"waiting for the lab: {problem}")
            reported = problem
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the lab did not settle within {timeout} s: {problem}")
        time.sleep(3)
