"""Where the lab keeps its state, and the services it runs on this machine.

The lab's settings come from env/lab.env like any deployment's. This module
contains only what production does not have: the lab's own database server,
mail server and certificate authority.
"""

import os
import secrets
from pathlib import Path

from authops import REPO_ROOT
from authops.labpki import write_private

LAB_ROOT = Path("/var/lib/authops-lab")
LAB_DIR = REPO_ROOT / ".lab"  # files the operator uses: the CA certificate
CA_CERT = LAB_DIR / "ca.crt"  # a copy for the operator, beside the checkout
CA_KEY = LAB_ROOT / "ca" / "ca.key"
# The CA's own certificate stays beside its key, so that every checkout on this
# machine shares one lab CA; the lab override hands it to the containers.
CA_STORE_CERT = LAB_ROOT / "ca" / "ca.crt"
POSTGRES_DIR = LAB_ROOT / "postgres"
POSTGRES_PASSWORD_FILE = LAB_ROOT / "postgres-superuser.password"
SMTP_DIR = LAB_ROOT / "smtp"
HAPROXY_DIR = LAB_ROOT / "haproxy"
MAIL_RECIPIENT = "admin@sso.lab.test"
LAB_URL = "https://sso.lab.test:8443/"


def superuser_password() -> str:
    """Return the lab PostgreSQL superuser's password, generating it on first use."""
    if POSTGRES_PASSWORD_FILE.is_file():
        return POSTGRES_PASSWORD_FILE.read_text().strip()
    password = secrets.token_urlsafe(24)
    write_private(POSTGRES_PASSWORD_FILE, password.encode() + b"\n")
    return password


def lab_environment(**extra: str) -> dict[str, str]:
    """Return this process's environment with the lab's env file selected."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OPS_ENV", "OPS_ENV_DIR")
    }
    environment.update(OPS_ENV="lab", **extra)
    return environment
