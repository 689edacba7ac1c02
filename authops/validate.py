"""Validation of env files: every rule that `env.check` applies.

`validate_env` returns problems instead of raising, so that one run shows all
of them. Each problem names the key and, where the line helps, the line.
"""

import ipaddress
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from authops.envfile import ParsedEnv
from authops.output import MASK
from authops.schema import (
    KEYS,
    KEYS_BY_NAME,
    MIN_SECRET_KEY_LENGTH,
    MIN_TAG,
    SECRET_KEYS,
    Key,
)

ERROR = "error"
WARNING = "warning"

# Values copied from examples and published guides that must never reach production.
KNOWN_PLACEHOLDERS = {
    "your_long_random_secret_key_here",
    "your-secret-key",
    "your_secret_key",
    "your_secret_key_here",
    "your-secret-key-here",
    "secret",
    "secretkey",
    "supersecret",
    "password",
    "passw0rd",
    "yourpassword",
    "your_password",
    "your-password",
    "your_db_password",
    "your_password_here",
    "changeme",
    "change_me",
    "change-me",
    "changeme123",
    "replaceme",
    "replace_me",
    "replace-me",
    "todo",
    "xxx",
    "xxxx",
    "pg_pass",
}
PLACEHOLDER_PATTERNS = (
    re.compile(r"^<.*>$"),
    re.compile(r"^\$\{.*\}$"),
    re.compile(r"change[-_ ]?me", re.IGNORECASE),
    re.compile(r"^(your|my)[-_ ].*(here|key|password|secret)$", re.IGNORECASE),
)

HOSTNAME_PATTERN = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
HOST_SPEC_PATTERN = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[^@:\s]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d+))?$"
)
IDENTIFIER_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
STACK_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
EMAIL_PATTERN = re.compile(r"^[^@\s<>\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
IMAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")
TAG_PATTERN = re.compile(
    r"^(?P<year>\d{4})\.(?P<month>\d{1,2})(?:\.(?P<patch>\d+))?(?:-(?P<suffix>[A-Za-z0-9.]+))?$"
)
PLACEMENT_PATTERN = re.compile(r"^node\.[A-Za-z0-9_.-]+\s*(==|!=)\s*\S+$")
BOOL_VALUES = ("true", "false")
# The start of a line that failed to parse: `KEY=`, maybe after `export`.
BAD_LINE_KEY = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z0-9_.]+)\s*=")


@dataclass
class Problem:
    key: str
    message: str
    severity: str = ERROR
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{self.severity}: {where}{self.key}: {self.message}"


def parse_tag(tag: str) -> tuple[int, int, int] | None:
    """Parse an authentik release tag such as `2025.10.3` into numbers."""
    match = TAG_PATTERN.match(tag)
    if not match:
        return None
    return int(match["year"]), int(match["month"]), int(match["patch"] or 0)


def is_hostname_or_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
        return True
    except ValueError:
        return bool(HOSTNAME_PATTERN.match(value))


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in KNOWN_PLACEHOLDERS:
        return True
    return any(pattern.search(value) for pattern in PLACEHOLDER_PATTERNS)


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def check_value(key: Key, value: str) -> list[str]:
    """Return the problems of one non-empty value, as messages with the fix."""
    checker = KIND_CHECKERS.get(key.kind)
    return checker(key, value) if checker else []


def _check_port(key: Key, value: str) -> list[str]:
    if not value.isdigit() or not 0 < int(value) < 65536:
        return [f"{value!r} is not a port number: use a whole number from 1 to 65535"]
    return []


def _check_positive_int(key: Key, value: str) -> list[str]:
    if not value.isdigit() or int(value) <= 0:
        return [f"{value!r} is not a positive whole number: use for example 10"]
    return []


def _check_bool(key: Key, value: str) -> list[str]:
    if value.lower() not in BOOL_VALUES:
        return [f"{value!r} is not a boolean: use true or false"]
    return []


