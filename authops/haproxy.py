"""Tasks for the HAProxy hosts: render, check, reload, start and status.

A reload on each host shows the diff against the installed file and validates
the new file with the host's own `haproxy -c`. It then keeps a copy of the old
file, moves the new one into place and reloads. Finally it confirms through
the runtime API that new workers run the new file and that a backend server
is UP. A failure after the move restores the old file and reloads it.
"""

import difflib
import os
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from invoke import Collection

from authops import errors, output
from authops.errors import OpsError
from authops.haproxycfg import describe_errors, embedded_checksum, render_config
from authops.haproxyruntime import (
    Running,
    ServerState,
    detect,
    haproxy_binary,
    send_reload,
    server_states,
    show_info,
    wait_for_checks,
    wait_for_new_workers,
)
from authops.haproxyruntime import start as start_on_host
from authops.hosts import Host, fan_out
from authops.settings import Settings, load_settings
from authops.tasking import DRY_RUN_HELP, ENV_HELP, ops_task

BACKUPS_KEPT = 5
CONFIG_MODE = 0o644  # for a first install; a reload keeps the installed file's mode
VALIDATE_TIMEOUT = 60  # seconds for `haproxy -c`, which loads every certificate
TEMPLATE_HELP = "Template to render instead of haproxy/haproxy.cfg.j2 (a path)."


@dataclass
class Outcome:
    """One host's result: its state, a one-line detail and the lines to show above it."""

    state: str
    detail: str
    lines: list[str] = field(default_factory=list)


def config_diff(installed: bytes | None, text: str, path: str) -> list[str]:
    """Return the unified diff from the installed file to the new text."""
    old = (installed or b"").decode(errors="replace").splitlines()
    return list(
        difflib.unified_diff(
            old,
            text.splitlines(),
            fromfile=f"{path} (installed)" if installed is not None else "/dev/null",
            tofile=f"{path} (new)",
            lineterm="",
        )
    )


def validate_file(host: Host, path: str, text: str) -> str:
    """Run the host's `haproxy -c` on `path` and return its version line.

    Raises OpsError naming each rejected line of `text` (the file's content).
    """
    result = host.run(
        f"{haproxy_binary()} -c -f {shlex.quote(path)} 2>&1",
        timeout=VALIDATE_TIMEOUT,
    )
    if not result.ok:
        if result.exit_code == 127:
            raise OpsError(
                f"{host.name}: haproxy is not installed: apt-get install haproxy"
            )
        raise OpsError(
            f"haproxy -c rejected the configuration: {describe_errors(text, result.stdout)}"
        )
    return haproxy_version(host)


def haproxy_version(host: Host) -> str:
    result = host.run(f"{haproxy_binary()} -v 2>&1 | head -n 1")
    return result.stdout.strip() or "haproxy (version unknown)"


def validate_in_temporary_file(host: Host, text: str) -> str:
    """Validate `text` in a temporary file under /tmp on the host, then remove the file."""
    result = host.run("mktemp /tmp/authops-haproxy.XXXXXX", check=True)
    path = result.stdout.strip()
    try:
        host.upload(text.encode(), path, 0o600)
        return validate_file(host, path, text)
    finally:
        host.run(f"rm -f {shlex.quote(path)}")


def staging_path(config: str) -> str:
    directory, name = os.path.split(config)
    return os.path.join(directory, f".{name}.new-{os.getpid()}")


def installed_mode(host: Host, config: str) -> int:
    result = host.run(f"stat -c %a {shlex.quote(config)}")
    return int(result.stdout.strip(), 8) if result.ok else CONFIG_MODE


