"""Tasks for the lab: the whole chain on this machine, for rehearsal and tests.

`lab.up` starts the lab's own services (dockerd in swarm mode, PostgreSQL,
an SMTP relay, a certificate authority), then runs the main job with the same
tasks and flags an operator uses in production, each as its own `invoke`
process.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from invoke import Collection

from authops import REPO_ROOT, errors, labnode, localsvc, output, pgcluster, standin
from authops.errors import OpsError
from authops.labenv import (
    CA_CERT,
    CA_KEY,
    CA_STORE_CERT,
    LAB_DIR,
    LAB_ROOT,
    LAB_URL,
    MAIL_RECIPIENT,
    POSTGRES_DIR,
    SMTP_DIR,
    lab_environment,
    superuser_password,
)
from authops.labpki import load_or_create_authority, write_lineage, write_private
from authops.settings import Settings, load_settings
from authops.tasking import ops_task

SMTP_TLS_PORT = 2465  # the lab relay's implicit-TLS port, beside SMTP_PORT (STARTTLS)
SMTP_PIDFILE = SMTP_DIR / "labsmtp.pid"
STEP_TIMEOUT = 900  # seconds for one task of the main job
# The lab tasks ignore OPS_ENV, so that an operator's shell set for production
# never brings up, or tears down, a lab with a production env file.
LAB_ENV_HELP = "Env file to use: env/NAME.env (default: lab; OPS_ENV is not used here)."


def require_lab(settings: Settings) -> None:
    """Reject an env whose hosts are not all `local`: the lab runs only on this machine."""
    remote = [
        spec
        for spec in (*settings.managers, *settings.haproxy_hosts)
        if spec != "local"
    ]
    if remote:
        raise OpsError(
            f"env {settings.env_name} names remote hosts ({', '.join(remote)}): the lab runs only `local`"
        )
    if os.geteuid() != 0:
        raise OpsError("the lab starts dockerd and PostgreSQL as root: run it as root")


def ensure_certificates(settings: Settings) -> None:
    """Create the lab CA, the site certificate and the relay's certificate unless current."""
    authority = load_or_create_authority(CA_STORE_CERT, CA_KEY)
    CA_CERT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CA_STORE_CERT, CA_CERT)
    live_dir = Path(settings.get("CERT_LIVE_ROOT")) / settings.domain
    site = write_lineage(authority, [settings.domain], live_dir)
    relay = write_lineage(
        authority, [settings.smtp.host, "127.0.0.1", "localhost"], SMTP_DIR / "tls"
    )
    state = errors.CHANGED if site or relay else errors.UNCHANGED
    output.status(
        "certificates",
        state,
        f"CA {CA_CERT}, site certificate in {live_dir}",
    )


def ensure_postgres(settings: Settings) -> None:
    database = settings.database
    listen = f"127.0.0.1,{localsvc.GWBRIDGE_GATEWAY}"
    cluster = pgcluster.Cluster(POSTGRES_DIR / "data", database.port, listen, "")
    was_running = cluster.is_running()
    pgcluster.create_cluster(
        POSTGRES_DIR, database.port, superuser_password(), listen=listen
    )
    state = errors.UNCHANGED if was_running else errors.CHANGED
    output.status("postgresql", state, f"listening on {listen} port {database.port}")


def smtp_running() -> bool:
    if not SMTP_PIDFILE.is_file():
        return False
    try:
        os.kill(int(SMTP_PIDFILE.read_text().strip()), 0)
    except (ValueError, ProcessLookupError):
        return False
    return True


def ensure_smtp(settings: Settings) -> None:
    """Start the lab relay: STARTTLS on SMTP_PORT, implicit TLS beside it, AUTH required."""
    smtp = settings.smtp
    if smtp_running():
        output.status("smtp", errors.UNCHANGED, f"listening on {smtp.host}:{smtp.port}")
        return
    password_file = SMTP_DIR / "password"
    write_private(password_file, smtp.password.encode())
    process = localsvc.start_background(
        [
            sys.executable,
            "-m",
            "authops.labsmtp",
            "--host",
            smtp.host,
            "--starttls-port",
            str(smtp.port),
            "--tls-port",
            str(SMTP_TLS_PORT),
            "--cert",
            str(SMTP_DIR / "tls" / "fullchain.pem"),
            "--key",
            str(SMTP_DIR / "tls" / "privkey.pem"),
            "--user",
            smtp.username,
            "--password-file",
            str(password_file),
            "--delivery-dir",
            str(SMTP_DIR / "mail"),
        ],
        SMTP_DIR / "labsmtp.log",
    )
    SMTP_PIDFILE.write_text(f"{process.pid}\n")
    localsvc.wait_for_port(smtp.host, smtp.port, timeout=15)
    output.status(
        "smtp",
        errors.CHANGED,
        f"started on {smtp.host}:{smtp.port} (STARTTLS) and :{SMTP_TLS_PORT} (TLS)",
    )


