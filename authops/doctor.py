"""`doctor`: check the whole chain and print one line per check with the fix.

Each check function returns a list of Check results. A check that cannot run
raises OpsError, which `run_checks` turns into a failed line, so that one
broken part does not hide the state of the rest.
"""

import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from invoke.exceptions import Exit

from authops import certinspect, errors, output
from authops.certs import inspect_installed
from authops.dbcheck import check_from_host
from authops.errors import OpsError
from authops.haproxy import host_status, validate_file
from authops.hosts import (
    MAX_CLOCK_OFFSET,
    Host,
    all_host_specs,
    connect,
    fan_out,
    probe_host,
)
from authops.netguard import check_lab_target
from authops.nfs import missing_directories
from authops.settings import Settings, load_settings, problems_of
from authops.smtp_direct import probe as smtp_probe
from authops.stackstatus import service_health
from authops.swarm import find_manager, may_run_authentik, swarm_nodes
from authops.tasking import ENV_HELP, ops_task
from authops.validate import ERROR

CERT_WARNING_DAYS = 21
READY_PATH = "/-/health/ready/"


@dataclass
class Check:
    name: str
    state: str
    detail: str


def check_env(settings: Settings) -> list[Check]:
    _, path, problems, _ = problems_of(settings.env_name)
    failed = [problem for problem in problems if problem.severity == ERROR]
    if failed:
        return [
            Check(
                "env",
                errors.FAILED,
                f"{path}: {failed[0]} ({len(failed)} error(s): run env.check)",
            )
        ]
    if problems:
        return [
            Check(
                "env",
                errors.WARNING,
                f"{path}: {problems[0]} ({len(problems)} warning(s): run env.check)",
            )
        ]
    return [Check("env", errors.OK, f"{path} is valid and private")]


def check_hosts(settings: Settings) -> list[Check]:
    checks = []
    offsets = []
    for spec, probed, error in fan_out(
        all_host_specs(settings), settings.values, probe_host
    ):
        if error is not None:
            checks.append(Check(f"ssh {spec}", errors.FAILED, f"{error}"))
            continue
        name, offset = probed
        offsets.append(offset)
        checks.append(
            Check(
                f"ssh {spec}",
                errors.OK,
                f"hostname {name}, clock offset {offset:+.2f} s",
            )
        )
    if len(offsets) > 1 or offsets:
        spread = max(offsets + [0.0]) - min(offsets + [0.0])
        state = errors.OK if spread <= MAX_CLOCK_OFFSET else errors.FAILED
        detail = f"clocks within {spread:.2f} s of each other and of this machine"
        if state == errors.FAILED:
            detail += (
                f": more than {MAX_CLOCK_OFFSET} s, so SAML fails; fix NTP on the hosts"
            )
        checks.append(Check("clocks", state, detail))
    return checks


def check_swarm(settings: Settings) -> list[Check]:
    host = find_manager(settings)
    try:
        nodes = swarm_nodes(host)
    finally:
        host.close()
    checks = []
    managers = [node for node in nodes if node.get("ManagerStatus")]
    unreachable = [
        node["Hostname"]
        for node in managers
        if node["ManagerStatus"] not in ("Leader", "Reachable")
    ]
    state = errors.FAILED if unreachable else errors.OK
    detail = f"{len(managers)} manager(s)" + (
        f"; unreachable: {', '.join(unreachable)}" if unreachable else ""
    )
    if len(managers) % 2 == 0:
        state = errors.WARNING if state == errors.OK else state
        detail += ": an even number of managers tolerates no more failures than one fewer; use 1, 3 or 5"
    checks.append(Check("swarm managers", state, detail))
    not_ready = [node["Hostname"] for node in nodes if node.get("Status") != "Ready"]
    drained = [
        node["Hostname"] for node in nodes if node.get("Availability") != "Active"
    ]
    if not_ready:
        checks.append(
            Check(
                "swarm nodes",
                errors.FAILED,
                f"not ready: {', '.join(not_ready)}: check dockerd there",
            )
        )
    else:
        checks.append(Check("swarm nodes", errors.OK, f"{len(nodes)} node(s) ready"))
    if drained:
        checks.append(
            Check(
                "swarm availability",
                errors.WARNING,
                f"not active (drained or paused): {', '.join(drained)}",
            )
        )
    return checks + compare_node_lists(settings, nodes)