def _check_hostname(key: Key, value: str) -> list[str]:
    if value == "local" or is_hostname_or_ip(value):
        return []
    return [f"{value!r} is not a valid host name or IP address"]


def _check_host_list(key: Key, value: str) -> list[str]:
    problems = []
    for spec in split_list(value):
        if spec == "local":
            continue
        match = HOST_SPEC_PATTERN.match(spec)
        if not match or not is_hostname_or_ip(match["host"]):
            problems.append(
                f"{spec!r} is not a host: write `local` or [user@]host[:port], separated by commas"
            )
        elif match["port"] and not 0 < int(match["port"]) < 65536:
            problems.append(f"{spec!r} has an invalid port: use 1 to 65535")
    if not problems and not split_list(value):
        problems.append("lists no host: write at least one, separated by commas")
    return problems


def _check_host(key: Key, value: str) -> list[str]:
    if "," in value:
        return [f"{value!r} lists more than one host: give one"]
    return _check_host_list(key, value)


def _check_node_list(key: Key, value: str) -> list[str]:
    problems = []
    names = []
    for item in split_list(value):
        name, sep, address = item.partition("=")
        if (
            not sep
            or not name
            or not HOSTNAME_PATTERN.match(name)
            or not is_hostname_or_ip(address)
        ):
            problems.append(
                f"{item!r} is not NAME=ADDRESS: write for example worker1=10.0.10.21, separated by commas"
            )
        elif name in names:
            problems.append(f"node {name!r} is listed twice: give each node once")
        names.append(name)
    if not problems and not names:
        problems.append(
            "lists no node: write NAME=ADDRESS for every swarm node that serves authentik"
        )
    return problems


def _check_identifier(key: Key, value: str) -> list[str]:
    if not IDENTIFIER_PATTERN.match(value):
        return [
            f"{value!r} is not a valid PostgreSQL identifier here: use 1 to 63 lower-case letters, "
            f"digits and '_', starting with a letter or '_'"
        ]
    return []


def _check_stack_name(key: Key, value: str) -> list[str]:
    if not STACK_NAME_PATTERN.match(value):
        return [
            f"{value!r} is not a valid stack name: use lower-case letters, digits, '-' and '_'"
        ]
    return []


def _check_email(key: Key, value: str) -> list[str]:
    if not EMAIL_PATTERN.match(value):
        return [
            f"{value!r} is not an email address: use a sender on a verified domain, such as sso@example.com"
        ]
    return []


def _check_abs_path(key: Key, value: str) -> list[str]:
    if not value.startswith("/") or "\n" in value:
        return [f"{value!r} is not an absolute path: start it with '/'"]
    return []


def _check_choice(key: Key, value: str) -> list[str]:
    if value not in key.choices:
        return [f"{value!r} is not valid: use one of {', '.join(key.choices)}"]
    return []


def _check_image(key: Key, value: str) -> list[str]:
    if (
        "@" in value
        or not IMAGE_PATTERN.match(value)
        or value.rsplit("/", 1)[-1].count(":")
    ):
        return [
            f"{value!r} is not an image name without tag: put the tag in AUTHENTIK_TAG"
        ]
    return []


def _check_tag(key: Key, value: str) -> list[str]:
    if value == "latest":
        return ["'latest' is not a pinned release: set a release such as 2025.10.3"]
    version = parse_tag(value)
    if version is None:
        return [
            f"{value!r} is not an authentik release tag: use YEAR.MONTH.PATCH, such as 2025.10.3"
        ]
    if version[:2] < MIN_TAG:
        return [
            f"{value!r} is older than 2025.10: those releases need a Redis that this stack does not run; "
            f"use 2025.10.3 or newer"
        ]
    return []


def _check_secret_key(key: Key, value: str) -> list[str]:
    if len(value) < MIN_SECRET_KEY_LENGTH:
        return [
            f"is {len(value)} characters long, shorter than {MIN_SECRET_KEY_LENGTH}: generate one with "
            f"`openssl rand -base64 60 | tr -d '\\n'`"
        ]
    return []


