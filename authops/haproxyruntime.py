"""A running HAProxy on a host: runtime API, start, reload and its confirmation.

The runtime API is the stats socket (HAPROXY_STATS_SOCKET). It is reached on
the host itself with socat, or with python3 where socat is missing.
"""

import csv
import io
import shlex
import time
from dataclasses import dataclass

from authops.errors import OpsError
from authops.hosts import Host
from authops.settings import Settings

SYSTEMD = "systemd"
MASTER = "master process"
RUNTIME_TIMEOUT = 10  # seconds for one runtime API command
START_TIMEOUT = 15  # seconds until a started HAProxy responds on its socket
RELOAD_TIMEOUT = 20  # seconds until new workers run after a reload
# The first check of every server runs within one `inter` (2 s in the template)
# of a worker's start, so 15 s leaves room for slow TLS handshakes.
CHECKS_TIMEOUT = 15  # seconds
POLL_INTERVAL = 0.2  # seconds

# Sends the command in argv[2] to the UNIX socket in argv[1] and prints the
# reply. HAProxy closes the connection after one command.
PYTHON_CLIENT = f"""
import socket, sys
client = socket.socket(socket.AF_UNIX)
client.settimeout({RUNTIME_TIMEOUT})
client.connect(sys.argv[1])
client.sendall(sys.argv[2].encode() + b"\\n")
while True:
    chunk = client.recv(65536)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
"""


def runtime_client_command(socket_path: str, command: str, client: str = "auto") -> str:
    """Return the shell command that sends `command` to the runtime API at `socket_path`.

    `client` is socat, python3 or auto (socat if installed, else python3).
    The command goes on the command line, not through stdin: runtime commands
    carry no secret, and socat fed through Invoke's stdin sometimes sent the
    command only after HAProxy had given up on the connection.
    """
    quoted_socket = shlex.quote(socket_path)
    quoted_command = shlex.quote(command)
    socat = (
        f"printf '%s\\n' {quoted_command} | "
        f"socat -t {RUNTIME_TIMEOUT} - UNIX-CONNECT:{quoted_socket}"
    )
    python = f"python3 -c {shlex.quote(PYTHON_CLIENT)} {quoted_socket} {quoted_command}"
    if client == "socat":
        return socat
    if client == "python3":
        return python
    return f"if command -v socat >/dev/null 2>&1; then {socat}; else {python}; fi"


def runtime_api(
    host: Host, settings: Settings, command: str, *, client: str = "auto"
) -> str:
    """Send one command to the runtime API on the host and return the reply."""
    socket_path = settings.get("HAPROXY_STATS_SOCKET")
    result = host.run(
        runtime_client_command(socket_path, command, client),
        timeout=RUNTIME_TIMEOUT + 5,
    )
    if not result.ok:
        raise OpsError(
            f"{host.name}: the runtime API at {socket_path} did not respond to `{command}`: "
            f"{result.error_text()} (is haproxy running with this stats socket?)"
        )
    if not result.stdout.strip():
        raise OpsError(
            f"{host.name}: the runtime API at {socket_path} returned nothing for `{command}`"
        )
    return result.stdout


def show_info(host: Host, settings: Settings, *, client: str = "auto") -> dict:
    """Return `show info` as a dict: Pid is the worker's pid, description contains the checksum."""
    reply = runtime_api(host, settings, "show info", client=client)
    info = {}
    for line in reply.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            info[key.strip()] = value.strip()
    return info


@dataclass(frozen=True)
class ServerState:
    backend: str
    name: str
    status: str
    check_status: str
    check_code: str
    check_detail: str

    @property
    def is_up(self) -> bool:
        """Return whether the server takes traffic ("UP 1/2" is up but failing)."""
        return self.status.startswith("UP") or self.status == "no check"

    @property
    def is_checked(self) -> bool:
        """Return whether a health check has run since the worker started."""
        return self.status == "no check" or self.check_status not in ("", "INI")

    def describe(self) -> str:
        check = " ".join(part for part in (self.check_status, self.check_code) if part)
        if self.check_detail:
            check = f"{check}: {self.check_detail}" if check else self.check_detail
        return (
            f"{self.name} {self.status} ({check})"
            if check
            else f"{self.name} {self.status}"
        )


def parse_show_stat(reply: str) -> list[ServerState]:
    """Return the servers of `show stat` CSV output (frontends and backends dropped)."""
    text = reply.lstrip("# ")
    states = []
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("svname") in (None, "FRONTEND", "BACKEND"):
            continue
        states.append(
            ServerState(
                backend=row["pxname"],
                name=row["svname"],
                status=row.get("status", ""),
                check_status=(row.get("check_status") or "").lstrip("* "),
                check_code=row.get("check_code") or "",
                check_detail=row.get("last_chk") or "",
            )
        )
    return states


def server_states(
    host: Host, settings: Settings, *, client: str = "auto"
) -> list[ServerState]:
    """Return the state of every backend server, as reported by the running worker."""
    return parse_show_stat(runtime_api(host, settings, "show stat", client=client))


@dataclass(frozen=True)
class Running:
    """A running HAProxy: who manages it and its master's pid (None under systemd)."""

    manager: str
    master_pid: int | None


