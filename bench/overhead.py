"""Tool overhead: start-up, an idle db.bootstrap against Ansible, and SSH fan-out.

- `invoke --list` from the checkout: the start-up cost of every task.
- `invoke db.bootstrap` when there is nothing to do, against the Ansible
  playbook bench/ansible/bootstrap.yml that manages the same role, password,
  database, extension and grants with community.postgresql. Both run against
  the lab's PostgreSQL server, on a database and role of the bench's own
  (BENCH_DATABASE), so the lab's authentik role is never touched. One run of
  each creates them first; that run is not measured.
- authops.hosts.fan_out of a read-only command (hostname and clock, as
  `hosts.check` runs it) to five sshd on loopback, in parallel and serially.

Each figure times the whole process or call, from start to exit.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from authops import REPO_ROOT
from authops.hosts import fan_out, probe_host
from authops.labenv import superuser_password
from bench import benchdb
from bench.envs import settings_in, write_lab_copy
from bench.stats import ratio, spread
from tests.support.sshd import SshServer, start_sshd

BENCH_DIR = Path(__file__).resolve().parent
ANSIBLE_VENV = BENCH_DIR / ".venv"
ANSIBLE_REQUIREMENTS = BENCH_DIR / "requirements-ansible.txt"
PLAYBOOK = BENCH_DIR / "ansible" / "bootstrap.yml"
BENCH_DATABASE = "authops_bench_db"  # database and role name, on the lab's server
SSH_HOSTS = 5
PLAY_RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def timed(command: list[str], env: dict[str, str] | None = None, timeout: float = 300):
    """Run `command` from the checkout; return (seconds, CompletedProcess)."""
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return time.monotonic() - started, result


def invoke_command(*arguments: str) -> list[str]:
    return [str(REPO_ROOT / ".venv" / "bin" / "invoke"), *arguments]


def measure_invoke_list(runs: int, log) -> dict:
    timed(invoke_command("--list"))  # warm the file cache; not counted
    seconds = []
    for _ in range(runs):
        elapsed, result = timed(invoke_command("--list"))
        if result.returncode != 0:
            raise RuntimeError(f"invoke --list failed: {result.stderr.strip()}")
        seconds.append(elapsed)
    log(f"invoke --list: median {spread(seconds)['median']:.2f} s")
    return {"seconds": spread(seconds)}


# --- db.bootstrap against Ansible ------------------------------------------


def ensure_ansible_venv(log) -> Path:
    """Create bench/.venv with the pinned Ansible unless it matches the pins already."""
    stamp = ANSIBLE_VENV / ".requirements.sha256"
    expected = hashlib.sha256(ANSIBLE_REQUIREMENTS.read_bytes()).hexdigest()
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if playbook.exists() and stamp.is_file() and stamp.read_text().strip() == expected:
        return playbook
    log("creating bench/.venv with Ansible (about a minute)")
    subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
    subprocess.run(
        [
            str(ANSIBLE_VENV / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(ANSIBLE_REQUIREMENTS),
        ],
        check=True,
        timeout=900,
    )
    stamp.write_text(expected + "\n")
    return playbook


def ansible_version(playbook: Path) -> str:
    result = subprocess.run(
        [str(playbook.parent / "ansible"), "--version"], capture_output=True, text=True
    )
    first = result.stdout.splitlines()[0] if result.stdout else "unknown"
    bundle = subprocess.run(
        [str(playbook.parent / "pip"), "show", "ansible"],
        capture_output=True,
        text=True,
    )
    package = re.search(r"^Version: (.+)$", bundle.stdout, re.MULTILINE)
    return f"ansible {package[1] if package else '?'} ({first.strip()})"


def bootstrap_environments(env_dir: Path, password: str) -> tuple[dict, dict]:
    """Return the process environments of db.bootstrap and of the playbook."""
    settings = settings_in(env_dir, "bench")
    database = settings.database
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OPS_ENV", "OPS_ENV_DIR")
    }
    tool = {
        **base,
        "OPS_ENV_DIR": str(env_dir),
        "PGPASSWORD": superuser_password(),
    }
    ansible = {
        **base,
        "PGPASSWORD": superuser_password(),
        "BENCH_PG_HOST": "127.0.0.1",
        "BENCH_PG_PORT": str(database.port),
        "BENCH_DB_NAME": database.name,
        "BENCH_DB_USER": database.user,
        "BENCH_DB_PASSWORD": password,
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
    }
    return tool, ansible


def run_tool(tool_env: dict, port: int) -> tuple[float, int]:
    """Run db.bootstrap; return its seconds and the number of items it changed."""
    elapsed, result = timed(
        invoke_command(
            "db.bootstrap", "--env", "bench", "--host", "127.0.0.1", "--port", str(port)
        ),
        env=tool_env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"db.bootstrap failed: {result.stdout}{result.stderr}")
    return elapsed, result.stdout.count("] changed:")


def run_playbook(playbook: Path, ansible_env: dict) -> tuple[float, int]:
    """Run the playbook; return its seconds and Ansible's count of changed tasks."""
    elapsed, result = timed(
        [str(playbook), "-i", "localhost,", str(PLAYBOOK)], env=ansible_env
    )
    recap = PLAY_RECAP.search(result.stdout)
    if result.returncode != 0 or recap is None:
        raise RuntimeError(f"ansible-playbook failed: {result.stdout}{result.stderr}")
    return elapsed, int(recap[2])