def ensure_image(settings: Settings) -> None:
    """Build the stand-in image, or check that the configured image is on this machine."""
    if settings.get("AUTHENTIK_IMAGE") == standin.LOOPBACK_IMAGE:
        standin.ensure_standin_image()
        output.status(
            "image",
            errors.OK,
            f"{settings.image}: the local stand-in (no container registry is used). To rehearse with "
            f"authentik itself, pull ghcr.io/goauthentik/server:{settings.get('AUTHENTIK_TAG')} and set "
            "AUTHENTIK_IMAGE=ghcr.io/goauthentik/server in env/lab.env",
        )
        return
    present = (
        localsvc.docker("image", "inspect", settings.image, check=False).returncode == 0
    )
    if not present:
        output.phase(f"pulling {settings.image}")
        localsvc.docker("pull", settings.image, timeout=900)
    output.status("image", errors.OK, f"{settings.image}: the real authentik image")


def wants_second_node(settings: Settings) -> bool:
    """Return whether SWARM_NODES lists the second node's address."""
    return any(node.address == localsvc.LAB_NODE_ADDRESS for node in settings.nodes)


def run_task(
    name: str, *arguments: str, env_name: str, extra_env: dict[str, str] | None = None
) -> None:
    """Run one task of the main job as its own `invoke` process, streaming its output."""
    command = [sys.executable, "-m", "invoke", name, "--env", env_name, *arguments]
    output.phase(f"invoke {name} --env {env_name} {' '.join(arguments)}".rstrip())
    environment = lab_environment(**(extra_env or {}))
    environment["OPS_ENV"] = env_name
    if os.environ.get("OPS_ENV_DIR"):
        environment["OPS_ENV_DIR"] = os.environ["OPS_ENV_DIR"]
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=environment, timeout=STEP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise OpsError(
            f"lab.up: `invoke {name}` timed out after {STEP_TIMEOUT} s"
        ) from None
    if result.returncode != 0:
        raise OpsError(
            f"lab.up stopped: `invoke {name} --env {env_name}` failed (exit {result.returncode}); see above"
        )


def run_main_job(settings: Settings) -> None:
    """Run the production main job against the lab, task by task."""
    name = settings.env_name
    database = settings.database
    run_task("env.check", env_name=name)
    run_task(
        "db.bootstrap",
        "--host",
        "127.0.0.1",
        "--port",
        str(database.port),
        env_name=name,
        extra_env={"PGPASSWORD": superuser_password()},
    )
    run_task("nfs.prepare", env_name=name)
    run_task("certs.combine", env_name=name)
    run_task("stack.deploy", env_name=name)
    # haproxy.start needs an installed file, so it comes after haproxy.reload.
    # A reload with no HAProxy running installs the file and reloads nothing.
    run_task("haproxy.reload", env_name=name)
    run_task("haproxy.start", env_name=name)
    run_task(
        "smtp.test", "--to", MAIL_RECIPIENT, "--ca-file", str(CA_CERT), env_name=name
    )
    run_task("doctor", env_name=name)


def print_next_steps(settings: Settings) -> None:
    port = settings.get("HAPROXY_BIND_PORT")
    output.emit("")
    output.emit(f"The lab is up: {LAB_URL}")
    output.emit(f"  CA certificate: {CA_CERT}")
    output.emit(
        f"  Try it: curl --cacert {CA_CERT} --resolve {settings.domain}:{port}:127.0.0.1 {LAB_URL}-/health/ready/"
    )
    output.emit(
        f"  In a browser, map {settings.domain} to 127.0.0.1 in /etc/hosts and trust the CA."
    )
    output.emit(
        "  Status: .venv/bin/invoke lab.status    Tear down: .venv/bin/invoke lab.down"
    )


