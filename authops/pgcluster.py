"""A throwaway PostgreSQL cluster on this machine, for the lab and the tests.

It runs Debian's server binaries as the `postgres` user (initdb refuses root),
listens on the given addresses and port, and requires SCRAM passwords.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from authops.errors import OpsError
from authops.localsvc import GWBRIDGE_SUBNET, LAB_NODE_SUBNET

SUPERUSER = "postgres"
START_TIMEOUT = 60  # seconds


def server_bin_dir() -> Path:
    """Return the newest installed server's bin folder, such as /usr/lib/postgresql/15/bin."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]),
    )
    if not candidates:
        raise OpsError(
            "PostgreSQL server not found: run `make setup` as root (installs Debian's postgresql)"
        )
    return Path(candidates[-1]).parent


def as_postgres(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command as the postgres system user when running as root."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


@dataclass
class Cluster:
    data_dir: Path
    port: int
    listen: str
    superuser_password: str

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "postgresql.log"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return as_postgres(
            [str(server_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args]
        )

    def is_running(self) -> bool:
        return self.pg_ctl("status").returncode == 0

    def start(self) -> None:
        if self.is_running():
            return
        options = f"-c listen_addresses='{self.listen}' -c port={self.port} -c unix_socket_directories='{self.data_dir.parent}'"
        result = self.pg_ctl(
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-l",
            str(self.log_path),
            "-o",
            options,
        )
        if result.returncode != 0:
            tail = (
                self.log_path.read_text()[-800:]
                if self.log_path.exists()
                else result.stderr
            )
            raise OpsError(
                f"PostgreSQL did not start on port {self.port}: {tail.strip()}"
            )

    def stop(self) -> None:
        if self.is_running():
            self.pg_ctl("stop", "-m", "fast", "-w")


HBA_RULES = (
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
    # The lab's containers connect from docker_gwbridge. Connections from this
    # machine to its own addresses may leave NAT with the address of another
    # interface, which `samehost` covers.
    f"host all all {GWBRIDGE_SUBNET} scram-sha-256\n"
    # The containers of the lab's second node connect from its namespace.
    f"host all all {LAB_NODE_SUBNET} scram-sha-256\n"
    "host all all samehost scram-sha-256\n"
)


def write_hba(cluster: Cluster) -> None:
    """Write the cluster's pg_hba.conf, and reload a running server when it changed."""
    hba = cluster.data_dir / "pg_hba.conf"
    if hba.read_text() == HBA_RULES:
        return
    hba.write_text(HBA_RULES)
    if cluster.is_running():
        cluster.pg_ctl("reload")


def create_cluster(
    base_dir: Path, port: int, superuser_password: str, listen: str = "127.0.0.1"
) -> Cluster:
    """Create (unless it exists) and start a cluster under `base_dir`.

    Every TCP connection needs a SCRAM password, also from loopback.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = base_dir / "data"
    cluster = Cluster(data_dir, port, listen, superuser_password)
    if os.geteuid() == 0:
        shutil.chown(base_dir, "postgres", "postgres")
    if not (data_dir / "PG_VERSION").exists():
        with tempfile.NamedTemporaryFile("w", dir=base_dir, delete=False) as pwfile:
            pwfile.write(superuser_password + "\n")
        try:
            if os.geteuid() == 0:
                shutil.chown(pwfile.name, "postgres", "postgres")
            result = as_postgres(
                [
                    str(server_bin_dir() / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            raise OpsError(f"initdb failed in {data_dir}: {result.stderr.strip()}")
    write_hba(cluster)
    cluster.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not cluster.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    return cluster
