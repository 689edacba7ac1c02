"""Write docs/benchmarks.md from the results of one benchmark run.

The page is generated: every figure comes from the results dict that
bench/__main__.py also writes as JSON under bench/results/. Text that
depends on a figure (a target met or missed, and why) is chosen here from
the figures, so the page and the numbers cannot disagree.
"""

from pathlib import Path

from bench.failover import CONFIGS, MODES

DETECTION_TARGET = 5.0  # seconds until HAProxy marks a failed node DOWN
MODE_NAMES = {
    "kill": "process killed (connection refused)",
    "hang": "process stopped with SIGSTOP (no reply)",
    "not-ready": "readiness returns 503, other paths still 200",
}


def seconds(figure: dict | None, digits: int = 1) -> str:
    """Format a spread of seconds as `median s (min–max)`, noting runs without a value."""
    if not figure or figure.get("measured", 0) == 0:
        return "not reached"
    text = f"{figure['median']:.{digits}f} s"
    if figure["runs"] > 1:
        text += f" ({figure['min']:.{digits}f}–{figure['max']:.{digits}f})"
    if figure["measured"] < figure["runs"]:
        text += f", reached in {figure['measured']} of {figure['runs']} runs"
    return text


def detection_text(figure: dict, cap: float) -> str:
    """Format seconds until DOWN; a run without a DOWN shows the time waited."""
    if figure["measured"] == 0:
        return f"not DOWN within {cap:.0f} s"
    text = seconds(figure)
    if figure["measured"] < figure["runs"]:
        text += f" (the other runs: not DOWN within {cap:.0f} s)"
    return text


def count(figure: dict | None) -> str:
    """Format a spread of counts as `median (min–max)`."""
    if not figure or figure.get("measured", 0) == 0:
        return "-"
    median = figure["median"]
    text = f"{median:g}" if isinstance(median, float) else str(median)
    if figure["runs"] > 1:
        text += f" ({figure['min']}–{figure['max']})"
    return text


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}×"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def scenario(results: dict, name: str) -> dict | None:
    """Return a scenario's results, or None when it did not run or failed."""
    found = results["scenarios"].get(name)
    if not found or "error" in found:
        return None
    return found


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


# --- Targets ---------------------------------------------------------------


def reload_met(data: dict | None) -> bool | None:
    return None if data is None else data["summary"]["failed"]["max"] == 0


def deploy_met(data: dict | None) -> bool | None:
    return None if data is None else data["summary"]["failed"]["max"] == 0


def detection_met(data: dict | None, mode: str) -> bool | None:
    if data is None:
        return None
    figure = data["summary"][mode]["project"]["detection_seconds"]
    if figure["measured"] < figure["runs"]:
        return False
    return figure["max"] < DETECTION_TARGET


def lost_met(data: dict | None, mode: str) -> bool | None:
    if data is None:
        return None
    return data["summary"][mode]["project"]["lost"]["max"] == 0


def exit_met(data: dict | None) -> bool | None:
    if data is None:
        return None
    codes = data["summary"]["tool"]["exit_codes"]
    return bool(codes) and all(code not in (0, None) for code in codes)


