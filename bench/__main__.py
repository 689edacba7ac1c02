"""Run the benchmarks on the lab and write docs/benchmarks.md: `python -m bench`.

Brings the lab up with `invoke lab.up` (idempotent), runs each scenario the
chosen number of times, writes every figure and every request's record to
bench/results/TIMESTAMP.json, and renders the page from that data. A
scenario that fails is recorded as failed, the others still run, and the
exit code is 1.
"""

import argparse
import json
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from authops import REPO_ROOT
from bench import detection, failover, machine, overhead, reload, report, rolling
from bench.labrun import lab_up

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PAGE = REPO_ROOT / "docs" / "benchmarks.md"
SCENARIOS = {
    "overhead": overhead.run,
    "reload": reload.run,
    "deploy": rolling.run,
    "detection": detection.run,
    "failover": failover.run,
}
NEEDS_LAB = {"overhead", "reload", "deploy", "detection"}
# Runs per scenario. The slow ones (a deploy takes about 40 s, a failover
# run up to 150 s) run fewer times, to keep `make bench` within about 20
# minutes on 2 cores.
RUNS = {
    "full": {"overhead": 5, "reload": 5, "deploy": 3, "detection": 3, "failover": 3},
    "quick": {"overhead": 2, "reload": 2, "deploy": 1, "detection": 1, "failover": 1},
}


class Log:
    """Progress lines on stdout, each with the minutes and seconds since the start."""

    def __init__(self):
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Run each scenario once or twice instead of three to five times.",
    )
    parser.add_argument(
        "--runs",
        type=int,
        help="Run every scenario this many times (overrides --quick).",
    )
    parser.add_argument(
        "--only",
        help=f"Comma-separated scenarios to run, from: {', '.join(SCENARIOS)}.",
    )
    parser.add_argument(
        "--skip-lab-up",
        action="store_true",
        help="Do not run `invoke lab.up` first; the lab must already be up.",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="Measure nothing: write the page from a results file of an earlier run.",
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="Where to write the page (default: docs/benchmarks.md, or beside the "
        "JSON under bench/results/ when --only is given).",
    )
    return parser.parse_args(argv)


def chosen_scenarios(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}"
        )
    return names


def run_counts(arguments: argparse.Namespace, names: list[str]) -> dict[str, int]:
    if arguments.runs is not None:
        if arguments.runs < 1:
            raise SystemExit("--runs must be 1 or more")
        return {name: arguments.runs for name in names}
    table = RUNS["quick" if arguments.quick else "full"]
    return {name: table[name] for name in names}


def run_mode(arguments: argparse.Namespace) -> str:
    if arguments.runs is not None:
        return f"--runs {arguments.runs}"
    return "--quick" if arguments.quick else "full"


def run_scenarios(
    runs: dict[str, int], results: dict, log: Log, json_path: Path
) -> bool:
    """Run each scenario in turn, saving the results after each; return whether all succeeded."""
    succeeded = True
    for name, count in runs.items():
        log(f"scenario {name}: {count} run(s)")
        try:
            results["scenarios"][name] = SCENARIOS[name](count, log)
        except Exception as error:  # recorded on the page; the other scenarios go on
            traceback.print_exc()
            log(f"scenario {name} failed: {error}")
            results["scenarios"][name] = {"error": str(error).splitlines()[0]}
            succeeded = False
        save(results, json_path, log)
    return succeeded


def save(results: dict, json_path: Path, log: Log) -> None:
    results["duration_seconds"] = time.monotonic() - log.started
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that each scenario's clean-up still runs."""
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))


def resummarize(results: dict) -> None:
    """Recompute each scenario's summary from its runs, with the current summaries."""
    scenarios = results["scenarios"]
    sources = {
        "reload": (reload.summarize, "runs"),
        "deploy": (rolling.summarize, "runs"),
        "detection": (detection.summarize, "runs"),
        "failover": (failover.summarize, "modes"),
    }
    for name, (summarize, key) in sources.items():
        if key in scenarios.get(name, {}):
            scenarios[name]["summary"] = summarize(scenarios[name][key])


def render_saved(path: Path, page: Path | None) -> int:
    """Write the page from an earlier run's results file."""
    results = json.loads(path.read_text())
    resummarize(results)
    report.write(results, page or PAGE)
    print(f"wrote {page or PAGE} from {path}")
    return 0


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.render:
        return render_saved(arguments.render, arguments.report)
    if os.geteuid() != 0:
        print("the bench drives the lab (dockerd, HAProxy, sshd): run it as root")
        return 1
    names = chosen_scenarios(arguments.only)
    runs = run_counts(arguments, names)
    log = Log()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = {
        "mode": run_mode(arguments),
        "runs": runs,
        "machine": {},
        "scenarios": {},
        "versions": {},
        "results_file": f"{stamp}.json",
    }
    exit_on_sigterm()
    json_path = RESULTS_DIR / results["results_file"]
    if NEEDS_LAB & set(names) and not arguments.skip_lab_up:
        lab_up(log)
    # After lab.up, which starts dockerd: `docker version` needs the daemon.
    results["machine"] = machine.describe()
    succeeded = run_scenarios(runs, results, log, json_path)

    overhead_data = results["scenarios"].get("overhead", {})
    if "bootstrap" in overhead_data:
        results["versions"]["ansible"] = overhead_data["bootstrap"]["ansible_version"]
    save(results, json_path, log)
    page = arguments.report or (
        json_path.with_suffix(".md") if arguments.only else PAGE
    )
    report.write(results, page)
    log(f"wrote {json_path} and {page}")
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
