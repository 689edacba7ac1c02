"""Readiness polling during a change: one thread per URL, counting every outcome.

Each request opens a new HTTPS connection, as a client of HAProxy or a
health check would, so a server task that restarts shows up as failed
requests. Each loop is bounded by a request limit, so a stuck test ends.
"""

import http.client
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

READY_PATH = "/-/health/ready/"
REQUEST_TIMEOUT = 3  # seconds for one request
INTERVAL = 0.1  # seconds between requests
LIMIT = 20000  # requests per poller, an upper bound for a stuck test
BURST_GAP = 2.0  # seconds between failures that still count as one burst


@dataclass(frozen=True)
class Target:
    """Where to send the readiness request: an address, a TLS name and a Host header."""

    name: str
    address: str
    port: int
    server_name: str
    context: ssl.SSLContext


def haproxy_target(port: int, domain: str, ca_file: str) -> Target:
    """HAProxy's frontend on loopback, its certificate checked against the lab CA."""
    context = ssl.create_default_context(cafile=ca_file)
    return Target("haproxy", "127.0.0.1", port, domain, context)


def published_target(port: int) -> Target:
    """A published port of the server service; its certificate is self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return Target("published", "127.0.0.1", port, "localhost", context)


def request_ready(target: Target) -> str:
    """Return the status code as text, or the error's class name when no response came."""
    try:
        raw = socket.create_connection(
            (target.address, target.port), timeout=REQUEST_TIMEOUT
        )
        sock = target.context.wrap_socket(raw, server_hostname=target.server_name)
        connection = http.client.HTTPSConnection(
            target.server_name, target.port, timeout=REQUEST_TIMEOUT
        )
        connection.sock = sock
        try:
            connection.request("GET", READY_PATH, headers={"Host": target.server_name})
            response = connection.getresponse()
            response.read()
            return str(response.status)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__


@dataclass
class Tally:
    """Outcomes of one poller: a count per outcome, and each failure with its time."""

    outcomes: Counter = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return len(self.failures)

    def bursts(self) -> list[tuple[float, float, int]]:
        """Group failures less than BURST_GAP apart; return (start, seconds, count) of each."""
        groups: list[list[float]] = []
        for moment, _ in self.failures:
            if groups and moment - groups[-1][-1] < BURST_GAP:
                groups[-1].append(moment)
            else:
                groups.append([moment])
        return [(group[0], group[-1] - group[0], len(group)) for group in groups]

    def summary(self, name: str) -> str:
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))
        bursts = "; ".join(
            f"{count} from {start:.1f} s for {seconds:.1f} s"
            for start, seconds, count in self.bursts()
        )
        return f"{name}: {self.total} requests, {self.failed} failed ({outcomes})" + (
            f"; failure bursts: {bursts}" if bursts else ""
        )


class Poller:
    """Polls one target in a thread until `stop` is called."""

    def __init__(self, target: Target):
        self.target = target
        self.tally = Tally()
        self.event = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.event.is_set() and self.tally.total < LIMIT:
            outcome = request_ready(self.target)
            self.tally.outcomes[outcome] += 1
            if outcome != "200":
                self.tally.failures.append((time.monotonic() - self.started, outcome))
            time.sleep(INTERVAL)

    def stop(self) -> Tally:
        self.event.set()
        self.thread.join(timeout=30)
        return self.tally


def poll_during(targets: list[Target]) -> list[Poller]:
    return [Poller(target) for target in targets]