def summary_rows(results: dict) -> list[list[str]]:
    reload_data = scenario(results, "reload")
    deploy_data = scenario(results, "deploy")
    failover_data = scenario(results, "failover")
    detection_data = scenario(results, "detection")
    rows = []
    if reload_data:
        rows.append(
            [
                "haproxy.reload under load: failed requests",
                "0",
                count(reload_data["summary"]["failed"]),
                verdict(reload_met(reload_data)),
            ]
        )
    if deploy_data:
        rows.append(
            [
                "rolling stack.deploy: failed requests",
                "0",
                count(deploy_data["summary"]["failed"]),
                verdict(deploy_met(deploy_data)),
            ]
        )
        rows.append(
            [
                "rolling stack.deploy: time to converge",
                "-",
                seconds(deploy_data["summary"]["deploy_seconds"], 0),
                "-",
            ]
        )
    if failover_data:
        for mode in MODES:
            figures = failover_data["summary"][mode]
            rows.append(
                [
                    f"failover, {mode}: seconds until DOWN (project; reference)",
                    f"< {DETECTION_TARGET:g} s",
                    detection_text(
                        figures["project"]["detection_seconds"],
                        failover_data["caps"][mode],
                    )
                    + "; "
                    + detection_text(
                        figures["reference"]["detection_seconds"],
                        failover_data["caps"][mode],
                    ),
                    verdict(detection_met(failover_data, mode)),
                ]
            )
            rows.append(
                [
                    f"failover, {mode}: requests lost (project; reference)",
                    "0",
                    f"{count(figures['project']['lost'])}; "
                    f"{count(figures['reference']['lost'])}",
                    verdict(lost_met(failover_data, mode)),
                ]
            )
    if detection_data:
        summary = detection_data["summary"]
        rows.append(
            [
                "failed deploy: exit after the rollback (stack.deploy; docker CLI)",
                "non-zero exit",
                f"exit {codes(summary['tool'])} after "
                f"{seconds(summary['tool']['exit_after_rollback'])}; "
                f"exit {codes(summary['cli'])} after "
                f"{seconds(summary['cli']['exit_after_rollback'])}",
                verdict(exit_met(detection_data)),
            ]
        )
    return rows


def missed_section(results: dict) -> list[str]:
    """List each missed target with the reason, which its section explains in full."""
    reasons = []

    deploy_data = scenario(results, "deploy")
    if deploy_met(deploy_data) is False:
        if (
            deploy_data["server_update_order"] == "stop-first"
            and deploy_data["nodes"] > 1
        ):
            reason = (
                f"{failure_outcomes(deploy_data)} while a node's server task stopped"
            )
        elif deploy_data["server_update_order"] == "stop-first":
            reason = "the lab's server service updates stop-first (one node, host-mode ports)"
        else:
            reason = failure_outcomes(deploy_data)
        reasons.append(f"Rolling deploy, failed requests: {reason}; see section 2.")

    failover_data = scenario(results, "failover")
    for mode in MODES:
        if detection_met(failover_data, mode) is False:
            reasons.append(
                f"Failover ({mode}), seconds until DOWN: a check of a node that never "
                "answers fails only at its timeout; see section 3."
                if mode == "hang"
                else f"Failover ({mode}), seconds until DOWN: see section 3."
            )
        if lost_met(failover_data, mode) is False:
            reasons.append(
                f"Failover ({mode}), requests lost: requests already on the hung "
                "node when it was marked DOWN; see section 3."
                if mode == "hang"
                else f"Failover ({mode}), requests lost: see section 3."
            )

    if reload_met(scenario(results, "reload")) is False:
        reasons.append("haproxy.reload, failed requests: see section 1.")
    detection_data = scenario(results, "detection")
    if exit_met(detection_data) is False:
        reasons.append("Failure detection, exit code: see section 5.")
    if detection_data and rollback_wait_timed_out(detection_data):
        reasons.append(
            "Failure detection, time to exit: stack.deploy waits for the rolled-back "
            "version until a timeout, after the rollback has finished; see section 5."
        )

    if not reasons:
        return []
    return ["Targets missed:", "", *[f"- {reason}" for reason in reasons], ""]


def codes(figures: dict) -> str:
    return "/".join(str(code) for code in figures["exit_codes"]) or "-"


# --- Sections --------------------------------------------------------------


def machine_section(results: dict) -> list[str]:
    machine = results["machine"]
    versions = results.get("versions", {})
    rows = [
        ["date", machine["date"]],
        ["commit", machine["commit"]],
        ["CPU", f"{machine['cpu']}, {machine['cores']} cores"],
        ["memory", f"{machine['memory_gib']} GiB"],
        ["OS and kernel", f"{machine['os']}, Linux {machine['kernel']}"],
        ["HAProxy", machine["haproxy"]],
        [
            "Docker",
            f"CLI {machine['docker_client']}, daemon {machine['docker_daemon']}",
        ],
        ["PostgreSQL", machine["postgres"]],
        ["Python", machine["python"]],
    ]
    if versions.get("ansible"):
        rows.append(["Ansible", versions["ansible"]])
    runs = ", ".join(f"{name} {number}" for name, number in results["runs"].items())
    rows.append(["runs per scenario", f"{runs} ({results['mode']})"])
    return ["## Machine", "", *table(["", ""], rows)]


