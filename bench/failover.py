"""Failover: how fast HAProxy takes a failed node out of rotation, and what clients lose.

A site is two stand-in nodes (tests/support/backend.py, node a on 127.0.0.1
and node b on 127.0.0.2) with two HAProxy processes in front of both: one
runs the project's configuration (haproxy/haproxy.cfg.j2), the other the
reference settings (bench/reference.cfg.j2). Both are rendered by
authops.haproxycfg from env files that differ only in paths and ports. One
event on node b is therefore seen by both configurations at the same moment.

Node b fails in one of three ways:
- kill: SIGKILL, so connections are refused;
- hang: SIGSTOP, so the kernel still accepts connections but no
  process reads from them;
- not-ready: /-/health/ready/ returns 503 while the node serves other paths,
  as authentik does when it loses its database.

Detection time is measured from the moment just before the signal (or the
flag file) to the first `show stat` poll, every 0.1 s on the runtime API,
that reports node b DOWN. Each configuration has its own load generator;
a request counts as lost when it fails or gets no response within the
client timeout. The three failure modes run side by side, each on its own
site, to keep the bench short; each mode runs `runs` times in a row.
"""

import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from authops.haproxycfg import render_config
from authops.haproxyruntime import ServerState, parse_show_stat
from authops.localsvc import free_port
from bench.envs import lab_values, settings_in, write_env
from bench.load import LoadGenerator, LoadResult, Target, summarize_records
from bench.stats import spread
from tests.support.certificates import make_ca
from tests.support.haproxylab import DOMAIN, Bench, Node, start_nodes

BENCH_DIR = Path(__file__).resolve().parent
REFERENCE_TEMPLATE = BENCH_DIR / "reference.cfg.j2"
CONFIGS = ("project", "reference")
MODES = ("kill", "hang", "not-ready")
FAILED_NODE = "b"
POLL_INTERVAL = 0.1  # seconds between `show stat` polls
# Seconds to wait for a DOWN before giving up. The reference needs up to
# about 60 s for a refused connection. A hung node takes longer, because each
# check then also waits for its timeout, which is `inter` (20 s) there.
DETECTION_CAP = {"kill": 90.0, "hang": 150.0, "not-ready": 70.0}
AFTER_DETECTION = 3.0  # seconds of load kept after the last DOWN
WARM_UP = (2.0, 4.0)  # seconds of load before the failure, drawn at random
LOAD_RATE = 10.0  # requests per second through each HAProxy
CLIENT_TIMEOUT = 10.0  # seconds; a request without a response by then is lost
LOAD_THREADS = 48  # room for requests that hang until CLIENT_TIMEOUT
LOAD_PATH = "/"  # the stand-in node returns 200 with its name on any path
RECOVERY_TIMEOUT = 60.0  # seconds for node b to be UP again in both HAProxies


def runtime_command(socket_path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to an HAProxy runtime API socket and return its reply."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(timeout)
        client.connect(str(socket_path))
        client.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_state(socket_path: Path, name: str) -> ServerState | None:
    for state in parse_show_stat(runtime_command(socket_path, "show stat")):
        if state.name == name:
            return state
    return None


def is_down(state: ServerState | None) -> bool:
    return state is not None and state.status.startswith("DOWN")


def is_fully_up(state: ServerState | None) -> bool:
    """Return whether the server is UP with no failed check pending ("UP 2/3" is not)."""
    return state is not None and state.status == "UP"


@dataclass
class Proxy:
    """One HAProxy of a site: its configuration name and its bench paths."""

    config: str
    bench: Bench

    def target(self) -> Target:
        return Target(
            "127.0.0.1",
            self.bench.port,
            DOMAIN,
            path=LOAD_PATH,
            ca_file=self.bench.directory.parent / "ca.pem",
            timeout=CLIENT_TIMEOUT,
        )

    def state_of(self, name: str) -> ServerState | None:
        return server_state(self.bench.socket, name)

    def force_up(self, name: str) -> None:
        """Mark `name` healthy through the runtime API after the node was restored."""
        runtime_command(self.bench.socket, f"set server authentik/{name} health up")


@dataclass
class Site:
    """Two nodes and the two HAProxies in front of them, all on loopback."""

    directory: Path
    nodes: list[Node]
    proxies: list[Proxy]
    node_cert: Path = field(init=False)
    node_key: Path = field(init=False)

    def __post_init__(self):
        self.node_cert = self.directory / "node.pem"
        self.node_key = self.directory / "node.key"

    @property
    def failing_node(self) -> Node:
        return next(node for node in self.nodes if node.name == FAILED_NODE)

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.bench.stop_haproxy()
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGCONT)
            node.kill()


