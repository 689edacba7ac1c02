"""A stack to deploy in tests: its own PostgreSQL, folders, ports and env files.

The database listens on 127.0.0.1 and on 172.31.250.1, the host side of
docker_gwbridge, where the stack's containers reach it.
"""

import json
import os
import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg

from authops.labenv import CA_KEY, CA_STORE_CERT
from authops.labpki import load_or_create_authority
from authops.localsvc import GWBRIDGE_GATEWAY, docker, free_port
from authops.pgcluster import Cluster, create_cluster
from authops.standin import LOOPBACK_IMAGE, TAG
from tests.support.envfiles import write_env

SUPERUSER_PASSWORD = "test-superuser-0123456789"
# A `$` in the password and in a plain value checks that `$` survives the
# stack file, where `docker stack deploy` would substitute `$VAR`.
DB_PASSWORD = "test-db-pa$word-0123456789"
SMTP_USERNAME = "mailer$user"


@dataclass
class StackLab:
    stack: str
    env_dir: Path
    cluster: Cluster
    nfs_export: Path
    http_port: int
    https_port: int

    def values(self, **changes: str | None) -> dict[str, str | None]:
        """Return the env file keys that differ from env/lab.env, with `changes` applied."""
        values: dict[str, str | None] = {
            "STACK_NAME": self.stack,
            "AUTHENTIK_IMAGE": LOOPBACK_IMAGE,
            "AUTHENTIK_TAG": TAG,
            "AUTHENTIK_POSTGRESQL__HOST": GWBRIDGE_GATEWAY,
            "AUTHENTIK_POSTGRESQL__PORT": str(self.cluster.port),
            "AUTHENTIK_POSTGRESQL__PASSWORD": DB_PASSWORD,
            "NFS_SERVER": "local",
            "NFS_EXPORT": str(self.nfs_export),
            "SMTP_USERNAME": SMTP_USERNAME,
            "HTTP_PORT": str(self.http_port),
            "HTTPS_PORT": str(self.https_port),
            "HEALTHCHECK_INTERVAL": "2",
            "HEALTHCHECK_START_PERIOD": "4",
            "UPDATE_MONITOR": "4",
            "DEPLOY_TIMEOUT": "150",
        }
        values.update(changes)
        return values

    def write_env(self, name: str, **changes: str | None) -> str:
        """Write env/NAME.env for this stack and return NAME, for load_settings.

        The lab's values deploy with stack/lab.override.yml, which gives the
        services the lab CA as a Swarm config, so the CA must exist even when
        the lab is down.
        """
        load_or_create_authority(CA_STORE_CERT, CA_KEY)
        write_env(self.env_dir, name, self.values(**changes))
        return name


def start_database(base_dir: Path) -> Cluster:
    """Start PostgreSQL for the stack and create its role and database.

    `base_dir` and its parents must be searchable by the postgres user.
    """
    port = free_port()
    cluster = create_cluster(
        base_dir, port, SUPERUSER_PASSWORD, listen=f"127.0.0.1,{GWBRIDGE_GATEWAY}"
    )
    allow_same_host(cluster)
    with psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=SUPERUSER_PASSWORD,
        dbname="postgres",
        autocommit=True,
    ) as connection:
        connection.execute(
            psycopg.sql.SQL("CREATE ROLE authentik LOGIN PASSWORD {}").format(
                psycopg.sql.Literal(DB_PASSWORD)
            )
        )
        connection.execute(
            "CREATE DATABASE authentik OWNER authentik ENCODING 'UTF8' TEMPLATE template0"
        )
    return cluster


def allow_same_host(cluster: Cluster) -> None:
    """Accept connections from this machine's own addresses.

    Docker's masquerade rule for docker_gwbridge rewrites the source of a
    connection from this machine to 172.31.250.1 to the machine's main
    address, which the cluster's pg_hba.conf does not list.
    """
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text() + "host all all samehost scram-sha-256\n")
    result = cluster.pg_ctl("reload")
    assert result.returncode == 0, result.stderr


def make_nfs_folders(base_dir: Path) -> Path:
    """Create media, templates and certs for the lab override's bind volumes."""
    for name in ("media", "templates", "certs"):
        folder = base_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, 1000, 1000)
    return base_dir


def new_stack_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def unverified_tls() -> ssl.SSLContext:
    """Accept the stand-in's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_status(url: str) -> int | None:
    """Return the HTTP status of GET url, or None when nothing responds."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - http(s) URLs built by the tests
            url, timeout=5, context=unverified_tls()
        ) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def inspect_service(name: str) -> dict:
    return json.loads(docker("service", "inspect", name).stdout)[0]


def running_containers(service: str) -> list[str]:
    """Return the container IDs of the service's running tasks on this node."""
    result = docker(
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        f"label=com.docker.swarm.service.name={service}",
    )
    return result.stdout.split()


def stack_secrets(stack: str) -> set[str]:
    result = docker(
        "secret",
        "ls",
        "--filter",
        f"label=authops.stack={stack}",
        "--format",
        "{{.Name}}",
    )
    return set(result.stdout.split())


def remove_stack(stack: str) -> None:
    """Remove a test stack with its secrets and volumes, whatever state it is in."""
    docker("stack", "rm", stack, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = docker(
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.stack.namespace={stack}",
            check=False,
        )
        services = docker(
            "service",
            "ls",
            "-q",
            "--filter",
            f"label=com.docker.stack.namespace={stack}",
            check=False,
        )
        if not listed.stdout.strip() and not services.stdout.strip():
            break
        time.sleep(1)
    for name in stack_secrets(stack):
        docker("secret", "rm", name, check=False)
    volumes = docker(
        "volume",
        "ls",
        "-q",
        "--filter",
        f"label=com.docker.stack.namespace={stack}",
        check=False,
    )
    for volume in volumes.stdout.split():
        docker("volume", "rm", volume, check=False)


def remove_lock(stack: str) -> None:
    shutil.rmtree(f"/var/lib/authops/locks/{stack}.lock", ignore_errors=True)


def audit_lines(stack: str) -> list[str]:
    path = Path("/var/log/authops-deploys.log")
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if f"stack={stack} " in line]