def reproduce_section(results: dict) -> list[str]:
    return [
        "## How to reproduce",
        "",
        "```sh",
        "make bench                          # every scenario, full run count",
        ".venv/bin/python -m bench --quick   # one or two runs per scenario",
        ".venv/bin/python -m bench --only failover,overhead   # some scenarios",
        "```",
        "",
        "`make bench` runs `make setup`, then `.venv/bin/python -m bench`, which runs",
        "`invoke lab.up` (idempotent) and every scenario, writes the raw figures to",
        "`bench/results/` and rewrites this page. It needs root and the lab's",
        "services on this machine, and every request goes to loopback. The Ansible",
        "comparison creates `bench/.venv` with the pinned packages of",
        "`bench/requirements-ansible.txt` on first use.",
        "",
        f"This page comes from `bench/results/{results['results_file']}`, which",
        "holds every figure and every request's record of the run. The folder is",
        "git-ignored, so the file stays on the machine that ran the bench. The",
        f"run took {results['duration_seconds'] / 60:.1f} min. Each figure is the",
        "median over the runs, with the minimum and maximum in brackets.",
        "",
    ]


def method_section() -> list[str]:
    return [
        "## Method",
        "",
        "Every scenario that puts load on HAProxy uses one load generator",
        "(`bench/load.py`). Worker threads send GET requests on a fixed schedule:",
        "request k is due k/rate seconds after the start. Each request opens a new",
        "TCP and TLS connection and sends `Connection: close` (no keep-alive), and",
        "the generator records for each one when it was due, when it was sent, its",
        "latency and its status or error. A request counts as failed when it gets",
        "an error, no response within the client timeout (10 s), or a status other",
        "than 200. The load stops at a request count, a duration, or when the",
        "scenario stops it, and only loopback addresses are accepted as targets.",
        "",
    ]


def reload_section(results: dict) -> list[str]:
    data = scenario(results, "reload")
    lines = ["## 1. haproxy.reload under load", ""]
    if data is None:
        return lines + [error_text(results, "reload"), ""]
    summary = data["summary"]
    lines += [
        f"`invoke haproxy.reload --env lab` on the lab's HAProxy ({data['target']})",
        f"while {data['rate']:g} requests per second go through it to the stand-in",
        f"authentik, from {data['lead']:g} s before the task until {data['lead']:g} s",
        "after it. Each run flips HAPROXY_STICKY in a copy of env/lab.env, so",
        "every reload installs a changed file and starts new workers.",
        "",
    ]
    lines += table(
        ["figure", "result"],
        [
            ["requests sent", count(summary["sent"])],
            ["requests failed", count(summary["failed"])],
            ["requests in flight during the reload", count(summary["sent_during"])],
            ["of those, failed", count(summary["failed_during"])],
            ["haproxy.reload run time", seconds(summary["reload_seconds"])],
            ["latency, 99th percentile", seconds(summary["latency_p99"], 3)],
        ],
    )
    return lines