def back_up(host: Host, config: str) -> str:
    """Copy the installed file to CONFIG.bak-TIMESTAMP and delete all but the newest copies."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = f"{config}.bak-{stamp}"
    suffix = 1
    while host.run(f"test -e {shlex.quote(backup)}").ok:
        backup = f"{config}.bak-{stamp}-{suffix}"
        suffix += 1
    host.run(f"cp -p {shlex.quote(config)} {shlex.quote(backup)}", check=True)
    prune_backups(host, config)
    return backup


def prune_backups(host: Host, config: str) -> None:
    listing = host.run(f"ls -1d {shlex.quote(config)}.bak-* 2>/dev/null")
    backups = sorted(line for line in listing.stdout.splitlines() if line.strip())
    for old in backups[:-BACKUPS_KEPT]:
        host.run(f"rm -f {shlex.quote(old)}")


@dataclass
class Confirmation:
    """Worker pids before and after a reload, and the server states after it."""

    old_pid: str | None
    new_pid: str
    servers: list[ServerState]

    @property
    def servers_up(self) -> list[ServerState]:
        return [state for state in self.servers if state.is_up and state.is_checked]


def reload_and_confirm(
    host: Host, settings: Settings, running: Running, checksum: str | None
) -> Confirmation:
    """Reload HAProxy, wait for workers with `checksum`, and return their server states.

    Raises OpsError when no new worker runs the configuration, or when no
    server is UP although one was before the reload.
    """
    old_pid, servers_up_before = current_workers(host, settings)
    send_reload(host, running)
    info = wait_for_new_workers(host, settings, old_pid, checksum)
    confirmation = Confirmation(old_pid, info.get("Pid", "?"), [])
    confirmation.servers = wait_for_checks(host, settings)
    if not confirmation.servers_up and servers_up_before:
        states = ", ".join(state.describe() for state in confirmation.servers)
        raise OpsError(
            f"no backend server is UP after the reload ({servers_up_before} were before): {states}"
        )
    return confirmation


def current_workers(host: Host, settings: Settings) -> tuple[str | None, int]:
    """Return the running worker's pid and its count of UP servers, or (None, 0)."""
    try:
        pid = show_info(host, settings).get("Pid")
        states = server_states(host, settings)
    except OpsError:
        return None, 0
    return pid, sum(1 for state in states if state.is_up)


def describe_confirmation(running: Running, confirmation: Confirmation) -> str:
    up = len(confirmation.servers_up)
    total = len(confirmation.servers)
    detail = (
        f"reloaded through the {running.manager}, worker pid {confirmation.old_pid} -> "
        f"{confirmation.new_pid}, {up} of {total} servers UP"
    )
    return detail if up else f"{detail}; no server is UP, and none was before"


def server_lines(servers: list[ServerState]) -> list[str]:
    return [f"server {state.describe()}" for state in servers]


def apply_config(
    host: Host, settings: Settings, text: str, *, dry_run: bool = False
) -> Outcome:
    """Install `text` as HAPROXY_CONFIG on the host and reload HAProxy (see module doc)."""
    # NOTE: nothing serialises two runs against the same host; run one at a time.
    config = settings.get("HAPROXY_CONFIG")
    installed = host.read_file(config)
    if installed == text.encode():
        return Outcome(errors.UNCHANGED, f"{config} is unchanged; no reload")
    diff = config_diff(installed, text, config)

    if dry_run:
        version = validate_in_temporary_file(host, text)
        return Outcome(
            errors.WOULD_CHANGE,
            f"valid ({version}); would back up {config}, install the new file and reload",
            diff,
        )

    staged = stage(host, config, text, installed)
    try:
        backup = back_up(host, config) if installed is not None else None
        host.run(f"mv -f {shlex.quote(staged)} {shlex.quote(config)}", check=True)
    except OpsError:
        host.run(f"rm -f {shlex.quote(staged)}")
        raise
    kept = f"previous file kept as {backup}" if backup else "first install"

    running = detect(host, settings)
    if running is None:
        return Outcome(
            errors.CHANGED,
            f"installed ({kept}); haproxy is not running, so nothing was reloaded: "
            "start it with `invoke haproxy.start`",
            diff,
        )
    try:
        confirmation = reload_and_confirm(
            host, settings, running, embedded_checksum(text)
        )
    except OpsError as error:
        restored = roll_back(host, settings, config, installed)
        return Outcome(errors.FAILED, f"{error}; {restored}", diff)
    state = errors.CHANGED if confirmation.servers_up else errors.WARNING
    detail = f"{describe_confirmation(running, confirmation)}; {kept}"
    return Outcome(state, detail, diff + server_lines(confirmation.servers))


