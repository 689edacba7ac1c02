"""`haproxy.reload` of the lab's HAProxy under steady load.

Each run renders a configuration that differs from the installed one (it
flips HAPROXY_STICKY in a copy of env/lab.env), so every reload installs a
new file and starts new workers. The load runs from LEAD seconds before the
task starts until LEAD seconds after it exits. Runs alternate between the
flipped and the original value. A reload with env/lab.env itself at the
end, not measured, puts the lab's own configuration back, also when a run
fails.
"""

import re
import tempfile
from pathlib import Path

from authops.settings import load_settings
from bench.envs import write_lab_copy
from bench.labrun import invoke, lab_target, settle
from bench.load import LoadGenerator, summarize_records
from bench.stats import spread

LEAD = 2.0  # seconds of load before and after the reload
RATE = 40.0  # requests per second
THREADS = 8
WORKER_PIDS = re.compile(r"worker pid (\d+) -> (\d+)")


def reload_once(env_dir: Path, settings, log) -> dict:
    """Reload once under load; return the task's outcome and the load's figures."""
    target = lab_target(settings)
    generator = LoadGenerator(
        target, rate=RATE, concurrency=THREADS, max_duration=300
    ).start()
    generator.stopping.wait(LEAD)
    task = invoke("haproxy.reload", "--env", "lab", env_dir=env_dir, timeout=120)
    generator.stopping.wait(LEAD)
    result = generator.stop()
    if task.exit_code != 0 or "changed: reloaded" not in task.output:
        raise RuntimeError(f"haproxy.reload did not reload:\n{task.output}")
    during = result.between(result.offset(task.started), result.offset(task.ended))
    pids = WORKER_PIDS.search(task.output)
    return {
        "reload_seconds": task.seconds,
        "workers": list(pids.groups()) if pids else None,
        "all": summarize_records(result.records),
        "during": summarize_records(during),
        "reload_window": [result.offset(task.started), result.offset(task.ended)],
        "load": result.as_json(),
    }


def run(runs: int, log=print) -> dict:
    settings = load_settings("lab")
    original = settings.get("HAPROXY_STICKY")
    flipped = "false" if original == "true" else "true"
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="authops-bench-reload-") as temporary:
            env_dir = Path(temporary)
            for number in range(runs):
                value = flipped if number % 2 == 0 else original
                write_lab_copy(env_dir, HAPROXY_STICKY=value)
                settle(settings.stack_name, lab_target(settings), log)
                figures = reload_once(env_dir, settings, log)
                figures["sticky"] = value
                results.append(figures)
                log(
                    f"reload run {number + 1}/{runs}: {figures['all']['sent']} sent, "
                    f"{figures['all']['failed']} failed, "
                    f"{figures['during']['sent']} during the reload "
                    f"({figures['reload_seconds']:.1f} s)"
                )
    finally:
        restore_lab_config(log)
    target = lab_target(settings)
    return {
        "runs": results,
        "summary": summarize(results),
        "rate": RATE,
        "lead": LEAD,
        "target": f"{target.address}:{target.port}",
    }


def restore_lab_config(log) -> None:
    """Reload with env/lab.env itself; it reports unchanged when nothing differs."""
    restored = invoke("haproxy.reload", "--env", "lab", timeout=120)
    if restored.exit_code != 0:
        log(f"restoring the lab's HAProxy configuration failed:\n{restored.output}")


def summarize(results: list[dict]) -> dict:
    """Return median, min and max of each figure over the runs."""
    return {
        "sent": spread([run["all"]["sent"] for run in results]),
        "failed": spread([run["all"]["failed"] for run in results]),
        "sent_during": spread([run["during"]["sent"] for run in results]),
        "failed_during": spread([run["during"]["failed"] for run in results]),
        "reload_seconds": spread([run["reload_seconds"] for run in results]),
        "latency_p99": spread([run["all"]["latency_p99"] for run in results]),
    }