def deploy_section(results: dict) -> list[str]:
    data = scenario(results, "deploy")
    lines = ["## 2. Rolling stack.deploy under load", ""]
    if data is None:
        return lines + [error_text(results, "deploy"), ""]
    summary = data["summary"]
    lines += [
        "`invoke stack.deploy --env lab` of a copy of env/lab.env with SMTP_TIMEOUT",
        "changed, which changes both services, while "
        f"{data['rate']:g} requests per second",
        "go through HAProxy. Time to converge is the task's run time to its exit 0;",
        "the task's own wait after `docker stack deploy` is listed beside it.",
        "",
    ]
    lines += table(
        ["figure", "result"],
        [
            ["swarm nodes (SWARM_NODES)", str(data["nodes"])],
            ["server replicas", str(data["server_replicas"])],
            ["server update order", data["server_update_order"]],
            [
                "time to converge (stack.deploy run time)",
                seconds(summary["deploy_seconds"], 0),
            ],
            [
                "wait for convergence, as stack.deploy reports it",
                seconds(summary["converged_seconds"], 0),
            ],
            ["requests sent", count(summary["sent"])],
            ["requests failed", count(summary["failed"])],
            ["first to last failed request", seconds(summary["outage_seconds"])],
            [
                "slowest successful request",
                seconds(summary.get("latency_max"), 2),
            ],
        ],
    )
    if data["server_update_order"] == "stop-first" and data["nodes"] > 1:
        lines += spread_notes(data)
    elif data["server_update_order"] == "stop-first":
        lines += stop_first_notes(summary)
    return lines


def failure_outcomes(data: dict) -> str:
    """Return how the failed requests of all runs ended, as `N OUTCOME` items."""
    counts: dict[str, int] = {}
    for run in data.get("runs", []):
        for outcome, count in run["all"]["failures_by_outcome"].items():
            counts[outcome] = counts.get(outcome, 0) + count
    if not counts:
        return "failed requests"
    return ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))


def spread_notes(data: dict) -> list[str]:
    """Explain a stop-first update with a server task on each of several nodes."""
    summary = data["summary"]
    notes = [
        "On this lab each node runs one server task and publishes its ports in",
        "host mode, so a new task cannot bind the port while the old one holds",
        "it and the stack file gives the service `order: stop-first`. Swarm",
        "updates one task at a time, and while a node has no task HAProxy sends",
        "its requests to the other node: a refused connection is retried there.",
    ]
    if summary["failed"]["max"] > 0:
        notes += [
            f"Some requests failed all the same ({failure_outcomes(data)} in all runs):",
            "see the first to last failed request above for how long.",
        ]
    return notes + [""]


def stop_first_notes(summary: dict) -> list[str]:
    """Explain the gap that a stop-first update of the only server task leaves."""
    notes = [
        "On this lab the server service publishes its ports in host mode and",
        "has as many replicas as the swarm has nodes. A new task cannot bind the",
        "port while the old one holds it, so the stack file gives the service",
        "`order: stop-first`. Swarm stops the only server task before the new one starts,",
        "so for a few seconds no server answers. HAProxy retries a refused",
        "connection up to 3 times, so a request sent in a short gap succeeds",
        "late (the slowest successful request above), and a request sent in a",
        "longer gap ends in a 503.",
    ]
    if summary["failed"]["max"] > 0:
        notes += [
            "The failed requests here come from that gap, which follows from the",
            "lab having a single node.",
        ]
    else:
        notes += [
            "In these runs the retries covered the whole gap, but the gap is close",
            "to what they cover, so other runs can fail requests.",
        ]
    return notes + [
        "With a second node in SWARM_NODES (and one server replica) the order",
        "becomes start-first and the same bench measures that instead.",
        "",
    ]