def measure_bootstrap(runs: int, log) -> dict:
    playbook = ensure_ansible_venv(log)
    values = benchdb.database_values(BENCH_DATABASE)
    with tempfile.TemporaryDirectory(prefix="authops-bench-db-") as temporary:
        env_dir = Path(temporary)
        write_lab_copy(env_dir, "bench", **values)
        tool_env, ansible_env = bootstrap_environments(
            env_dir, values["AUTHENTIK_POSTGRESQL__PASSWORD"]
        )
        port = int(ansible_env["BENCH_PG_PORT"])
        try:
            figures = compare_bootstrap(playbook, tool_env, ansible_env, port, runs)
        finally:
            benchdb.drop(BENCH_DATABASE, port)
    figures["ansible_version"] = ansible_version(playbook)
    log(
        f"db.bootstrap {figures['tool']['median']:.2f} s, "
        f"ansible-playbook {figures['ansible']['median']:.2f} s"
    )
    return figures


def compare_bootstrap(
    playbook: Path, tool_env: dict, ansible_env: dict, port: int, runs: int
) -> dict:
    """Create the objects once, then time idle runs of both tools, alternating."""
    run_tool(tool_env, port)
    run_playbook(playbook, ansible_env)
    tool_seconds, ansible_seconds = [], []
    tool_changes, ansible_changes = 0, 0
    for number in range(runs):
        order = ("tool", "ansible") if number % 2 == 0 else ("ansible", "tool")
        for tool_name in order:
            if tool_name == "tool":
                elapsed, changed = run_tool(tool_env, port)
                tool_seconds.append(elapsed)
                tool_changes += changed
            else:
                elapsed, changed = run_playbook(playbook, ansible_env)
                ansible_seconds.append(elapsed)
                ansible_changes += changed
    tool, ansible = spread(tool_seconds), spread(ansible_seconds)
    return {
        "tool": tool,
        "ansible": ansible,
        "ratio": ratio(ansible, tool),
        "tool_changes": tool_changes,
        "ansible_changes": ansible_changes,
    }


# --- SSH fan-out -------------------------------------------------------------


def start_servers(directory: Path) -> tuple[list[SshServer], dict[str, str]]:
    """Start SSH_HOSTS sshd that all accept the first one's client key.

    Returns the servers and the env values (key, known_hosts) that reach them.
    """
    servers = [start_sshd(directory / f"sshd{number}") for number in range(SSH_HOSTS)]
    public_key = (servers[0].directory / "client_key.pub").read_text()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(
        "".join(server.known_hosts.read_text() for server in servers)
    )
    for server in servers[1:]:
        (server.directory / "authorized_keys").write_text(public_key)
    values = {
        "SSH_KEY": str(servers[0].client_key),
        "SSH_KNOWN_HOSTS": str(known_hosts),
        "SSH_STRICT_HOST_KEYS": "true",
    }
    return servers, values


def fan_out_seconds(specs: list[str], values: dict, parallel: bool) -> float:
    started = time.monotonic()
    results = fan_out(specs, values, probe_host, parallel=parallel)
    elapsed = time.monotonic() - started
    failed = [f"{spec}: {error}" for spec, _, error in results if error]
    if failed:
        raise RuntimeError("fan-out failed: " + "; ".join(failed))
    return elapsed


def measure_fan_out(runs: int, log) -> dict:
    with tempfile.TemporaryDirectory(prefix="authops-bench-ssh-") as temporary:
        servers, values = start_servers(Path(temporary))
        try:
            specs = [server.spec() for server in servers]
            fan_out_seconds(specs, values, parallel=True)  # warm-up, not counted
            parallel, serial = [], []
            for number in range(runs):
                order = (True, False) if number % 2 == 0 else (False, True)
                for mode in order:
                    elapsed = fan_out_seconds(specs, values, parallel=mode)
                    (parallel if mode else serial).append(elapsed)
        finally:
            for server in servers:
                server.stop()
    figures = {
        "hosts": SSH_HOSTS,
        "parallel": spread(parallel),
        "serial": spread(serial),
    }
    figures["ratio"] = ratio(figures["serial"], figures["parallel"])
    log(
        f"fan-out to {SSH_HOSTS} hosts: parallel {figures['parallel']['median']:.2f} s, "
        f"serial {figures['serial']['median']:.2f} s"
    )
    return figures


def run(runs: int, log=print) -> dict:
    return {
        "invoke_list": measure_invoke_list(max(runs, 5), log),
        "bootstrap": measure_bootstrap(runs, log),
        "fan_out": measure_fan_out(runs, log),
    }