def _check_password(key: Key, value: str) -> list[str]:
    if "\n" in value:
        return ["contains a line break: use a single-line password"]
    return []


def _check_placement(key: Key, value: str) -> list[str]:
    if not PLACEMENT_PATTERN.match(value):
        return [
            f"{value!r} is not a placement constraint: write for example node.role == worker"
        ]
    return []


def _check_text(key: Key, value: str) -> list[str]:
    return []


KIND_CHECKERS = {
    "port": _check_port,
    "positive-int": _check_positive_int,
    "bool": _check_bool,
    "hostname": _check_hostname,
    "host-list": _check_host_list,
    "host": _check_host,
    "node-list": _check_node_list,
    "identifier": _check_identifier,
    "stack-name": _check_stack_name,
    "email": _check_email,
    "abs-path": _check_abs_path,
    "choice": _check_choice,
    "image": _check_image,
    "tag": _check_tag,
    "secret-key": _check_secret_key,
    "password": _check_password,
    "placement": _check_placement,
    "text": _check_text,
}


def validate_env(
    parsed: ParsedEnv, *, path: Path | None = None, env_name: str = ""
) -> list[Problem]:
    """Return every problem of a parsed env file, errors and warnings."""
    problems = _check_syntax(parsed)
    values = parsed.values()
    problems += _check_keys(parsed, values)
    problems += _check_smtp(values)
    problems += _check_relations(values)
    problems += _check_example_hosts(values)
    if path is not None and env_name != "lab":
        problems += _check_mode(path)
    return problems


def _check_syntax(parsed: ParsedEnv) -> list[Problem]:
    problems = []
    if parsed.crlf_lines:
        lines = parsed.crlf_lines
        problems.append(
            Problem(
                "(file)",
                f"Windows line endings on {len(lines)} line(s): convert with `sed -i 's/\\r$//' FILE`",
                line=lines[0],
            )
        )
    for line, text in parsed.bad_lines:
        problems.append(
            Problem(
                "(file)",
                f"{shown_line(text)!r} is not KEY=VALUE: fix or remove the line",
                line=line,
            )
        )
    seen: dict[str, int] = {}
    for entry in parsed.entries:
        if entry.key in seen:
            problems.append(
                Problem(
                    entry.key,
                    f"is set twice (lines {seen[entry.key]} and {entry.line}): keep one",
                    line=entry.line,
                )
            )
        else:
            seen[entry.key] = entry.line
    return problems


def shown_line(text: str) -> str:
    """Return the first line of a line that failed to parse, without a secret value.

    A secret that failed to parse was never registered for redaction, so its
    value is masked here. A quote left open takes in the lines after it, so
    only the first line is shown.
    """
    lines = text.strip().splitlines()
    first = lines[0][:60] if lines else ""
    match = BAD_LINE_KEY.match(first)
    if match and match["key"].upper() in SECRET_KEYS:
        return f"{first[: match.end()]}{MASK}"
    return first


def _check_keys(parsed: ParsedEnv, values: dict[str, str]) -> list[Problem]:
    problems = []
    for key in KEYS:
        lines = parsed.lines_of(key.name)
        line = lines[-1] if lines else None
        value = values.get(key.name, "")
        if not value.strip():
            if key.required:
                state = "is empty" if lines else "is missing"
                problems.append(
                    Problem(
                        key.name,
                        f"{state}: it is required (see env/example.env)",
                        line=line,
                    )
                )
            continue
        if value != value.strip():
            problems.append(
                Problem(
                    key.name,
                    "has leading or trailing white space: remove it",
                    line=line,
                )
            )
        if key.kind not in (
            "bool",
            "port",
            "positive-int",
            "choice",
        ) and is_placeholder(value):
            problems.append(
                Problem(
                    key.name,
                    "still holds a placeholder from an example: set the real value"
                    + (" (env.init generates secrets)" if key.secret else ""),
                    line=line,
                )
            )
            continue
        for message in check_value(key, value.strip()):
            problems.append(Problem(key.name, message, line=line))
    for entry in parsed.entries:
        if entry.key not in KEYS_BY_NAME:
            hint = _suggest_key(entry.key)
            problems.append(
                Problem(
                    entry.key,
                    f"is not a known key{hint}: it is ignored",
                    severity=WARNING,
                    line=entry.line,
                )
            )
    return problems