def failover_section(results: dict) -> list[str]:
    data = scenario(results, "failover")
    lines = ["## 3. Failover", ""]
    if data is None:
        return lines + [error_text(results, "failover"), ""]
    lines += [
        "Two stand-in nodes on loopback (tests/support/backend.py) with two HAProxy",
        "2.6 processes in front of both: one with the project's configuration",
        "(haproxy/haproxy.cfg.j2), one with the reference settings",
        "(bench/reference.cfg.j2: `option httpchk GET /` accepting 200, 302 and 404,",
        "`inter 20s rise 2 fall 3`, no redispatch, no `timeout check`). Both are",
        "rendered by authops.haproxycfg and see the same failure of node b at the",
        "same moment. The time is measured from the failure to the first poll of",
        "`show stat` (every 0.1 s) that reports node b DOWN. Each configuration",
        f"gets {data.get('rate', 10):g} requests per second, and a request is lost when",
        "it fails or gets no response within 10 s. The three failure modes ran",
        "side by side, each on its own pair of nodes; the polls wait at most "
        + ", ".join(f"{data['caps'][mode]:.0f} s ({mode})" for mode in MODES)
        + ".",
        "",
    ]
    rows = []
    for mode in MODES:
        for config in CONFIGS:
            figures = data["summary"][mode][config]
            rows.append(
                [
                    MODE_NAMES[mode] if config == CONFIGS[0] else "",
                    config,
                    detection_text(figures["detection_seconds"], data["caps"][mode]),
                    count(figures["lost"]),
                    count(figures["sent"]),
                    ", ".join(figures["checks"]),
                ]
            )
    lines += table(
        [
            "node b",
            "settings",
            "until DOWN",
            "requests lost",
            "requests sent after the failure",
            "check that marked it DOWN",
        ],
        rows,
    )
    lines += failover_notes(data)
    return lines


def failover_notes(data: dict) -> list[str]:
    notes = [
        "The reference counts any answer to `GET /` as healthy, so a node whose",
        "readiness fails (authentik without its database) stays in rotation. The",
        "stand-in node still serves its other paths, so no request is lost here,",
        "but a real authentik node in that state would fail them.",
        "",
    ]
    if detection_met(data, "hang") is False:
        notes += [
            "A node that accepts connections but never answers is the slow case for",
            "the project's settings too. A check of such a node fails only when its",
            "timeout expires: `timeout connect` 2 s while the connection is pending,",
            "`timeout check` 1.5 s for the answer. `fall 2` needs two failed checks,",
            "so the node stays in rotation for two check timeouts plus the",
            "intervals between checks. The bench measures haproxy/haproxy.cfg.j2 as",
            "it is and does not tune it.",
            "",
        ]
    if lost_met(data, "hang") is False:
        notes += [
            "Requests that HAProxy sent to the hung node before it was marked DOWN",
            "wait for an answer that never comes, until the client gives up: those",
            "are the lost requests of the hang case.",
            "",
        ]
    return notes


def overhead_section(results: dict) -> list[str]:
    data = scenario(results, "overhead")
    lines = ["## 4. Tool overhead", ""]
    if data is None:
        return lines + [error_text(results, "overhead"), ""]
    bootstrap = data["bootstrap"]
    fan = data["fan_out"]
    lines += table(
        ["figure", "result"],
        [
            ["`invoke --list` start-up", seconds(data["invoke_list"]["seconds"], 2)],
            ["`invoke db.bootstrap`, nothing to do", seconds(bootstrap["tool"], 2)],
            [
                "`ansible-playbook bench/ansible/bootstrap.yml`, nothing to do",
                seconds(bootstrap["ansible"], 2),
            ],
            ["Ansible / db.bootstrap", ratio_text(bootstrap["ratio"])],
            [
                f"fan_out to {fan['hosts']} sshd, parallel=True",
                seconds(fan["parallel"], 2),
            ],
            [
                f"fan_out to {fan['hosts']} sshd, parallel=False",
                seconds(fan["serial"], 2),
            ],
            ["serial / parallel", ratio_text(fan["ratio"])],
        ],
    )
    lines += [
        "Both bootstrap tools run as whole processes against the lab's PostgreSQL",
        "server, on a role and database of the bench's own that one run of each",
        "creates first. In the timed runs db.bootstrap reported "
        f"{bootstrap['tool_changes']} changed items and Ansible "
        f"{bootstrap['ansible_changes']} changed tasks. Ansible",
        f"is {bootstrap['ansible_version']}, in bench/.venv; its",
        "community.postgresql modules (postgresql_user, postgresql_db,",
        "postgresql_ext, postgresql_privs) come bundled in the `ansible` package.",
        "",
        "The fan-out runs `hostname` and `date` on each host, as `hosts.check`",
        "does, through authops.hosts.fan_out, with a new SSH connection per host.",
        "All five sshd run on this machine, so the SSH handshakes of the parallel",
        "run compete for the same cores. Hosts on a network, where a connection",
        "mostly waits for round trips, should gain more from running in parallel;",
        "this bench does not measure that.",
        "",
    ]
    return lines


