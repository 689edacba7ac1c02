"""A rolling `stack.deploy` of a changed setting on the lab, under load through HAProxy.

Each run deploys a copy of env/lab.env with SMTP_TIMEOUT changed, which
changes the environment of both services, so Swarm replaces every task.
The load runs from LEAD seconds before the task until TAIL seconds after it
exits. Time to converge is the task's run time from start to exit 0, and
the task's own "converged in N s" (the wait after `docker stack deploy`) is
kept beside it. Runs alternate between the changed and the original value.
A deploy of env/lab.env itself at the end, not measured, restores the lab's
own setting, also when a run fails.

The order in which Swarm replaces the server task follows from the env file
(authops.stackfile.server_update_order): with host-mode ports and as many
server replicas as nodes it is stop-first, and requests fail while the only
server task restarts. The figures show that as it is.
"""

import re
import tempfile
from pathlib import Path

from authops.settings import load_settings
from authops.stackfile import server_update_order
from bench.envs import write_lab_copy
from bench.labrun import invoke, lab_target, settle
from bench.load import LoadGenerator, summarize_records
from bench.stats import spread

LEAD = 3.0  # seconds of load before the deploy
TAIL = 5.0  # seconds of load after the deploy exits
RATE = 20.0  # requests per second
THREADS = 16  # room for requests that wait up to the client timeout
CONVERGED = re.compile(r"converged in (\d+) s")


def deploy_once(env_dir: Path, settings, timeout: int) -> dict:
    """Deploy once under load; return the task's outcome and the load's figures."""
    generator = LoadGenerator(
        lab_target(settings), rate=RATE, concurrency=THREADS, max_duration=3600
    ).start()
    generator.stopping.wait(LEAD)
    task = invoke("stack.deploy", "--env", "lab", env_dir=env_dir, timeout=timeout)
    generator.stopping.wait(TAIL)
    result = generator.stop()
    if task.exit_code != 0:
        raise RuntimeError(
            f"stack.deploy failed (exit {task.exit_code}):\n{task.output}"
        )
    converged = CONVERGED.search(task.output)
    summary = summarize_records(result.records)
    return {
        "deploy_seconds": task.seconds,
        "converged_seconds": int(converged[1]) if converged else None,
        "deploy_window": [result.offset(task.started), result.offset(task.ended)],
        "outage_seconds": outage(summary),
        "all": summary,
        "output": task.output,
        "load": result.as_json(),
    }


def outage(summary: dict) -> float:
    """Return the seconds from the first failed request's start to the last one's end."""
    if summary["first_failure"] is None:
        return 0.0
    return summary["last_failure"] - summary["first_failure"]


def run(runs: int, log=print) -> dict:
    settings = load_settings("lab")
    original = settings.get("SMTP_TIMEOUT")
    changed = str(int(original) + 1)
    timeout = settings.number("DEPLOY_TIMEOUT") + 300
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="authops-bench-deploy-") as temporary:
            env_dir = Path(temporary)
            for number in range(runs):
                value = changed if number % 2 == 0 else original
                write_lab_copy(env_dir, SMTP_TIMEOUT=value)
                settle(settings.stack_name, lab_target(settings), log)
                figures = deploy_once(env_dir, settings, timeout)
                figures["smtp_timeout"] = value
                results.append(figures)
                log(
                    f"deploy run {number + 1}/{runs}: converged after "
                    f"{figures['deploy_seconds']:.0f} s, {figures['all']['sent']} sent, "
                    f"{figures['all']['failed']} failed over {figures['outage_seconds']:.1f} s"
                )
    finally:
        restore_lab_stack(timeout, log)
    return {
        "runs": results,
        "nodes": len(settings.nodes),
        "server_replicas": settings.number("SERVER_REPLICAS"),
        "server_update_order": server_update_order(settings),
        "summary": summarize(results),
        "rate": RATE,
    }


def restore_lab_stack(timeout: int, log) -> None:
    """Deploy env/lab.env itself; it reports unchanged when nothing differs."""
    restored = invoke("stack.deploy", "--env", "lab", timeout=timeout)
    if restored.exit_code != 0:
        log(f"restoring the lab's stack failed:\n{restored.output}")


def summarize(results: list[dict]) -> dict:
    """Return median, min and max of each figure over the runs."""
    return {
        "deploy_seconds": spread([run["deploy_seconds"] for run in results]),
        "converged_seconds": spread([run["converged_seconds"] for run in results]),
        "sent": spread([run["all"]["sent"] for run in results]),
        "failed": spread([run["all"]["failed"] for run in results]),
        "outage_seconds": spread([run["outage_seconds"] for run in results]),
        "latency_max": spread([run["all"]["latency_max"] for run in results]),
    }
