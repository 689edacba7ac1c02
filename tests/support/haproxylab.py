"""HAProxy test bench: two stand-in nodes, an env file and a client, all on loopback.

Node `a` listens on 127.0.0.1 and node `b` on 127.0.0.2, on the same port,
so SWARM_NODES lists both with one HTTPS_PORT as in production.
"""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from authops.labpki import Authority, cert_pem, key_pem, write_private
from authops.localsvc import free_port, wait_for_port
from tests.support.certificates import issue, make_ca

REPO = Path(__file__).resolve().parent.parent.parent
DOMAIN = "sso.lab.test"
NODES = {"a": "127.0.0.1", "b": "127.0.0.2"}


def run_invoke(
    *args: str, env_dir: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `invoke ARGS` from the checkout with env files from `env_dir`."""
    environment = {**os.environ, "OPS_ENV_DIR": str(env_dir)}
    environment.pop("RENEWED_LINEAGE", None)
    environment.pop("RENEWED_DOMAINS", None)
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Node:
    name: str
    address: str
    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def not_ready_flag(self) -> Path:
        return self.directory / f"{self.name}.not-ready"

    def start(self, cert: Path, key: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.backend",
                self.name,
                self.address,
                str(self.port),
                str(cert),
                str(key),
                str(self.not_ready_flag),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.process.stdout.readline()
        wait_for_port(self.address, self.port, timeout=10)

    def set_ready(self, ready: bool) -> None:
        if ready:
            self.not_ready_flag.unlink(missing_ok=True)
        else:
            self.not_ready_flag.touch()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def start_nodes(directory: Path, ca: Authority) -> list[Node]:
    """Start node a and node b with a certificate from `ca` (HAProxy does not verify it)."""
    leaf = issue(ca, ["node.lab.test"])
    cert = directory / "node.pem"
    key = directory / "node.key"
    cert.write_bytes(cert_pem(leaf.certificate))
    key.write_bytes(key_pem(leaf.key))
    port = free_port("127.0.0.2")
    nodes = [Node(name, address, port, directory) for name, address in NODES.items()]
    for node in nodes:
        node.start(cert, key)
    return nodes


@dataclass
class Bench:
    """Paths and ports of one HAProxy under test."""

    directory: Path
    port: int
    ca: Authority
    nodes: list[Node]

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def cert_dir(self) -> Path:
        return self.directory / "certs"

    @property
    def socket(self) -> Path:
        return self.directory / "admin.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "haproxy.pid"

    def env_values(self) -> dict[str, str]:
        port = self.nodes[0].port
        return {
            "HAPROXY_HOSTS": "local",
            "HAPROXY_CONFIG": str(self.config),
            "HAPROXY_CERT_DIR": str(self.cert_dir),
            "HAPROXY_STATS_SOCKET": str(self.socket),
            "HAPROXY_PIDFILE": str(self.pidfile),
            "HAPROXY_BIND_ADDRESS": "127.0.0.1",
            "HAPROXY_BIND_PORT": str(self.port),
            "HAPROXY_USER": "root",
            "SSO_DOMAIN": DOMAIN,
            "SWARM_NODES": ",".join(f"{n.name}={n.address}" for n in self.nodes),
            "HTTPS_PORT": str(port),
        }

    def install_certificate(self) -> None:
        """Put a PEM for DOMAIN (chain, then key) into the cert folder, mode 600."""
        leaf = issue(self.ca, [DOMAIN])
        target = self.cert_dir / f"{DOMAIN}.pem"
        write_private(target, leaf.fullchain + leaf.privkey)

    def master_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop_haproxy(self) -> None:
        """Stop the master and every worker it started, old ones included."""
        master = self.master_pid()
        if master is None or not is_running(master):
            return
        workers = children_of(master)
        os.kill(master, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(is_running, [master, *workers])):
            time.sleep(0.1)
        for pid in [master, *workers]:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)

    def client(self) -> "Client":
        return Client(self.port, self.ca)


def is_running(pid: int) -> bool:
    """Return whether `pid` runs. A zombie (no parent reaps it here) does not count."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def children_of(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


@dataclass
class Tally:
    """Results of a client loop: responses per node name, and every failure."""

    by_node: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_node.values()) + len(self.failures)


class PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with SNI and the certificate check for `server_name`."""

    def __init__(self, address: str, port: int, server_name: str, context):
        super().__init__(server_name, port, timeout=10, context=context)
        self.address = address
        self.tls_context = context

    def connect(self):
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.host)


class Client:
    """HTTPS client for the bench that verifies HAProxy's certificate against the test CA."""

    def __init__(self, port: int, ca: Authority):
        self.port = port
        self.context = ssl.create_default_context(cadata=ca.pem.decode())

    def get(self, path: str = "/", headers: dict | None = None, host: str = DOMAIN):
        """Send one GET on a new connection; return (status, headers, body)."""
        connection = PinnedConnection("127.0.0.1", self.port, DOMAIN, self.context)
        try:
            connection.request("GET", path, headers={"Host": host, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def peer_certificate(self) -> bytes:
        """Return the DER certificate HAProxy serves for the domain."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        with self.context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            return tls.getpeercert(binary_form=True)

    def node_of(self) -> str:
        status, _, body = self.get()
        if status != 200:
            raise AssertionError(f"status {status}: {body[:200]!r}")
        return json.loads(body)["name"]

    def loop(
        self, stop: threading.Event, limit: int, tally: Tally | None = None
    ) -> Tally:
        """Send requests one after another until `stop` is set or `limit` were sent."""
        tally = tally if tally is not None else Tally()
        while not stop.is_set() and tally.total < limit:
            try:
                node = self.node_of()
            except (OSError, AssertionError, http.client.HTTPException) as error:
                tally.failures.append(f"{type(error).__name__}: {error}")
            else:
                tally.by_node[node] = tally.by_node.get(node, 0) + 1
        return tally

    def count(self, requests: int) -> Tally:
        return self.loop(threading.Event(), requests)


class Traffic:
    """A client loop in a thread, bounded by a request limit; `stop()` ends it and returns the tally."""

    def __init__(self, client: Client, limit: int):
        self.event = threading.Event()
        self.tally = Tally()
        self.thread = threading.Thread(
            target=self.run, args=(client, limit), daemon=True
        )
        self.thread.start()

    def run(self, client: Client, limit: int) -> None:
        client.loop(self.event, limit, self.tally)

    def stop(self) -> Tally:
        self.event.set()
        self.thread.join(timeout=60)
        return self.tally


def make_bench(directory: Path) -> Bench:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    (directory / "ca.pem").write_bytes(ca.pem)
    nodes = start_nodes(directory, ca)
    bench = Bench(directory, free_port(), ca, nodes)
    bench.install_certificate()
    return bench