def detection_section(results: dict) -> list[str]:
    data = scenario(results, "detection")
    lines = ["## 5. Failure detection", ""]
    if data is None:
        return lines + [error_text(results, "detection"), ""]
    summary = data["summary"]
    lines += [
        "The bench deploys a stack of its own on the lab's swarm, with its own",
        "ports and database role, once with a good image. Each run then deploys",
        f"AUTHENTIK_TAG={data['broken_tag']}, a tag that does not exist, so",
        "Swarm rejects the new tasks and rolls both services back. The",
        "same broken stack file goes to `invoke stack.deploy` and to",
        "`docker stack deploy --detach=false` (CLI "
        f"{results['machine']['docker_client']}), in alternating order. The",
        "rollback's end is Swarm's own `UpdateStatus.CompletedAt`.",
        "",
    ]
    lines += table(
        ["command", "exit code", "exit after the rollback ended", "run time"],
        [
            [
                "`invoke stack.deploy`",
                codes(summary["tool"]),
                seconds(summary["tool"]["exit_after_rollback"]),
                seconds(summary["tool"]["seconds"], 0),
            ],
            [
                "`docker stack deploy --detach=false`",
                codes(summary["cli"]),
                seconds(summary["cli"]["exit_after_rollback"]),
                seconds(summary["cli"]["seconds"], 0),
            ],
        ],
    )
    return lines + detection_notes(data)


def rollback_wait_timed_out(data: dict) -> bool:
    """Return whether a stack.deploy run waited in vain for the rolled-back version."""
    for run in data["runs"]["tool"]:
        text = run.get("output") or "\n".join(run.get("output_tail", []))
        if "previous version does not serve" in text:
            return True
    return False


def detection_notes(data: dict) -> list[str]:
    summary = data["summary"]
    notes = []
    if exit_met(data):
        notes += [
            "stack.deploy polls each service's update state every 3 s and exits",
            "non-zero once every service has settled, naming each failed one with",
            "the task's error.",
            "",
        ]
    if rollback_wait_timed_out(data):
        notes += [
            "In this run stack.deploy exited long after Swarm had finished the",
            "rollback. After it reports the failure, it waits for the previous",
            "version to serve again (`wait_previous_serving` in",
            "authops/stackdeploy.py). That wait takes a new snapshot of the",
            "services after the rollback has already completed, so the completed",
            "rollback counts as an earlier update and the wait runs to its timeout",
            "(DEPLOY_TIMEOUT minus the time already spent, at least 60 s) and",
            'then reports "the previous version does not serve".',
            "",
        ]
    if summary["cli"]["exit_codes"] == [0]:
        notes += [
            "The docker CLI waits for the rollback too, but then exits 0, so a",
            "script that trusts its exit code takes the failed deploy for a good one.",
            "",
        ]
    return notes


def error_text(results: dict, name: str) -> str:
    found = results["scenarios"].get(name)
    if not found:
        return "Not run in this benchmark run."
    return f"This scenario failed in this run: {found['error']}"


def render(results: dict) -> str:
    """Return the whole page for one benchmark run's results."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (bench/); do not edit by hand. The figures were",
        f"measured on {results['machine']['date']} on the machine described below.",
        "",
        "## Targets",
        "",
    ]
    lines += table(
        ["figure", "target", "result: median (min–max)", "target met"],
        summary_rows(results),
    )
    lines += [
        "Where a row has two results, the target applies to the first, the",
        "project's settings; the second, the reference settings, is there for",
        "comparison.",
        "",
    ]
    lines += missed_section(results)
    for section in (
        machine_section,
        reproduce_section,
    ):
        lines += section(results)
    lines += method_section()
    for section in (
        reload_section,
        deploy_section,
        failover_section,
        overhead_section,
        detection_section,
    ):
        lines += section(results)
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results))
