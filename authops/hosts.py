"""Host targeting: run commands and move files on `local` or over SSH with Fabric.

A host written `local` runs on this machine through Invoke. Any other host
is a Fabric Connection. Its user and port come from the host string, else a
matching `Host` block of the SSH config, else the env file (SSH_USER,
SSH_PORT). SSH_KEY is offered beside the SSH config's IdentityFile.
Unknown host keys are rejected unless SSH_STRICT_HOST_KEYS=false.
"""

import io
import logging
import math
import os
import shlex
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import invoke
import paramiko
from fabric import Config, Connection
from fabric.runners import Remote
from invoke import Collection
from invoke.exceptions import CommandTimedOut

from authops import errors, output
from authops.errors import OpsError
from authops.settings import load_settings
from authops.tasking import ENV_HELP, ops_task

LOCAL = "local"
CONNECT_TIMEOUT = 10  # seconds for the TCP connect and SSH handshake
MAX_PARALLEL_HOSTS = 16
# Seconds a command may run when the caller sets no timeout, so that one hung
# host cannot hang a fan-out.
DEFAULT_COMMAND_TIMEOUT = 900
# On a remote host, coreutils' `timeout` ends the command (and its process
# group) at the timeout and kills it KILL_AFTER seconds later if it is still
# there. The local wait lasts LOCAL_WAIT_EXTRA seconds longer, so it ends the
# wait only when the connection itself hangs.
KILL_AFTER = 5
LOCAL_WAIT_EXTRA = 10
TIMED_OUT_EXIT = 124  # the exit code of `timeout` when it ended the command

T = TypeVar("T")

# paramiko logs a failed handshake with a traceback from its transport thread.
# The same error reaches the caller, which reports it as one line per host.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def error_text(self) -> str:
        """Return the last line of stderr (else stdout): usually the reason."""
        for stream in (self.stderr, self.stdout):
            lines = [line for line in stream.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].strip()
        return f"exit code {self.exit_code}"


class BulkStdinMixin:
    """Read a StringIO stdin in one block: Invoke reads non-TTY input one
    character every 10 ms, which makes a 600-character script take 6 s."""

    def read_our_stdin(self, input_):
        if isinstance(input_, io.StringIO):
            return input_.read(65536)
        return super().read_our_stdin(input_)


class BulkLocal(BulkStdinMixin, invoke.Local):
    pass


class BulkRemote(BulkStdinMixin, Remote):
    pass


class HostUnreachable(OpsError):
    """The host could not be reached or logged in to."""


