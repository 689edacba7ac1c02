"""The keys an env file may set: kind, default and whether each is a secret."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    name: str
    kind: str
    required: bool = True
    default: str | None = None
    secret: bool = False
    choices: tuple[str, ...] = ()


KEYS: tuple[Key, ...] = (
    # Deployment and image.
    Key("STACK_NAME", "stack-name", required=False, default="authentik"),
    Key("SSO_DOMAIN", "hostname"),
    Key("AUTHENTIK_IMAGE", "image"),
    Key("AUTHENTIK_TAG", "tag"),
    Key("AUTHENTIK_SECRET_KEY", "secret-key", secret=True),
    # Hosts. A host is `local` or `[user@]host[:port]`.
    Key("SWARM_MANAGERS", "host-list"),
    Key("SWARM_NODES", "node-list"),
    Key("HAPROXY_HOSTS", "host-list"),
    Key("SSH_USER", "text", required=False, default=""),
    Key("SSH_PORT", "port", required=False, default=""),
    Key("SSH_KEY", "text", required=False, default=""),
    Key("SSH_KNOWN_HOSTS", "text", required=False, default=""),
    Key("SSH_STRICT_HOST_KEYS", "bool", required=False, default="true"),
    # External PostgreSQL.
    Key("AUTHENTIK_POSTGRESQL__HOST", "hostname"),
    Key("AUTHENTIK_POSTGRESQL__PORT", "port", required=False, default="5432"),
    Key("AUTHENTIK_POSTGRESQL__NAME", "identifier"),
    Key("AUTHENTIK_POSTGRESQL__USER", "identifier"),
    Key("AUTHENTIK_POSTGRESQL__PASSWORD", "password", secret=True),
    Key(
        "AUTHENTIK_POSTGRESQL__SSLMODE",
        "choice",
        required=False,
        default="prefer",
        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    ),
    # NFS storage: media, templates and certs are subdirectories of the export.
    Key("NFS_SERVER", "hostname"),
    Key("NFS_EXPORT", "abs-path"),
    # How to reach the NFS server over SSH, when that differs from NFS_SERVER.
    Key("NFS_SSH_HOST", "host", required=False, default=""),
    # Mail relay. An empty user name means no SMTP AUTH (an internal relay).
    Key("SMTP_HOST", "hostname"),
    Key("SMTP_PORT", "port"),
    Key("SMTP_USERNAME", "text", required=False, default=""),
    Key("SMTP_PASSWORD", "password", required=False, default="", secret=True),
    Key("SMTP_USE_TLS", "bool"),
    Key("SMTP_USE_SSL", "bool"),
    Key("SMTP_TIMEOUT", "positive-int"),
    Key("SMTP_FROM", "email"),
    # A CA to trust for the relay besides the system's (a private CA); relative to the checkout.
    Key("SMTP_CA_FILE", "text", required=False, default=""),
    # Stack shape.
    Key("SERVER_REPLICAS", "positive-int", required=False, default="2"),
    Key("WORKER_REPLICAS", "positive-int", required=False, default="2"),
    Key("PLACEMENT", "placement", required=False, default="node.role == worker"),
    Key("WORKER_PLACEMENT", "placement", required=False, default=""),
    Key(
        "PUBLISH_MODE",
        "choice",
        required=False,
        default="host",
        choices=("host", "ingress"),
    ),
    Key("HTTP_PORT", "port", required=False, default="9002"),
    Key("HTTPS_PORT", "port", required=False, default="9445"),
    Key("MOUNT_DOCKER_SOCKET", "bool", required=False, default="false"),
    Key("TRUSTED_PROXY_CIDRS", "text", required=False, default=""),
    Key("STACK_OVERRIDE", "text", required=False, default=""),
    Key("DEPLOY_TIMEOUT", "positive-int", required=False, default="600"),
    # Health check and rolling update timings of the stack, in seconds.
    Key("HEALTHCHECK_INTERVAL", "positive-int", required=False, default="30"),
    Key("HEALTHCHECK_START_PERIOD", "positive-int", required=False, default="60"),
    Key("UPDATE_MONITOR", "positive-int", required=False, default="60"),
    # HAProxy hosts.
    Key(
        "HAPROXY_CONFIG", "abs-path", required=False, default="/etc/haproxy/haproxy.cfg"
    ),
    Key("HAPROXY_CERT_DIR", "abs-path", required=False, default="/etc/haproxy/certs"),
    Key("HAPROXY_BIND_ADDRESS", "text", required=False, default="*"),
    Key("HAPROXY_BIND_PORT", "port", required=False, default="443"),
    Key("HAPROXY_STICKY", "bool", required=False, default="false"),
    Key(
        "HAPROXY_STATS_SOCKET",
        "abs-path",
        required=False,
        default="/run/haproxy/admin.sock",
    ),
    Key("HAPROXY_USER", "text", required=False, default="haproxy"),
    # certbot's live folder on the HAProxy hosts: one subfolder per domain.
    Key("CERT_LIVE_ROOT", "abs-path", required=False, default="/etc/letsencrypt/live"),
    Key("HAPROXY_PIDFILE", "abs-path", required=False, default="/run/haproxy.pid"),
    # Empty: no plain-HTTP listener. A port: listen there and redirect to HTTPS.
    Key("HAPROXY_REDIRECT_PORT", "port", required=False, default=""),
    # Database backups on the admin machine.
    Key("BACKUP_DIR", "text", required=False, default="backups"),
    Key("BACKUP_KEEP", "positive-int", required=False, default="7"),
)

KEYS_BY_NAME = {key.name: key for key in KEYS}
SECRET_KEYS = tuple(key.name for key in KEYS if key.secret)

MIN_SECRET_KEY_LENGTH = 50
# authentik 2025.10 is the first release that needs no Redis.
MIN_TAG = (2025, 10)
