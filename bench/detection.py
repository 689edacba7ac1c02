"""Failure detection: how soon a deploy that Swarm rolls back ends in a failure exit.

The bench deploys its own stack (BENCH_STACK) on the lab's swarm from a copy
of env/lab.env with its own published ports and database role, so the lab's
stack keeps serving. A good deploy comes first. Each run then deploys an image tag that
does not exist (AUTHENTIK_TAG=2025.10.99): the new tasks are rejected and
Swarm rolls both services back to the good spec. The same broken stack file
is deployed in two ways, alternating which goes first:

- `invoke stack.deploy`, which watches each service's update and exits 1;
- `docker stack deploy --detach=false` of the text stack.deploy renders,
  the docker CLI's own wait for convergence.

The rollback moment is Swarm's own record: the latest `UpdateStatus.
CompletedAt` among the services whose state is rollback_completed, read
after the command exits. Both timestamps come from this machine's clock.
"""

import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from authops.localsvc import docker, free_port
from authops.stackfile import render_stack
from authops.stacklock import lock_path
from bench import benchdb
from bench.envs import lab_values, settings_in, write_lab_copy
from bench.labrun import invoke, stack_quiet, stack_services
from bench.stats import spread

BENCH_STACK = "authops-bench"
BENCH_DATABASE = "authops_bench_stack"  # the bench stack's database and role
BROKEN_TAG = "2025.10.99"  # no such image on this machine, so Swarm rejects the tasks
COMMAND_TIMEOUT = 600  # seconds; the docker CLI's wait has no timeout of its own
QUIET_TIMEOUT = 300  # seconds for the stack to settle between runs
OUTCOME_WORDS = re.compile(
    r"rollback|rolled back|converged|failed|error", re.IGNORECASE
)
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$")


def docker_time(text: str) -> float:
    """Return a Docker API timestamp (RFC 3339, nanoseconds, UTC) as a Unix time."""
    match = TIMESTAMP.match(text)
    if match is None:
        raise ValueError(f"unexpected Docker timestamp {text!r}")
    fraction = float(match[2]) if match[2] else 0.0
    whole = datetime.fromisoformat(match[1] + "+00:00")
    return whole.timestamp() + fraction


def rollback_record(stack: str) -> dict:
    """Return each service's update state, and when Swarm started the update and ended its rollback.

    Swarm keeps the update's StartedAt through the rollback, so only the
    rollback's end has a timestamp of its own.
    """
    states = {}
    started, completed = [], []
    for service in stack_services(stack):
        status = service.get("UpdateStatus") or {}
        states[service["Spec"]["Name"]] = status.get("State", "")
        if status.get("State") == "rollback_completed":
            started.append(docker_time(status["StartedAt"]))
            completed.append(docker_time(status["CompletedAt"]))
    return {
        "states": states,
        "update_started": min(started) if started else None,
        "rollback_completed": max(completed) if completed else None,
    }


def wait_quiet(stack: str) -> None:
    deadline = time.monotonic() + QUIET_TIMEOUT
    while (problem := stack_quiet(stack)) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"stack {stack} did not settle: {problem}")
        time.sleep(2)


def progress_lines(output: str, count: int = 4) -> list[str]:
    """Return the last lines of a command's output that report the update's outcome."""
    lines = [line.strip() for line in output.splitlines()]
    chosen = [line for line in lines if OUTCOME_WORDS.search(line)]
    return chosen[-count:]


def run_tool(env_dir: Path) -> dict:
    task = invoke(
        "stack.deploy", "--env", "broken", env_dir=env_dir, timeout=COMMAND_TIMEOUT
    )
    return {
        "exit_code": task.exit_code,
        "seconds": task.seconds,
        "wall_exit": task.wall_ended,
        "wall_start": task.wall_ended - task.seconds,
        "reported_failure": "failed" in task.output and "rolled back" in task.output,
        "output_tail": progress_lines(task.output),
        "output": task.output,
    }


def run_cli(stack_file: Path) -> dict:
    started, wall_start = time.monotonic(), time.time()
    result = docker(
        "stack",
        "deploy",
        "--detach=false",
        "-c",
        str(stack_file),
        BENCH_STACK,
        check=False,
        timeout=COMMAND_TIMEOUT,
    )
    return {
        "exit_code": result.returncode,
        "seconds": time.monotonic() - started,
        "wall_exit": time.time(),
        "wall_start": wall_start,
        "reported_failure": result.returncode != 0,
        "output_tail": progress_lines(result.stdout + result.stderr),
        "output": result.stdout + result.stderr,
    }