def start_haproxy(config: Path, socket_path: Path, timeout: float = 15.0) -> None:
    """Start HAProxy in master-worker mode as a daemon and wait for its runtime API."""
    subprocess.run(
        ["haproxy", "-W", "-D", "-f", str(config)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            runtime_command(socket_path, "show info")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def make_proxy(directory: Path, config: str, ca, nodes: list[Node]) -> Proxy:
    """Render one configuration for the site's nodes and start HAProxy with it."""
    bench = Bench(directory / config, free_port(), ca, nodes)
    bench.directory.mkdir(parents=True, exist_ok=True)
    bench.install_certificate()
    env_dir = directory / "env"
    write_env(env_dir, config, {**base_values(), **bench.env_values()})
    settings = settings_in(env_dir, config)
    template = REFERENCE_TEMPLATE if config == "reference" else None
    bench.config.write_text(render_config(settings, template))
    start_haproxy(bench.config, bench.socket)
    return Proxy(config, bench)


def base_values() -> dict[str, str]:
    """Return the lab's values, which the HAProxy keys of each proxy then override."""
    values = lab_values()
    values.pop("SMTP_CA_FILE", None)  # the lab relay's CA; unused by HAProxy
    return values


def make_site(directory: Path) -> Site:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    (directory / "ca.pem").write_bytes(ca.pem)
    nodes = start_nodes(directory, ca)
    site = Site(directory, nodes, [])
    try:
        for config in CONFIGS:
            site.proxies.append(make_proxy(directory, config, ca, nodes))
        wait_until_all_up(site, RECOVERY_TIMEOUT)
    except BaseException:
        site.stop()
        raise
    return site


def wait_until_all_up(site: Site, timeout: float) -> None:
    """Wait until every node is fully UP, after at least one check, in every proxy."""
    deadline = time.monotonic() + timeout
    while True:
        states = [
            server_state(proxy.bench.socket, node.name)
            for proxy in site.proxies
            for node in site.nodes
        ]
        if all(is_fully_up(state) and state.is_checked for state in states):
            return
        if time.monotonic() > deadline:
            described = ", ".join(state.describe() for state in states if state)
            raise RuntimeError(
                f"nodes not UP within {timeout} s in {site.directory}: {described}"
            )
        time.sleep(0.2)


def fail_node(node: Node, mode: str) -> None:
    if mode == "kill":
        node.process.kill()
        node.process.wait(timeout=10)
    elif mode == "hang":
        os.kill(node.process.pid, signal.SIGSTOP)
    else:
        node.set_ready(False)


def restore_node(site: Site, mode: str) -> None:
    node = site.failing_node
    if mode == "kill":
        node.start(site.node_cert, site.node_key)
    elif mode == "hang":
        os.kill(node.process.pid, signal.SIGCONT)
    else:
        node.set_ready(True)


def recover(site: Site, mode: str) -> None:
    """Restore node b and bring it back UP in both proxies for the next run.

    The runtime API marks it healthy at once, so the next run does not wait
    for the reference's 20 s checks. The next check then confirms it.
    """
    restore_node(site, mode)
    time.sleep(0.5)
    for proxy in site.proxies:
        proxy.force_up(FAILED_NODE)
    wait_until_all_up(site, RECOVERY_TIMEOUT)


def check_result(state: ServerState) -> str:
    """Return the last check's status and detail, such as `L4CON: Connection refused`."""
    check = " ".join(part for part in (state.check_status, state.check_code) if part)
    if state.check_detail:
        return f"{check}: {state.check_detail}" if check else state.check_detail
    return check or "-"


@dataclass
class Watch:
    """When each proxy first reported node b DOWN, as a time.monotonic() value."""

    down_at: dict[str, float] = field(default_factory=dict)
    check: dict[str, str] = field(default_factory=dict)


def watch_until_down(site: Site, cap: float, started: float) -> Watch:
    """Poll every proxy until each reports node b DOWN or `cap` seconds have passed."""
    watch = Watch()
    while time.monotonic() - started < cap and len(watch.down_at) < len(site.proxies):
        for proxy in site.proxies:
            if proxy.config in watch.down_at:
                continue
            state = proxy.state_of(FAILED_NODE)
            if is_down(state):
                watch.down_at[proxy.config] = time.monotonic()
                watch.check[proxy.config] = check_result(state)
        time.sleep(POLL_INTERVAL)
    return watch


def run_once(site: Site, mode: str) -> dict:
    """Fail node b once under load and return each configuration's figures."""
    generators = {
        proxy.config: LoadGenerator(
            proxy.target(),
            rate=LOAD_RATE,
            concurrency=LOAD_THREADS,
            max_duration=DETECTION_CAP[mode] + 60,
        ).start()
        for proxy in site.proxies
    }
    time.sleep(random.uniform(*WARM_UP))  # noqa: S311 - spreads the check phase, not security
    failed_at = time.monotonic()
    fail_node(site.failing_node, mode)
    watch = watch_until_down(site, DETECTION_CAP[mode], failed_at)
    time.sleep(AFTER_DETECTION)
    results = {config: gen.stop() for config, gen in generators.items()}
    recover(site, mode)
    return {
        config: figures_of(results[config], watch, config, failed_at)
        for config in CONFIGS
    }


def figures_of(result: LoadResult, watch: Watch, config: str, failed_at: float) -> dict:
    failure = result.offset(failed_at)
    before = [record for record in result.records if record.start < failure]
    after = [record for record in result.records if record.end >= failure]
    down_at = watch.down_at.get(config)
    return {
        "detection_seconds": None if down_at is None else down_at - failed_at,
        "check_at_down": watch.check.get(config),
        "failure_offset": failure,
        "before": summarize_records(before),
        "after": summarize_records(after),
        "load": result.as_json(),
    }


def run_mode(site: Site, mode: str, runs: int, results: dict, log) -> None:
    results[mode] = []
    for number in range(runs):
        figures = run_once(site, mode)
        results[mode].append(figures)
        log(
            f"failover {mode} run {number + 1}/{runs}: "
            + ", ".join(
                f"{config} {describe_detection(figures[config], mode)}, "
                f"{figures[config]['after']['failed']} lost"
                for config in CONFIGS
            )
        )


def describe_detection(figures: dict, mode: str) -> str:
    seconds = figures["detection_seconds"]
    if seconds is None:
        return f"not DOWN within {DETECTION_CAP[mode]:.0f} s"
    return f"DOWN after {seconds:.1f} s"


def run(runs: int, log=print) -> dict:
    """Run every failure mode `runs` times, the modes side by side; return the figures."""
    results: dict = {}
    errors: dict[str, BaseException] = {}
    with tempfile.TemporaryDirectory(prefix="authops-bench-failover-") as temporary:
        sites = {mode: make_site(Path(temporary) / mode) for mode in MODES}
        try:
            threads = [
                threading.Thread(
                    target=guarded,
                    args=(
                        errors,
                        mode,
                        run_mode,
                        sites[mode],
                        mode,
                        runs,
                        results,
                        log,
                    ),
                    daemon=True,  # an interrupted bench must not wait for them
                )
                for mode in MODES
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for site in sites.values():
                site.stop()
    if errors:
        mode, error = next(iter(errors.items()))
        raise RuntimeError(f"failover {mode} failed: {error}") from error
    return {
        "modes": results,
        "summary": summarize(results),
        "caps": DETECTION_CAP,
        "rate": LOAD_RATE,
    }


def guarded(errors: dict, key: str, function, *args) -> None:
    try:
        function(*args)
    except BaseException as error:  # reported by run() after every thread ended
        errors[key] = error


def summarize(results: dict) -> dict:
    """Return median, min and max of detection time and lost requests per mode and config."""
    summary = {}
    for mode, runs in results.items():
        summary[mode] = {
            config: {
                "detection_seconds": spread(
                    [run[config]["detection_seconds"] for run in runs]
                ),
                "lost": spread([run[config]["after"]["failed"] for run in runs]),
                "sent": spread([run[config]["after"]["sent"] for run in runs]),
                "failed_before": sum(run[config]["before"]["failed"] for run in runs),
                "checks": sorted({run[config]["check_at_down"] or "-" for run in runs}),
            }
            for config in CONFIGS
        }
    return summary
