"""Typed settings of one deployment, built from a validated env file."""

from dataclasses import dataclass
from pathlib import Path

from authops import REPO_ROOT, output
from authops.envfile import read_env, resolve_env_name
from authops.errors import OpsError
from authops.schema import KEYS, SECRET_KEYS
from authops.validate import ERROR, Problem, split_list, validate_env


@dataclass(frozen=True)
class Node:
    name: str
    address: str


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    name: str
    user: str
    password: str
    sslmode: str


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    username: str
    password: str
    use_tls: bool
    use_ssl: bool
    timeout: int
    sender: str


@dataclass(frozen=True)
class Settings:
    """One deployment: the env file's values with defaults filled in."""

    env_name: str
    path: Path
    values: dict[str, str]

    def get(self, key: str) -> str:
        return self.values[key]

    def flag(self, key: str) -> bool:
        return self.values[key].lower() == "true"

    def number(self, key: str) -> int:
        return int(self.values[key])

    @property
    def stack_name(self) -> str:
        return self.values["STACK_NAME"]

    @property
    def domain(self) -> str:
        return self.values["SSO_DOMAIN"]

    @property
    def image(self) -> str:
        return f"{self.values['AUTHENTIK_IMAGE']}:{self.values['AUTHENTIK_TAG']}"

    @property
    def secret_key(self) -> str:
        return self.values["AUTHENTIK_SECRET_KEY"]

    @property
    def managers(self) -> list[str]:
        return split_list(self.values["SWARM_MANAGERS"])

    @property
    def haproxy_hosts(self) -> list[str]:
        return split_list(self.values["HAPROXY_HOSTS"])

    @property
    def nodes(self) -> list[Node]:
        pairs = (item.partition("=") for item in split_list(self.values["SWARM_NODES"]))
        return [Node(name, address) for name, _, address in pairs]

    @property
    def database(self) -> Database:
        v = self.values
        return Database(
            host=v["AUTHENTIK_POSTGRESQL__HOST"],
            port=int(v["AUTHENTIK_POSTGRESQL__PORT"]),
            name=v["AUTHENTIK_POSTGRESQL__NAME"],
            user=v["AUTHENTIK_POSTGRESQL__USER"],
            password=v["AUTHENTIK_POSTGRESQL__PASSWORD"],
            sslmode=v["AUTHENTIK_POSTGRESQL__SSLMODE"],
        )

    @property
    def smtp(self) -> Smtp:
        v = self.values
        return Smtp(
            host=v["SMTP_HOST"],
            port=int(v["SMTP_PORT"]),
            username=v["SMTP_USERNAME"],
            password=v["SMTP_PASSWORD"],
            use_tls=self.flag("SMTP_USE_TLS"),
            use_ssl=self.flag("SMTP_USE_SSL"),
            timeout=int(v["SMTP_TIMEOUT"]),
            sender=v["SMTP_FROM"],
        )

    @property
    def smtp_ca_file(self) -> str | None:
        """Return SMTP_CA_FILE as an absolute path, or None when unset."""
        value = self.values["SMTP_CA_FILE"]
        return str(REPO_ROOT / value) if value else None

    @property
    def nfs_ssh_host(self) -> str:
        """Return the host spec that reaches the NFS server over SSH."""
        return self.values["NFS_SSH_HOST"] or self.values["NFS_SERVER"]

    @property
    def nfs_directories(self) -> dict[str, str]:
        """Return the export's subdirectory for each authentik mount point."""
        export = self.values["NFS_EXPORT"].rstrip("/")
        return {name: f"{export}/{name}" for name in ("media", "templates", "certs")}

    @property
    def backup_dir(self) -> Path:
        return REPO_ROOT / self.values["BACKUP_DIR"]

    def secrets(self) -> dict[str, str]:
        return {key: self.values[key] for key in SECRET_KEYS if self.values.get(key)}


def with_defaults(values: dict[str, str]) -> dict[str, str]:
    """Return the values with every unset optional key at its default."""
    filled = {key.name: key.default or "" for key in KEYS if not key.required}
    filled.update(
        {key: value.strip() for key, value in values.items() if value.strip()}
    )
    return filled


def problems_of(name: str | None) -> tuple[str, Path, list[Problem], dict[str, str]]:
    """Read one env file and return its name, path, problems and raw values."""
    env_name = resolve_env_name(name)
    path, parsed = read_env(env_name)
    values = parsed.values()
    for key in SECRET_KEYS:
        output.register_secret(values.get(key))
    return env_name, path, validate_env(parsed, path=path, env_name=env_name), values


def load_settings(name: str | None) -> Settings:
    """Load and validate an env file, or raise an error listing every problem.

    Every task calls this before it touches a host.
    """
    env_name, path, problems, values = problems_of(name)
    errors = [problem for problem in problems if problem.severity == ERROR]
    if errors:
        lines = "\n".join(f"  {problem}" for problem in errors)
        raise OpsError(
            f"env file {path} is invalid:\n{lines}\nFix it, then run `invoke env.check --env {env_name}`."
        )
    return Settings(env_name, path, with_defaults(values))
