"""authentik's configuration by environment variables, as far as the stand-in uses it.

A value written `file:///abs/path` is read from that file with surrounding
white space stripped; `env://NAME` is the value of another variable.
Defaults are authentik's own, so a missing database host means `localhost`,
where no database listens inside the container.
"""

import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from standin import log

PREFIX = "AUTHENTIK_"

# Exact names of the sections the stand-in reads: a typo in one of them
# (AUTHENTIK_POSTGRESQL__PASWORD) is reported.
KNOWN_NAMES = {
    "AUTHENTIK_SECRET_KEY",
    "AUTHENTIK_LOG_LEVEL",
    "AUTHENTIK_COOKIE_DOMAIN",
    "AUTHENTIK_DISABLE_UPDATE_CHECK",
    "AUTHENTIK_DISABLE_STARTUP_ANALYTICS",
    "AUTHENTIK_AVATARS",
    "AUTHENTIK_FOOTER_LINKS",
    "AUTHENTIK_IMPERSONATION",
    "AUTHENTIK_POSTGRESQL__HOST",
    "AUTHENTIK_POSTGRESQL__PORT",
    "AUTHENTIK_POSTGRESQL__NAME",
    "AUTHENTIK_POSTGRESQL__USER",
    "AUTHENTIK_POSTGRESQL__PASSWORD",
    "AUTHENTIK_POSTGRESQL__SSLMODE",
    "AUTHENTIK_POSTGRESQL__SSLROOTCERT",
    "AUTHENTIK_POSTGRESQL__SSLCERT",
    "AUTHENTIK_POSTGRESQL__SSLKEY",
    "AUTHENTIK_POSTGRESQL__USE_PGBOUNCER",
    "AUTHENTIK_POSTGRESQL__USE_PGPOOL",
    "AUTHENTIK_POSTGRESQL__DEFAULT_SCHEMA",
    "AUTHENTIK_POSTGRESQL__CONN_MAX_AGE",
    "AUTHENTIK_POSTGRESQL__CONN_HEALTH_CHECKS",
    "AUTHENTIK_POSTGRESQL__DISABLE_SERVER_SIDE_CURSORS",
    "AUTHENTIK_EMAIL__HOST",
    "AUTHENTIK_EMAIL__PORT",
    "AUTHENTIK_EMAIL__USERNAME",
    "AUTHENTIK_EMAIL__PASSWORD",
    "AUTHENTIK_EMAIL__USE_TLS",
    "AUTHENTIK_EMAIL__USE_SSL",
    "AUTHENTIK_EMAIL__TIMEOUT",
    "AUTHENTIK_EMAIL__FROM",
    "AUTHENTIK_LISTEN__HTTP",
    "AUTHENTIK_LISTEN__HTTPS",
    "AUTHENTIK_LISTEN__METRICS",
    "AUTHENTIK_LISTEN__DEBUG",
    "AUTHENTIK_LISTEN__LDAP",
    "AUTHENTIK_LISTEN__LDAPS",
    "AUTHENTIK_LISTEN__RADIUS",
    "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS",
}
# Sections of authentik's configuration that the stand-in ignores but accepts whole.
KNOWN_SECTIONS = re.compile(
    r"^AUTHENTIK_(POSTGRESQL__READ_REPLICAS__|POSTGRESQL__CONN_OPTIONS|ERROR_REPORTING__|"
    r"WEB__|WORKER__|STORAGE__|OUTPOSTS__|LDAP__|REPUTATION__|SESSIONS__|EVENTS__|"
    r"CACHE__|DEFAULT_USER_CHANGE_|BOOTSTRAP_)"
)


class ConfigError(Exception):
    """A value that cannot be resolved, such as a `file://` path that cannot be read."""


def resolve(name: str, value: str) -> str:
    """Return the value of a variable after `file://` and `env://` indirection."""
    if value.startswith("file://"):
        path = urlparse(value).path
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as error:
            raise ConfigError(f"{name}: cannot read {path}: {error.strerror}") from None
    if value.startswith("env://"):
        return os.environ.get(value[len("env://") :], "")
    return value


def get(name: str, default: str = "") -> str:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return resolve(name, raw)


def flag(name: str, default: bool = False) -> bool:
    return get(name, "true" if default else "false").strip().lower() in (
        "true",
        "1",
        "yes",
    )


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """Return the AUTHENTIK_* names that authentik does not read: most likely typos."""
    return sorted(
        name
        for name in environ
        if name.startswith(PREFIX)
        and name not in KNOWN_NAMES
        and not KNOWN_SECTIONS.match(name)
    )


def warn_unknown() -> None:
    for name in unknown_variables(dict(os.environ)):
        log.warning(
            "unknown configuration variable, ignored: check its spelling", variable=name
        )


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    name: str
    user: str
    password: str
    sslmode: str

    def connect_arguments(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.name,
            "user": self.user,
            "password": self.password,
            "sslmode": self.sslmode,
            "connect_timeout": 3,
            "application_name": "authentik-standin",
        }


def database() -> Database:
    return Database(
        host=get("AUTHENTIK_POSTGRESQL__HOST", "localhost"),
        port=int(get("AUTHENTIK_POSTGRESQL__PORT", "5432")),
        name=get("AUTHENTIK_POSTGRESQL__NAME", "authentik"),
        user=get("AUTHENTIK_POSTGRESQL__USER", "authentik"),
        password=get("AUTHENTIK_POSTGRESQL__PASSWORD", ""),
        sslmode=get("AUTHENTIK_POSTGRESQL__SSLMODE", "prefer"),
    )


@dataclass(frozen=True)
class Email:
    host: str
    port: int
    username: str
    password: str
    use_tls: bool
    use_ssl: bool
    timeout: int
    sender: str


def email() -> Email:
    return Email(
        host=get("AUTHENTIK_EMAIL__HOST", "localhost"),
        port=int(get("AUTHENTIK_EMAIL__PORT", "25")),
        username=get("AUTHENTIK_EMAIL__USERNAME", ""),
        password=get("AUTHENTIK_EMAIL__PASSWORD", ""),
        use_tls=flag("AUTHENTIK_EMAIL__USE_TLS"),
        use_ssl=flag("AUTHENTIK_EMAIL__USE_SSL"),
        timeout=int(get("AUTHENTIK_EMAIL__TIMEOUT", "10")),
        sender=get("AUTHENTIK_EMAIL__FROM", "authentik@localhost"),
    )


def trusted_proxy_cidrs() -> list[str]:
    value = get(
        "AUTHENTIK_LISTEN__TRUSTED_PROXY_CIDRS",
        "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fe80::/10,::1/128",
    )
    return [item.strip() for item in value.split(",") if item.strip()]