def compare_node_lists(settings: Settings, nodes: list[dict]) -> list[Check]:
    """Warn when SWARM_NODES, which HAProxy's backends follow, differs from the swarm.

    A swarm node matches an entry by host name or by address.
    """
    listed = settings.nodes
    nodes = [
        node for node in nodes if may_run_authentik(node, settings.get("PLACEMENT"))
    ]
    missing = [
        node["Hostname"]
        for node in nodes
        if not any(
            entry.name == node["Hostname"] or entry.address == node["Addr"]
            for entry in listed
        )
    ]
    extra = [
        entry.name
        for entry in listed
        if not any(
            entry.name == node["Hostname"] or entry.address == node["Addr"]
            for node in nodes
        )
    ]
    if not missing and not extra:
        return [Check("node list", errors.OK, "SWARM_NODES matches the swarm's nodes")]
    parts = []
    if missing:
        parts.append(
            f"in the swarm but not in SWARM_NODES (no HAProxy backend): {', '.join(missing)}"
        )
    if extra:
        parts.append(f"in SWARM_NODES but not in the swarm: {', '.join(extra)}")
    return [
        Check(
            "node list",
            errors.WARNING,
            "; ".join(parts) + ": fix SWARM_NODES, then haproxy.reload",
        )
    ]


def check_services(settings: Settings) -> list[Check]:
    services = service_health(settings)
    if not services:
        return [
            Check(
                "services",
                errors.FAILED,
                f"stack {settings.stack_name} is not deployed: run stack.deploy",
            )
        ]
    checks = []
    wanted = {
        f"{settings.stack_name}_server": settings.number("SERVER_REPLICAS"),
        f"{settings.stack_name}_worker": settings.number("WORKER_REPLICAS"),
    }
    for service in services:
        detail = f"{service.running}/{service.desired} running, image {service.image}"
        expected = wanted.get(service.name)
        if expected is not None and service.desired != expected:
            detail += f": scaled to {service.desired}, but the env file wants {expected}; run stack.deploy"
            checks.append(Check(f"service {service.name}", errors.FAILED, detail))
            continue
        if service.update_state:
            detail += f", update {service.update_state}"
        if service.healthy:
            checks.append(Check(f"service {service.name}", errors.OK, detail))
            continue
        waiting = Counter(
            task.state for task in service.tasks if task.state != "running"
        )
        if waiting:
            detail += "; tasks " + ", ".join(
                f"{count} {state}" for state, count in sorted(waiting.items())
            )
        errors_seen = sorted({task.error for task in service.tasks if task.error})
        if errors_seen:
            detail += f"; task error: {errors_seen[0]}"
        checks.append(
            Check(
                f"service {service.name}",
                errors.FAILED,
                detail + ": see stack.status and stack.logs",
            )
        )
    return checks


def readiness_command(address: str, settings: Settings) -> str:
    url = f"https://{address}:{settings.get('HTTPS_PORT')}{READY_PATH}"
    host_header = f"Host: {settings.domain}"
    return f"curl -sk -o /dev/null -w '%{{http_code}}' --max-time 5 -H {shlex.quote(host_header)} {shlex.quote(url)}"


def check_readiness(settings: Settings) -> list[Check]:
    """Ask every node's published port for readiness, from each HAProxy host."""

    def probe_nodes(host: Host) -> list[Check]:
        checks = []
        for node in settings.nodes:
            if host.is_local:
                check_lab_target(node.address)
            result = host.run(readiness_command(node.address, settings))
            code = result.stdout.strip() or "no answer"
            name = f"ready {node.name} via {host.name}"
            if code == "200":
                checks.append(
                    Check(
                        name,
                        errors.OK,
                        f"{node.address}:{settings.get('HTTPS_PORT')} answers 200",
                    )
                )
            else:
                checks.append(
                    Check(
                        name,
                        errors.FAILED,
                        f"{node.address}:{settings.get('HTTPS_PORT')} answers {code}: 503 means the database is "
                        "unreachable from the node; no answer means no task publishes the port there",
                    )
                )
        return checks

    return flatten(settings.haproxy_hosts, settings, probe_nodes, "ready")


def check_haproxy(settings: Settings) -> list[Check]:
    def inspect_host(host: Host) -> list[Check]:
        checks = []
        path = settings.get("HAPROXY_CONFIG")
        installed = host.read_file(path)
        if installed is None:
            return [
                Check(
                    f"haproxy {host.name}",
                    errors.FAILED,
                    f"{path} not found: run haproxy.reload",
                )
            ]
        try:
            validate_file(host, path, installed.decode())
            checks.append(
                Check(f"haproxy config {host.name}", errors.OK, f"{path} is valid")
            )
        except OpsError as error:
            checks.append(
                Check(f"haproxy config {host.name}", errors.FAILED, str(error))
            )
        status = host_status(host, settings)
        down = [server for server in status.servers if not server.is_up]
        detail = f"{len(status.servers_up)}/{len(status.servers)} backend servers up"
        if status.config_current is False:
            checks.append(
                Check(
                    f"haproxy {host.name}",
                    errors.WARNING,
                    "runs another file than the installed one: haproxy.reload",
                )
            )
        if down or not status.servers:
            names = ", ".join(f"{server.name} ({server.status})" for server in down)
            checks.append(
                Check(
                    f"haproxy backends {host.name}",
                    errors.FAILED,
                    f"{detail}; down: {names or 'none'}",
                )
            )
        else:
            checks.append(Check(f"haproxy backends {host.name}", errors.OK, detail))
        return checks

    return flatten(settings.haproxy_hosts, settings, inspect_host, "haproxy")