def measure(command: str, env_dir: Path, stack_file: Path) -> dict:
    wait_quiet(BENCH_STACK)
    figures = run_tool(env_dir) if command == "tool" else run_cli(stack_file)
    record = rollback_record(BENCH_STACK)
    figures.update(record)
    completed = record["rollback_completed"]
    figures["exit_after_rollback"] = (
        None if completed is None else figures["wall_exit"] - completed
    )
    return figures


def prepare(env_dir: Path) -> Path:
    """Write the good and broken env files, deploy the good one, render the broken file."""
    changes = {
        "STACK_NAME": BENCH_STACK,
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(free_port()),
        **benchdb.database_values(BENCH_DATABASE),
    }
    write_lab_copy(env_dir, "bench", **changes)
    write_lab_copy(env_dir, "broken", **changes, AUTHENTIK_TAG=BROKEN_TAG)
    bootstrapped = benchdb.bootstrap(env_dir, "bench", database_port())
    if bootstrapped.exit_code != 0:
        raise RuntimeError(
            f"db.bootstrap for the bench stack failed:\n{bootstrapped.output}"
        )
    good = invoke(
        "stack.deploy", "--env", "bench", env_dir=env_dir, timeout=COMMAND_TIMEOUT
    )
    if good.exit_code != 0:
        raise RuntimeError(f"the bench stack's first deploy failed:\n{good.output}")
    stack_file = env_dir / "broken-stack.yml"
    stack_file.write_text(render_stack(settings_in(env_dir, "broken")).text)
    return stack_file


def remove_volumes(stack: str, timeout: float = 60) -> None:
    """Remove the stack's volumes once its containers are gone (the data folders stay)."""
    deadline = time.monotonic() + timeout
    while True:
        volumes = docker(
            "volume",
            "ls",
            "-q",
            "--filter",
            f"label=com.docker.stack.namespace={stack}",
            check=False,
        ).stdout.split()
        if not volumes:
            return
        removed = docker("volume", "rm", *volumes, check=False)
        if removed.returncode == 0 or time.monotonic() > deadline:
            return
        time.sleep(2)


def database_port() -> int:
    return int(lab_values()["AUTHENTIK_POSTGRESQL__PORT"])


def remove_bench_stack(env_dir: Path) -> None:
    """Remove the bench stack, its secrets, lock, volumes, database and role."""
    invoke("stack.remove", "--env", "bench", "--yes", env_dir=env_dir, timeout=300)
    shutil.rmtree(lock_path(BENCH_STACK), ignore_errors=True)
    remove_volumes(BENCH_STACK)
    benchdb.drop(BENCH_DATABASE, database_port())


def run(runs: int, log=print) -> dict:
    results = {"tool": [], "cli": []}
    with tempfile.TemporaryDirectory(prefix="authops-bench-detect-") as temporary:
        env_dir = Path(temporary)
        try:
            stack_file = prepare(env_dir)
            for number in range(runs):
                order = ("tool", "cli") if number % 2 == 0 else ("cli", "tool")
                for command in order:
                    figures = measure(command, env_dir, stack_file)
                    results[command].append(figures)
                    log(describe(command, number, runs, figures))
        finally:
            remove_bench_stack(env_dir)
    return {
        "runs": results,
        "broken_tag": BROKEN_TAG,
        "summary": summarize(results),
    }


def summarize(results: dict[str, list[dict]]) -> dict:
    """Return, per command, the spread of its exit delay and run time, and its exit codes."""
    return {
        command: {
            "exit_after_rollback": spread([run["exit_after_rollback"] for run in runs]),
            "seconds": spread([run["seconds"] for run in runs]),
            "exit_codes": sorted({run["exit_code"] for run in runs}),
        }
        for command, runs in results.items()
    }


def describe(command: str, number: int, runs: int, figures: dict) -> str:
    after = figures["exit_after_rollback"]
    timing = (
        "no rollback seen" if after is None else f"{after:+.1f} s after the rollback"
    )
    name = "stack.deploy" if command == "tool" else "docker stack deploy"
    return (
        f"detection run {number + 1}/{runs}: {name} exit {figures['exit_code']} "
        f"{timing} ({figures['seconds']:.0f} s in all)"
    )