def master_pid(host: Host, settings: Settings) -> int | None:
    """Return the master's pid from the pidfile if that process runs (a zombie does not)."""
    pidfile = shlex.quote(settings.get("HAPROXY_PIDFILE"))
    result = host.run(
        f'pid=$(head -n 1 {pidfile} 2>/dev/null) && [ -n "$pid" ] '
        '&& grep -qs haproxy "/proc/$pid/cmdline" '
        '&& ! grep -qs "^State:[[:space:]]*Z" "/proc/$pid/status" && echo "$pid"'
    )
    text = result.stdout.strip()
    return int(text) if result.ok and text.isdigit() else None


def has_systemd(host: Host) -> bool:
    return host.run("test -d /run/systemd/system").ok


def detect(host: Host, settings: Settings) -> Running | None:
    """Return how HAProxy runs on the host, or None if it does not run."""
    # NOTE: the tests run without systemd, so the systemd branches here and in
    # start() and send_reload() have not run against a real systemd.
    if has_systemd(host) and host.run("systemctl is-active --quiet haproxy").ok:
        return Running(SYSTEMD, None)
    pid = master_pid(host, settings)
    return Running(MASTER, pid) if pid else None


def start(host: Host, settings: Settings) -> Running:
    """Start HAProxy in master-worker mode with HAPROXY_CONFIG, unless it runs.

    Under systemd this is `systemctl start haproxy`; elsewhere `haproxy -W -D`,
    which writes HAPROXY_PIDFILE. Waits until the runtime API responds.
    """
    running = detect(host, settings)
    if running:
        return running
    config = settings.get("HAPROXY_CONFIG")
    if not host.run(f"test -f {shlex.quote(config)}").ok:
        raise OpsError(
            f"{host.name}: {config} does not exist: run `invoke haproxy.reload` first"
        )
    if has_systemd(host):
        host.run("systemctl start haproxy", timeout=60, check=True)
    else:
        directories = {
            settings.get("HAPROXY_PIDFILE").rsplit("/", 1)[0] or "/",
            settings.get("HAPROXY_STATS_SOCKET").rsplit("/", 1)[0] or "/",
        }
        quoted = " ".join(shlex.quote(directory) for directory in sorted(directories))
        host.run(f"mkdir -p {quoted}", check=True)
        host.run(
            f"{haproxy_binary()} -W -D -f {shlex.quote(config)}", timeout=60, check=True
        )
    wait_for_runtime_api(host, settings, START_TIMEOUT)
    started = detect(host, settings)
    if started is None:
        raise OpsError(
            f"{host.name}: haproxy responds on its socket but no master runs from {settings.get('HAPROXY_PIDFILE')}"
        )
    return started


def haproxy_binary() -> str:
    """Return a shell word that runs the host's haproxy, as its service would."""
    return '"$(command -v haproxy || echo /usr/sbin/haproxy)"'


def wait_for_runtime_api(host: Host, settings: Settings, timeout: float) -> dict:
    """Poll `show info` until the runtime API responds, and return the reply."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return show_info(host, settings)
        except OpsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_INTERVAL)


def send_reload(host: Host, running: Running) -> None:
    """Ask HAProxy to re-read its configuration: systemd, else SIGUSR2 to the master."""
    if running.manager == SYSTEMD:
        host.run("systemctl reload haproxy", timeout=60, check=True)
    else:
        host.run(f"kill -USR2 {running.master_pid}", check=True)


def wait_for_new_workers(
    host: Host, settings: Settings, old_pid: str | None, checksum: str | None
) -> dict:
    """Poll `show info` until a worker other than `old_pid` responds, with `checksum` if given.

    Raises OpsError when that does not happen within RELOAD_TIMEOUT: the
    master then kept the old workers, or loaded another file.
    """
    deadline = time.monotonic() + RELOAD_TIMEOUT
    info: dict = {}
    while time.monotonic() < deadline:
        try:
            info = show_info(host, settings)
        except OpsError:
            info = {}
        if info and info.get("Pid") != old_pid and loaded(info, checksum):
            return info
        time.sleep(POLL_INTERVAL)
    if not info:
        raise OpsError(
            f"the runtime API did not respond within {RELOAD_TIMEOUT} s after the reload"
        )
    if info.get("Pid") == old_pid:
        raise OpsError(
            f"the workers did not change within {RELOAD_TIMEOUT} s (pid {old_pid}): "
            "the master kept the old configuration; see the haproxy log"
        )
    raise OpsError(
        f"the new workers do not report checksum {checksum}: does the haproxy service "
        f"read {settings.get('HAPROXY_CONFIG')}?"
    )


def loaded(info: dict, checksum: str | None) -> bool:
    return checksum is None or checksum in info.get("description", "")


def wait_for_checks(host: Host, settings: Settings) -> list[ServerState]:
    """Poll `show stat` until every server has had a health check, and return the states.

    Servers still unchecked at CHECKS_TIMEOUT are returned as they are.
    """
    deadline = time.monotonic() + CHECKS_TIMEOUT
    while True:
        states = server_states(host, settings)
        if all(state.is_checked for state in states):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(POLL_INTERVAL)