class Host:
    """One target host. Use `connect` to make one."""

    def __init__(self, name: str, context: invoke.Context):
        self.name = name
        self.context = context

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run a shell command and capture its output.

        Pass secrets through `stdin`, never in `command`: command lines show
        in `ps` on the host. With `check`, a non-zero exit raises OpsError.
        `timeout` defaults to DEFAULT_COMMAND_TIMEOUT seconds.
        """
        timeout = timeout or DEFAULT_COMMAND_TIMEOUT
        timed_out = OpsError(
            f"{self.name}: command timed out after {timeout} s: {command}"
        )
        sent, wait = command, timeout
        if not self.is_local:
            sent = remote_command(command, timeout)
            wait = timeout + KILL_AFTER + LOCAL_WAIT_EXTRA
        started = time.monotonic()
        try:
            raw = self.context.run(
                sent,
                hide=True,
                warn=True,
                in_stream=io.StringIO(stdin or ""),
                timeout=wait,
                pty=False,
            )
        except CommandTimedOut:
            raise timed_out from None
        except (OSError, paramiko.SSHException, EOFError) as error:
            raise unreachable(self.name, error) from None
        elapsed = time.monotonic() - started
        if sent != command and raw.exited == TIMED_OUT_EXIT and elapsed >= timeout:
            raise timed_out
        result = CommandResult(command, raw.exited, raw.stdout, raw.stderr)
        if check and not result.ok:
            raise OpsError(f"{self.name}: `{command}` failed: {result.error_text()}")
        return result

    def read_file(self, path: str) -> bytes | None:
        """Return the content of a file on the host, or None if it does not exist."""
        if self.is_local:
            try:
                return Path(path).read_bytes()
            except FileNotFoundError:
                return None
        buffer = io.BytesIO()
        try:
            self.context.get(path, local=buffer)
        except FileNotFoundError:
            return None
        except (OSError, paramiko.SSHException, EOFError) as error:
            raise unreachable(self.name, error) from None
        return buffer.getvalue()

    def upload(self, data: bytes, path: str, mode: int = 0o600) -> None:
        """Write `data` to `path` on the host, created with `mode` before any byte is written."""
        if self.is_local:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.chmod(path, mode)
            return
        sftp = self.context.sftp()
        with sftp.open(path, "wb") as handle:
            handle.chmod(mode)
            handle.write(data)

    def write_file(
        self, path: str, data: bytes, *, mode: int = 0o600, owner: str | None = None
    ) -> None:
        """Replace `path` atomically: write a temporary file beside it, then rename it over."""
        directory, name = os.path.split(path)
        temporary = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
        self.upload(data, temporary, mode)
        commands = []
        if owner:
            commands.append(f"chown {shlex.quote(owner)} {shlex.quote(temporary)}")
        commands.append(f"mv -f {shlex.quote(temporary)} {shlex.quote(path)}")
        result = self.run(" && ".join(commands))
        if not result.ok:
            self.run(f"rm -f {shlex.quote(temporary)}")
            raise OpsError(
                f"{self.name}: could not install {path}: {result.error_text()}"
            )

    def close(self) -> None:
        if isinstance(self.context, Connection):
            self.context.close()


def remote_command(command: str, timeout: float) -> str:
    """Wrap `command` so that the remote host itself ends it after `timeout` seconds."""
    seconds = max(1, math.ceil(timeout))
    return f"timeout -k {KILL_AFTER} {seconds} sh -c {shlex.quote(command)}"


def unreachable(name: str, error: BaseException) -> HostUnreachable:
    """Translate a connection error into an operator-facing message."""
    if isinstance(error, paramiko.AuthenticationException):
        reason = (
            "SSH authentication failed: check SSH_USER and SSH_KEY, or the SSH config"
        )
    elif isinstance(error, paramiko.BadHostKeyException):
        reason = "the SSH host key changed: verify the host, then update known_hosts"
    elif isinstance(error, paramiko.SSHException) and "not found in known_hosts" in str(
        error
    ):
        reason = "the SSH host key is unknown: add it with `ssh-keyscan HOST >> ~/.ssh/known_hosts` after checking it"
    elif isinstance(error, paramiko.SSHException) and "protocol banner" in str(error):
        reason = (
            f"no SSH greeting within {CONNECT_TIMEOUT} s: the port is open but does not "
            f"answer as an SSH server, so check the host and port"
        )
    elif isinstance(error, EOFError):
        reason = (
            f"the SSH handshake did not finish (the server closed the connection or "
            f"sent nothing for {CONNECT_TIMEOUT} s): check the host and port"
        )
    elif isinstance(error, FileNotFoundError) and error.filename:
        reason = f"file {error.filename} not found: check SSH_KEY"
    elif isinstance(error, socket.gaierror):
        reason = "DNS lookup failed: check the host name"
    elif isinstance(error, (socket.timeout, TimeoutError)):
        reason = f"connection timed out after {CONNECT_TIMEOUT} s"
    elif isinstance(
        error, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)
    ):
        reason = "connection refused: is sshd running on that port?"
    else:
        reason = str(error) or type(error).__name__
    return HostUnreachable(f"{name}: unreachable: {reason}")


def bounded_transport(*args, **kwargs) -> paramiko.Transport:
    """Return a paramiko Transport whose key exchange times out after CONNECT_TIMEOUT."""
    transport = paramiko.Transport(*args, **kwargs)
    transport.handshake_timeout = CONNECT_TIMEOUT
    return transport


def ssh_config(values: dict[str, str]) -> Config:
    """Build the Fabric config from the env file's SSH_* keys."""
    overrides: dict = {
        "connect_timeout": CONNECT_TIMEOUT,
        "run": {"hide": True, "warn": True},
    }
    if values.get("SSH_USER"):
        overrides["user"] = values["SSH_USER"]
    if values.get("SSH_PORT"):
        overrides["port"] = int(values["SSH_PORT"])
    # Without these, paramiko 5 waits 15 s for the server's greeting and for the
    # key exchange, and 30 s for authentication, whatever the connect timeout.
    overrides["connect_kwargs"] = {
        "banner_timeout": CONNECT_TIMEOUT,
        "auth_timeout": CONNECT_TIMEOUT,
        "channel_timeout": CONNECT_TIMEOUT,
        "transport_factory": bounded_transport,
    }
    if values.get("SSH_KEY"):
        overrides["connect_kwargs"]["key_filename"] = [
            os.path.expanduser(values["SSH_KEY"])
        ]
    return Config(overrides=overrides)