def _suggest_key(name: str) -> str:
    squashed = name.replace("_", "").upper()
    for known in KEYS_BY_NAME:
        if known.replace("_", "") == squashed:
            return f" (did you mean {known}?)"
    return ""


def _check_smtp(values: dict[str, str]) -> list[Problem]:
    problems = []
    use_tls = values.get("SMTP_USE_TLS", "").lower() == "true"
    use_ssl = values.get("SMTP_USE_SSL", "").lower() == "true"
    port = values.get("SMTP_PORT", "")
    if use_tls and use_ssl:
        problems.append(
            Problem(
                "SMTP_USE_TLS",
                "and SMTP_USE_SSL are both true: use SMTP_USE_TLS=true for STARTTLS on 587, "
                "or SMTP_USE_SSL=true for implicit TLS on 465, never both",
            )
        )
    elif port == "587" and not use_tls:
        problems.append(
            Problem(
                "SMTP_USE_TLS",
                "must be true for port 587 (STARTTLS): set SMTP_USE_TLS=true and SMTP_USE_SSL=false",
            )
        )
    elif port == "465" and not use_ssl:
        problems.append(
            Problem(
                "SMTP_USE_SSL",
                "must be true for port 465 (implicit TLS): set SMTP_USE_SSL=true and SMTP_USE_TLS=false",
            )
        )
    if values.get("SMTP_USERNAME") and not values.get("SMTP_PASSWORD"):
        problems.append(
            Problem(
                "SMTP_PASSWORD", "is empty while SMTP_USERNAME is set: set the password"
            )
        )
    if values.get("SMTP_HOST") and not values.get("SMTP_USERNAME"):
        problems.append(
            Problem(
                "SMTP_USERNAME",
                "is empty, so mail is sent without SMTP AUTH: Azure Communication Services "
                "and Microsoft 365 require a user name",
                severity=WARNING,
            )
        )
    return problems


def _check_relations(values: dict[str, str]) -> list[Problem]:
    problems = []
    if values.get("HTTP_PORT") and values.get("HTTP_PORT") == values.get("HTTPS_PORT"):
        problems.append(
            Problem(
                "HTTPS_PORT", "equals HTTP_PORT: publish the two on different ports"
            )
        )
    override = values.get("STACK_OVERRIDE", "")
    if override:
        from authops import REPO_ROOT

        if not (REPO_ROOT / override).is_file():
            problems.append(
                Problem(
                    "STACK_OVERRIDE",
                    f"file {override!r} not found: give a path relative to the checkout",
                )
            )
    return problems


# Domains reserved for documentation (RFC 2606): a value under one of them was
# copied from an example and reaches no real host.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
HOST_KEYS = (
    "SSO_DOMAIN",
    "SWARM_MANAGERS",
    "SWARM_NODES",
    "HAPROXY_HOSTS",
    "AUTHENTIK_POSTGRESQL__HOST",
    "NFS_SERVER",
    "NFS_SSH_HOST",
    "SMTP_FROM",
)


def _check_example_hosts(values: dict[str, str]) -> list[Problem]:
    problems = []
    for key in HOST_KEYS:
        value = values.get(key, "").lower()
        if any(
            value.endswith(domain) or f"{domain}," in value or f"{domain}:" in value
            for domain in EXAMPLE_DOMAINS
        ):
            problems.append(
                Problem(
                    key,
                    "still names an example domain (example.com, .net, .org): set the real host",
                    severity=WARNING,
                )
            )
    return problems


def _check_mode(path: Path) -> list[Problem]:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return [
            Problem(
                "(file)",
                f"{path} has mode {mode:o} and is readable by group or others: run `chmod 600 {path}`",
            )
        ]
    return []