def check_certificates(settings: Settings) -> list[Check]:
    def inspect_host(host: Host) -> list[Check]:
        installed = inspect_installed(host, settings)
        serving = [
            item
            for item in installed
            if any(
                certinspect.name_matches(name, settings.domain)
                for name in item.inspection.names
            )
        ]
        name = f"certificate {host.name}"
        if not serving:
            return [
                Check(
                    name,
                    errors.FAILED,
                    f"no certificate for {settings.domain} in {settings.get('HAPROXY_CERT_DIR')}: run certs.combine",
                )
            ]
        item = serving[0]
        inspection = item.inspection
        if inspection.errors:
            return [
                Check(
                    name,
                    errors.FAILED,
                    f"{item.path}: {'; '.join(inspection.errors)}: renew, then certs.combine",
                )
            ]
        if (
            inspection.days_left is not None
            and inspection.days_left < CERT_WARNING_DAYS
        ):
            return [
                Check(
                    name,
                    errors.WARNING,
                    f"{item.path}: expires in {inspection.days_left} days: renew it",
                )
            ]
        return [Check(name, errors.OK, f"{item.path}: {inspection.summary()}")]

    return flatten(settings.haproxy_hosts, settings, inspect_host, "certificate")


def check_database(settings: Settings) -> list[Check]:
    def check_host(host: Host) -> list[Check]:
        return [
            Check(f"database {name} from {host.name}", state, detail)
            for name, state, detail in check_from_host(host, settings)
        ]

    return flatten(settings.managers, settings, check_host, "database")


def check_nfs(settings: Settings) -> list[Check]:
    host = connect(settings.nfs_ssh_host, settings.values)
    try:
        missing = missing_directories(settings, host)
    finally:
        host.close()
    if missing:
        return [
            Check(
                "nfs",
                errors.FAILED,
                f"missing on {settings.nfs_ssh_host}: {', '.join(missing)}: run nfs.prepare",
            )
        ]
    return [
        Check(
            "nfs",
            errors.OK,
            f"media, templates and certs exist under {settings.get('NFS_EXPORT')}",
        )
    ]


def check_mail(settings: Settings) -> list[Check]:
    phases = smtp_probe(settings, settings.smtp_ca_file)
    failure = next((phase for phase in phases if phase.failed), None)
    target = f"{settings.smtp.host}:{settings.smtp.port}"
    if failure:
        return [
            Check(
                "mail",
                errors.FAILED,
                f"{target}, phase {failure.phase}: {failure.cause or failure.detail}",
            )
        ]
    return [
        Check(
            "mail", errors.OK, f"{target}: connect, TLS and login work (nothing sent)"
        )
    ]


def flatten(
    specs: list[str],
    settings: Settings,
    action: Callable[[Host], list[Check]],
    label: str,
) -> list[Check]:
    checks = []
    for spec, found, error in fan_out(specs, settings.values, action):
        if error is not None:
            checks.append(Check(f"{label} {spec}", errors.FAILED, str(error)))
        else:
            checks.extend(found)
    return checks


CHECKS: tuple[tuple[str, Callable[[Settings], list[Check]]], ...] = (
    ("env file", check_env),
    ("hosts over SSH", check_hosts),
    ("swarm", check_swarm),
    ("services", check_services),
    ("readiness on every node", check_readiness),
    ("haproxy", check_haproxy),
    ("certificate", check_certificates),
    ("database", check_database),
    ("nfs directories", check_nfs),
    ("mail login", check_mail),
)


def run_checks(settings: Settings) -> list[Check]:
    results = []
    for title, function in CHECKS:
        output.phase(title)
        try:
            found = function(settings)
        except OpsError as error:
            found = [Check(title, errors.FAILED, str(error))]
        for check in found:
            output.status(check.name, check.state, check.detail)
        results.extend(found)
    return results


@ops_task(help={"env": ENV_HELP})
def doctor(c, env=None):
    """Check the whole chain: env, hosts, swarm, services, HAProxy, certificate, database, NFS, mail."""
    settings = load_settings(env)
    results = run_checks(settings)
    failed = [check for check in results if check.state == errors.FAILED]
    warnings = [check for check in results if check.state == errors.WARNING]
    summary = f"doctor: {len(results)} checks, {len(failed)} failed, {len(warnings)} warning(s)"
    if failed:
        raise Exit(f"{summary}: {', '.join(check.name for check in failed)}", code=1)
    output.emit(summary)