def stage(host: Host, config: str, text: str, installed: bytes | None) -> str:
    """Upload `text` beside `config` and validate it there; return the staged path."""
    mode = installed_mode(host, config) if installed is not None else CONFIG_MODE
    directory = os.path.dirname(config) or "/"
    host.run(f"mkdir -p {shlex.quote(directory)}", check=True)
    staged = staging_path(config)
    host.upload(text.encode(), staged, mode)
    try:
        validate_file(host, staged, text)
    except OpsError:
        host.run(f"rm -f {shlex.quote(staged)}")
        raise
    return staged


def roll_back(
    host: Host, settings: Settings, config: str, previous: bytes | None
) -> str:
    """Put the previous file back and reload it; return what was done, for the report."""
    if previous is None:
        return f"no previous {config} existed, so the new file stays in place"
    host.write_file(config, previous, mode=installed_mode(host, config))
    return f"restored the previous {config}; {reload_again(host, settings)}"


def reload_again(host: Host, settings: Settings) -> str:
    """Reload HAProxy without checking servers, to undo a change; return what happened."""
    running = detect(host, settings)
    if running is None:
        return "haproxy is not running"
    installed = host.read_file(settings.get("HAPROXY_CONFIG")) or b""
    try:
        old_pid, _ = current_workers(host, settings)
        send_reload(host, running)
        wait_for_new_workers(
            host,
            settings,
            old_pid,
            embedded_checksum(installed.decode(errors="replace")),
        )
    except OpsError as error:
        return f"reloading it failed too: {error}"
    return "reloaded it"


def reload_hosts(
    settings: Settings, text: str, *, dry_run: bool = False
) -> list[tuple[str, Outcome | None, OpsError | None]]:
    """Apply the configuration on every HAProxy host in parallel."""
    return fan_out(
        settings.haproxy_hosts,
        settings.values,
        lambda host: apply_config(host, settings, text, dry_run=dry_run),
    )


def report_outcomes(
    action: str, results: list[tuple[str, Outcome | None, OpsError | None]]
) -> None:
    """Print each host's lines and status line, then fail once naming every failed host."""
    report = errors.Report(action)
    for spec, outcome, error in results:
        if error is not None:
            report.record(spec, errors.FAILED, str(error))
            continue
        for line in outcome.lines:
            output.info(line)
        report.record(spec, outcome.state, outcome.detail)
    report.finish()


def template_path(template: str | None) -> Path | None:
    return Path(template).resolve() if template else None


@ops_task(help={"env": ENV_HELP, "template": TEMPLATE_HELP})
def render(c, env=None, template=None):
    """Print the HAProxy configuration as haproxy.reload would install it."""
    settings = load_settings(env)
    text = render_config(settings, template_path(template))
    sys.stdout.write(output.redact(text))


@ops_task(help={"env": ENV_HELP, "template": TEMPLATE_HELP})
def check(c, env=None, template=None):
    """Validate the rendered configuration with haproxy -c on every HAProxy host."""
    settings = load_settings(env)
    text = render_config(settings, template_path(template))
    output.phase(f"validating the configuration on {', '.join(settings.haproxy_hosts)}")
    results = fan_out(
        settings.haproxy_hosts,
        settings.values,
        lambda host: Outcome(
            errors.OK, f"valid ({validate_in_temporary_file(host, text)})"
        ),
    )
    report_outcomes("haproxy.check", results)


