"""The load generator of every scenario: paced HTTPS GETs that record each outcome.

Each request opens a new TCP and TLS connection and sends `Connection:
close`, so a request never rides on a connection that an earlier one opened
(no keep-alive). Worker threads share one schedule: request k is due
k / rate seconds after the start. A request that is late, because every
worker was busy, is sent as soon as a worker is free, and its record keeps
both the time it was due and the time it was sent. The generator stops at
`max_requests`, at `max_duration` or when `stop()` is called, whichever
comes first. Only loopback addresses are accepted as targets.
"""

import http.client
import ipaddress
import socket
import ssl
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """The destination of the requests: a loopback address and port, with SNI and Host `server_name`."""

    address: str
    port: int
    server_name: str
    path: str = "/"
    ca_file: Path | None = None  # None: plain HTTP instead of HTTPS
    timeout: float = 10.0  # seconds for connect, TLS handshake and response each
    expected: tuple[int, ...] = (200,)

    def __post_init__(self):
        if not ipaddress.ip_address(self.address).is_loopback:
            raise ValueError(
                f"load target {self.address} is not a loopback address: the bench only loads this machine"
            )


@dataclass(frozen=True)
class RequestRecord:
    """One request: when it was due and sent (seconds after the start), and its outcome."""

    due: float
    start: float
    latency: float
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def end(self) -> float:
        return self.start + self.latency

    def outcome(self) -> str:
        """Return `200` for a success, else the status or the error class."""
        return self.error or str(self.status)

    def as_row(self) -> list:
        return [
            round(self.due, 4),
            round(self.start, 4),
            round(self.latency, 4),
            self.status,
            self.error,
        ]


@dataclass
class LoadResult:
    """Every request of one load run, with its monotonic start for aligning events."""

    started_at: float  # time.monotonic() at the start
    wall_start: float  # time.time() at the same moment
    rate: float
    records: list[RequestRecord] = field(default_factory=list)

    def offset(self, monotonic: float) -> float:
        """Return a time.monotonic() value as seconds after the start of this load."""
        return monotonic - self.started_at

    def between(self, first: float, last: float) -> list[RequestRecord]:
        """Return the requests whose lifetime overlaps [first, last] (offsets)."""
        return [r for r in self.records if r.start <= last and r.end >= first]

    def failures(self, records: list[RequestRecord] | None = None) -> list:
        chosen = self.records if records is None else records
        return [record for record in chosen if not record.ok]

    def summary(self) -> dict:
        """Return counts, failures by outcome and latency percentiles in seconds."""
        return summarize_records(self.records)

    def as_json(self) -> dict:
        return {
            "rate": self.rate,
            "wall_start": self.wall_start,
            "columns": ["due", "start", "latency", "status", "error"],
            "records": [record.as_row() for record in self.records],
        }


def summarize_records(records: list[RequestRecord]) -> dict:
    latencies = sorted(record.latency for record in records if record.ok)
    failed = [record for record in records if not record.ok]
    late = [record.start - record.due for record in records]
    return {
        "sent": len(records),
        "failed": len(failed),
        "failures_by_outcome": dict(Counter(record.outcome() for record in failed)),
        "first_failure": min((r.start for r in failed), default=None),
        "last_failure": max((r.end for r in failed), default=None),
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "latency_max": latencies[-1] if latencies else None,
        "max_send_delay": max(late, default=0.0),
    }


def percentile(sorted_values: list[float], percent: float) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    cuts = statistics.quantiles(sorted_values, n=100, method="inclusive")
    return cuts[min(98, max(0, int(percent) - 1))]


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with SNI and certificate check for the Host name."""

    def __init__(self, target: Target, context: ssl.SSLContext):
        super().__init__(
            target.server_name, target.port, timeout=target.timeout, context=context
        )
        self.target = target
        self.tls_context = context

    def connect(self):
        raw = socket.create_connection(
            (self.target.address, self.target.port), self.timeout
        )
        try:
            self.sock = self.tls_context.wrap_socket(
                raw, server_hostname=self.target.server_name
            )
        except BaseException:
            raw.close()
            raise


class PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to a fixed address, with the Host header of `server_name`."""

    def __init__(self, target: Target):
        super().__init__(target.server_name, target.port, timeout=target.timeout)
        self.target = target

    def connect(self):
        self.sock = socket.create_connection(
            (self.target.address, self.target.port), self.timeout
        )


def tls_context(target: Target) -> ssl.SSLContext | None:
    if target.ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(target.ca_file))


def send_request(target: Target, context: ssl.SSLContext | None) -> tuple:
    """Send one GET on a new connection; return (status, error) and read the whole body."""
    if context is None:
        connection = PinnedHTTPConnection(target)
    else:
        connection = PinnedHTTPSConnection(target, context)
    try:
        connection.request(
            "GET",
            target.path,
            headers={"Host": target.server_name, "Connection": "close"},
        )
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as error:
        return None, error_name(error)
    finally:
        connection.close()
    if response.status not in target.expected:
        return response.status, f"HTTP {response.status}"
    return response.status, None


def error_name(error: BaseException) -> str:
    """Return a short, stable class for an error: `ConnectionRefusedError`, `timeout`."""
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(error, ssl.SSLError):
        return f"SSLError {error.reason or ''}".strip()
    return type(error).__name__


class LoadGenerator:
    """Paced requests from `concurrency` threads; see the module docstring."""

    def __init__(
        self,
        target: Target,
        *,
        rate: float,
        concurrency: int = 4,
        max_requests: int = 100_000,
        max_duration: float = 600.0,
    ):
        if rate <= 0 or concurrency < 1:
            raise ValueError("rate and concurrency must be positive")
        self.target = target
        self.rate = rate
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_duration = max_duration
        self.context = tls_context(target)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.next_slot = 0
        self.records: list[RequestRecord] = []
        self.threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.wall_start = 0.0

    def start(self) -> "LoadGenerator":
        self.started_at = time.monotonic()
        self.wall_start = time.time()
        for number in range(self.concurrency):
            thread = threading.Thread(
                target=self.work, name=f"load-{number}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        return self

    def take_slot(self) -> float | None:
        """Return the due time (offset) of the next request, or None when done."""
        with self.lock:
            slot = self.next_slot
            self.next_slot += 1
        due = slot / self.rate
        if slot >= self.max_requests or due > self.max_duration:
            return None
        return due

    def work(self) -> None:
        while not self.stopping.is_set():
            due = self.take_slot()
            if due is None:
                return
            wait = self.started_at + due - time.monotonic()
            if wait > 0 and self.stopping.wait(wait):
                return
            start = time.monotonic()
            status, error = send_request(self.target, self.context)
            end = time.monotonic()
            record = RequestRecord(
                due, start - self.started_at, end - start, status, error
            )
            with self.lock:
                self.records.append(record)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def sent(self) -> int:
        with self.lock:
            return len(self.records)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the threads end on their own (request or duration bound)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            remaining = None if deadline is None else deadline - time.monotonic()
            thread.join(remaining if remaining is None else max(0.0, remaining))

    def stop(self) -> LoadResult:
        """Stop sending, wait for requests in flight, and return every record."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(self.target.timeout * 3 + 5)
        with self.lock:
            records = sorted(self.records, key=lambda record: record.start)
        return LoadResult(self.started_at, self.wall_start, self.rate, records)


def run_load(target: Target, *, rate: float, duration: float, **options) -> LoadResult:
    """Run a load for `duration` seconds and return its result."""
    generator = LoadGenerator(target, rate=rate, max_duration=duration, **options)
    generator.start()
    generator.wait(duration + target.timeout * 3 + 5)
    return generator.stop()
