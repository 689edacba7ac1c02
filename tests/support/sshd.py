"""A real sshd on a loopback port, with throwaway host and client keys."""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from authops.localsvc import free_port, wait_for_port

SSHD = "/usr/sbin/sshd"


@dataclass
class SshServer:
    port: int
    directory: Path
    process: subprocess.Popen
    address: str = "127.0.0.1"

    @property
    def client_key(self) -> Path:
        return self.directory / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    def spec(self, user: str = "root") -> str:
        """Return the host string that reaches this server: user@ADDRESS:PORT."""
        return f"{user}@{self.address}:{self.port}"

    def env_values(self) -> dict[str, str]:
        """Return env file SSH_* values that reach this server with its keys."""
        return {
            "SSH_KEY": str(self.client_key),
            "SSH_KNOWN_HOSTS": str(self.known_hosts),
            "SSH_STRICT_HOST_KEYS": "true",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
    )


def start_sshd(
    directory: Path,
    address: str = "127.0.0.1",
    port: int | None = None,
    prefix: tuple[str, ...] = (),
    extra_config: str = "",
) -> SshServer:
    """Start sshd as root on `address` (a free port by default); only the client key may log in.

    `prefix` runs sshd under another command, such as `ip netns exec NAME`,
    and `extra_config` adds sshd_config lines.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    keygen(directory / "host_key")
    keygen(directory / "client_key")
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = port or free_port(address)
    host_public = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(
        f"[{address}]:{port} {host_public[0]} {host_public[1]}\n"
    )
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        f"ListenAddress {address}\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "Subsystem sftp internal-sftp\n"
        f"PidFile {directory / 'sshd.pid'}\n" + extra_config
    )
    log = open(directory / "sshd.log", "wb")  # noqa: SIM115 - sshd writes to it until stop()
    process = subprocess.Popen(
        [*prefix, SSHD, "-D", "-e", "-f", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(address, port, timeout=10)
    time.sleep(0.1)
    return SshServer(port, directory, process, address)