@ops_task(
    help={
        "env": ENV_HELP,
        "dry_run": "Show the diff and validate the new file with haproxy -c in a "
        "temporary file under /tmp on each host (removed afterwards); install and "
        "reload nothing.",
        "template": TEMPLATE_HELP,
    }
)
def reload(c, env=None, dry_run=False, template=None):
    """Install the rendered configuration on every HAProxy host and reload it safely."""
    settings = load_settings(env)
    text = render_config(settings, template_path(template))
    verb = "checking" if dry_run else "reloading"
    output.phase(f"{verb} haproxy on {', '.join(settings.haproxy_hosts)}")
    report_outcomes("haproxy.reload", reload_hosts(settings, text, dry_run=dry_run))


def start_haproxy(host: Host, settings: Settings) -> Outcome:
    """Start HAProxy on the host unless it runs, and report its master's pid."""
    running = detect(host, settings)
    if running is not None:
        return Outcome(errors.UNCHANGED, f"already running ({describe(running)})")
    started = start_on_host(host, settings)
    return Outcome(errors.CHANGED, f"started ({describe(started)})")


def describe(running: Running) -> str:
    if running.master_pid:
        return f"master pid {running.master_pid}"
    return f"managed by {running.manager}"


@ops_task(help={"env": ENV_HELP, "dry_run": DRY_RUN_HELP})
def start(c, env=None, dry_run=False):
    """Start HAProxy on every HAProxy host where it does not run."""
    settings = load_settings(env)
    output.phase(f"starting haproxy on {', '.join(settings.haproxy_hosts)}")

    def start_one(host: Host) -> Outcome:
        if dry_run:
            running = detect(host, settings)
            if running is not None:
                return Outcome(
                    errors.UNCHANGED, f"already running ({describe(running)})"
                )
            return Outcome(errors.WOULD_CHANGE, "would start haproxy")
        return start_haproxy(host, settings)

    results = fan_out(settings.haproxy_hosts, settings.values, start_one)
    report_outcomes("haproxy.start", results)


@dataclass
class HostStatus:
    """HAProxy on one host as its runtime API reports it."""

    worker_pid: str
    config_current: bool | None
    servers: list[ServerState]

    @property
    def servers_up(self) -> list[ServerState]:
        return [state for state in self.servers if state.is_up]


def host_status(host: Host, settings: Settings) -> HostStatus:
    """Return the worker pid, whether it runs the installed file, and each server's state.

    `config_current` is None when the installed file carries no checksum.
    """
    info = show_info(host, settings)
    installed = host.read_file(settings.get("HAPROXY_CONFIG"))
    checksum = (
        embedded_checksum(installed.decode(errors="replace")) if installed else None
    )
    current = None if checksum is None else checksum in info.get("description", "")
    return HostStatus(info.get("Pid", "?"), current, server_states(host, settings))


def collect_status(
    settings: Settings,
) -> list[tuple[str, HostStatus | None, OpsError | None]]:
    """Return (host, status, error) for every HAProxy host; doctor uses this."""
    return fan_out(
        settings.haproxy_hosts,
        settings.values,
        lambda host: host_status(host, settings),
    )


def status_outcome(status: HostStatus) -> Outcome:
    lines = server_lines(status.servers)
    up = len(status.servers_up)
    detail = f"worker pid {status.worker_pid}, {up} of {len(status.servers)} servers UP"
    if status.config_current is False:
        return Outcome(
            errors.WARNING,
            f"{detail}; the running workers did not load the installed file: run `invoke haproxy.reload`",
            lines,
        )
    if not up:
        return Outcome(errors.FAILED, f"{detail}: no server takes traffic", lines)
    return Outcome(errors.OK, detail, lines)


@ops_task(help={"env": ENV_HELP})
def status(c, env=None):
    """Show each backend server's state on every HAProxy host, from the runtime API."""
    settings = load_settings(env)
    output.phase(f"reading server states on {', '.join(settings.haproxy_hosts)}")
    results = [
        (spec, status_outcome(state) if state else None, error)
        for spec, state, error in collect_status(settings)
    ]
    report_outcomes("haproxy.status", results)


ns = Collection("haproxy")
ns.add_task(render)
ns.add_task(check)
ns.add_task(reload)
ns.add_task(start)
ns.add_task(status)