@ops_task(help={"env": LAB_ENV_HELP + " Every host in it must be `local`."})
def up(c, env=None):
    """Bring up the whole chain on this machine and run the main job on it."""
    settings = load_settings(env or "lab")
    require_lab(settings)
    started = time.monotonic()
    output.phase("starting the lab's services")
    localsvc.ensure_dockerd()
    for directory in (LAB_ROOT, LAB_DIR, SMTP_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    ensure_certificates(settings)
    ensure_postgres(settings)
    ensure_smtp(settings)
    ensure_image(settings)
    if wants_second_node(settings):
        output.phase(f"starting the second swarm node, {labnode.NAME}")
        labnode.ensure_node(settings.image)
    run_main_job(settings)
    output.info(f"lab.up took {time.monotonic() - started:.0f} s")
    print_next_steps(settings)


def stop_pidfile(path: Path, name: str) -> None:
    """Send SIGTERM to the process in `path`, if it runs, and wait for it to exit."""
    if not path.is_file():
        return
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (ValueError, IndexError, ProcessLookupError):
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            output.status(name, errors.CHANGED, "stopped")
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    output.status(name, errors.CHANGED, "killed after 10 s")


def remove_stack(settings: Settings) -> None:
    if not localsvc.dockerd_running() or localsvc.swarm_state() != "active":
        return
    stack = settings.stack_name
    services = localsvc.docker(
        "stack", "services", "-q", stack, check=False
    ).stdout.split()
    if services:
        localsvc.docker("stack", "rm", stack)
        deadline = time.monotonic() + 120
        while localsvc.docker(
            "ps", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"
        ).stdout.strip():
            if time.monotonic() > deadline:
                raise OpsError(
                    f"containers of stack {stack} still run after 120 s: see `docker ps`"
                )
            time.sleep(1)
        output.status(f"stack {stack}", errors.CHANGED, "removed")
    secrets = localsvc.docker(
        "secret", "ls", "-q", "--filter", f"label=authops.stack={stack}"
    ).stdout.split()
    if secrets:
        localsvc.docker("secret", "rm", *secrets)
        output.status("swarm secrets", errors.CHANGED, f"removed {len(secrets)}")


def remove_docker() -> None:
    """Leave the swarm, remove the lab's network and images, and stop dockerd."""
    if not localsvc.dockerd_running():
        return
    localsvc.docker("swarm", "leave", "--force", check=False)
    localsvc.docker("network", "rm", "docker_gwbridge", check=False)
    images = localsvc.docker(
        "image", "ls", "-q", "--filter", "reference=authops/*"
    ).stdout.split()
    if images:
        localsvc.docker("image", "rm", "-f", *set(images), check=False)
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
    output.status(
        "dockerd", errors.CHANGED, "swarm left, lab images removed, dockerd stopped"
    )


@ops_task(
    help={
        "env": LAB_ENV_HELP,
        "keep_docker": "Keep dockerd, the swarm and the built images, so that the next lab.up is quick (the second node is removed all the same).",
    }
)
def down(c, env=None, keep_docker=False):
    """Remove everything the lab made: stack, secrets, services, files and, unless kept, docker."""
    settings = load_settings(env or "lab")
    require_lab(settings)
    output.phase("removing the lab")
    remove_stack(settings)
    stop_pidfile(Path(settings.get("HAPROXY_PIDFILE")), "haproxy")
    stop_pidfile(SMTP_PIDFILE, "smtp")
    # After HAProxy: its checks must not reach for the node's address once it is gone.
    labnode.remove_node()
    cluster = pgcluster.Cluster(POSTGRES_DIR / "data", settings.database.port, "", "")
    if (POSTGRES_DIR / "data" / "PG_VERSION").exists() and cluster.is_running():
        cluster.stop()
        output.status("postgresql", errors.CHANGED, "stopped")
    for directory in (LAB_ROOT, LAB_DIR):
        if directory.exists():
            shutil.rmtree(directory)
            output.status(str(directory), errors.CHANGED, "removed")
    if not keep_docker:
        remove_docker()
    output.info("the lab is down")


@ops_task(help={"env": LAB_ENV_HELP})
def status(c, env=None):
    """Show which of the lab's services run."""
    settings = load_settings(env or "lab")
    docker_up = localsvc.dockerd_running()
    output.status(
        "dockerd",
        errors.OK if docker_up else errors.FAILED,
        "running" if docker_up else "not running",
    )
    if docker_up:
        output.status("swarm", errors.OK, localsvc.swarm_state())
        services = localsvc.docker(
            "service",
            "ls",
            "--filter",
            f"label=com.docker.stack.namespace={settings.stack_name}",
            "--format",
            "{{.Name}} {{.Replicas}} {{.Image}}",
            check=False,
        ).stdout.strip()
        for line in services.splitlines() or ["no services"]:
            output.status("stack", errors.OK, line)
    if wants_second_node(settings):
        output.status(f"node {labnode.NAME}", *labnode.describe())
    cluster = pgcluster.Cluster(POSTGRES_DIR / "data", settings.database.port, "", "")
    pg_up = (POSTGRES_DIR / "data" / "PG_VERSION").exists() and cluster.is_running()
    output.status(
        "postgresql",
        errors.OK if pg_up else errors.FAILED,
        "running" if pg_up else "not running",
    )
    output.status(
        "smtp",
        errors.OK if smtp_running() else errors.FAILED,
        "running" if smtp_running() else "not running",
    )
    pidfile = Path(settings.get("HAPROXY_PIDFILE"))
    output.status(
        "haproxy",
        errors.OK if pidfile.is_file() else errors.FAILED,
        f"pidfile {pidfile}",
    )


ns = Collection("lab")
ns.add_task(up)
ns.add_task(down)
ns.add_task(status)