def load_known_hosts(client: paramiko.SSHClient, extra_file: str | None) -> None:
    """Load ~/.ssh/known_hosts and the SSH_KNOWN_HOSTS file, or raise OpsError naming the file."""
    path = None
    try:
        client.load_system_host_keys()
        if extra_file:
            path = os.path.expanduser(extra_file)
            client.load_host_keys(path)
    except (OSError, paramiko.hostkeys.InvalidHostKey) as error:
        where = f"SSH_KNOWN_HOSTS file {path}" if path else "~/.ssh/known_hosts"
        raise OpsError(
            f"failed to load {where} ({type(error).__name__}): fix the setting, or "
            f"the file, whose lines must be in the format that ssh-keyscan prints"
        ) from None


def connect(spec: str, values: dict[str, str] | None = None) -> Host:
    """Return a connected Host for `local` or `[user@]host[:port]`.

    Raises HostUnreachable, naming the host, when SSH fails.
    """
    values = values or {}
    if spec == LOCAL:
        return Host(
            LOCAL,
            invoke.Context(
                config=invoke.Config(overrides={"runners": {"local": BulkLocal}})
            ),
        )
    connection = Connection(spec, config=ssh_config(values))
    client = connection.client
    load_known_hosts(client, values.get("SSH_KNOWN_HOSTS"))
    strict = values.get("SSH_STRICT_HOST_KEYS", "true").lower() != "false"
    policy = paramiko.RejectPolicy() if strict else paramiko.AutoAddPolicy()
    # Fabric sets AutoAddPolicy in its constructor; replace it before opening.
    client.set_missing_host_key_policy(policy)
    try:
        connection.open()
    except (OSError, paramiko.SSHException, EOFError) as error:
        raise unreachable(spec, error) from None
    return Host(spec, connection)


def fan_out(
    specs: list[str],
    values: dict[str, str],
    action: Callable[[Host], T],
    *,
    parallel: bool = True,
) -> list[tuple[str, T | None, OpsError | None]]:
    """Run `action` on every host and return (host, result, error) for each, in input order.

    A host that fails does not stop the others: the caller reports every
    result, then fails once.
    """

    def run_one(spec: str) -> tuple[str, T | None, OpsError | None]:
        host = None
        try:
            host = connect(spec, values)
            return spec, action(host), None
        except OpsError as error:
            return spec, None, error
        finally:
            if host is not None:
                host.close()

    if not parallel or len(specs) == 1:
        return [run_one(spec) for spec in specs]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOSTS, len(specs))) as pool:
        return list(pool.map(run_one, specs))


# --- Tasks -----------------------------------------------------------------

MAX_CLOCK_OFFSET = 2.0  # seconds; SAML assertions fail on larger skew
PROBE_COMMAND = "hostname && date -u +%s.%N"
PROBE_TIMEOUT = 10  # seconds for PROBE_COMMAND on a host that is logged in to


def all_host_specs(settings) -> list[str]:
    """Return every host the env file names for SSH, each once, in file order."""
    specs = [*settings.managers, *settings.haproxy_hosts, settings.nfs_ssh_host]
    return list(dict.fromkeys(specs))


def probe_host(host: Host) -> tuple[str, float]:
    """Return the host's name and its clock offset from this machine in seconds."""
    before = time.time()
    result = host.run(PROBE_COMMAND, check=True, timeout=PROBE_TIMEOUT)
    after = time.time()
    name, remote_time = result.stdout.split()
    return name, float(remote_time) - (before + after) / 2


@ops_task(help={"env": ENV_HELP})
def check(c, env=None):
    """Reach every host of the env file and compare its clock with this machine's."""
    settings = load_settings(env)
    specs = all_host_specs(settings)
    output.phase(f"reaching {len(specs)} host(s)")
    report = errors.Report("hosts.check")
    for spec, probed, error in fan_out(specs, settings.values, probe_host):
        if error is not None:
            report.record(spec, errors.FAILED, str(error).removeprefix(f"{spec}: "))
            continue
        name, offset = probed
        detail = f"hostname {name}, clock offset {offset:+.2f} s"
        if abs(offset) > MAX_CLOCK_OFFSET:
            report.record(
                spec,
                errors.WARNING,
                f"{detail}: more than {MAX_CLOCK_OFFSET} s; check NTP on the host",
            )
        else:
            report.record(spec, errors.OK, detail)
    report.finish()


ns = Collection("hosts")
ns.add_task(check)
