"""Rendering of the HAProxy configuration, and reading `haproxy -c` output.

The configuration carries a SHA-256 of its own text (with the digest itself
replaced by a placeholder) in the global `description`. `show info` on the
runtime API returns it, so a reload can check which file the workers loaded.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from authops import REPO_ROOT
from authops.errors import OpsError
from authops.settings import Settings

TEMPLATE_PATH = REPO_ROOT / "haproxy" / "haproxy.cfg.j2"
CHECKSUM_PLACEHOLDER = "0" * 64
CHECKSUM_PATTERN = re.compile(r"authops-config-sha256:([0-9a-f]{64})")
# `[ALERT]    (1234) : config : parsing [/path/haproxy.cfg:12] : message`
ALERT_LINE = re.compile(
    r"\[ALERT\]\s*\(\d+\)\s*:\s*(?:config\s*:\s*)?(?:parsing \[(?P<file>[^\]:]+):(?P<line>\d+)\]\s*:\s*)?(?P<message>.*)"
)


@dataclass(frozen=True)
class Server:
    name: str
    address: str


def host_port(address: str, port: str) -> str:
    """Join an address and a port, putting an IPv6 address in brackets."""
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"


def template_context(settings: Settings) -> dict:
    """Return the template's variables: every env key plus the derived values."""
    values = settings.values
    redirect_port = values.get("HAPROXY_REDIRECT_PORT", "")
    https_port = values["HAPROXY_BIND_PORT"]
    port_suffix = "" if https_port == "443" else f":{https_port}"
    return {
        **values,
        "env_name": settings.env_name,
        "bind": host_port(values["HAPROXY_BIND_ADDRESS"], https_port),
        "redirect_bind": (
            host_port(values["HAPROXY_BIND_ADDRESS"], redirect_port)
            if redirect_port
            else ""
        ),
        "redirect_prefix": f"https://{settings.domain}{port_suffix}",
        "servers": [
            Server(node.name, host_port(node.address, values["HTTPS_PORT"]))
            for node in settings.nodes
        ],
        "checksum": CHECKSUM_PLACEHOLDER,
    }


def load_template(path: Path) -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - the output is an HAProxy file, not HTML
    )
    return environment.get_template(path.name)


def render_config(settings: Settings, template: Path | None = None) -> str:
    """Render the HAProxy configuration for `settings`, with its checksum filled in.

    Raises OpsError naming the template line when a variable is undefined or
    the template does not parse.
    """
    path = template or TEMPLATE_PATH
    try:
        text = load_template(path).render(template_context(settings))
    except jinja2.TemplateNotFound:
        raise OpsError(
            f"HAProxy template {path} not found: give the path of a file with --template"
        ) from None
    except UnicodeDecodeError:
        raise OpsError(
            f"HAProxy template {path} is not valid UTF-8: re-save it as UTF-8"
        ) from None
    except jinja2.TemplateSyntaxError as error:
        raise OpsError(
            f"HAProxy template {path} line {error.lineno}: {error.message}"
        ) from None
    except jinja2.UndefinedError as error:
        raise OpsError(
            f"HAProxy template {path}: {error.message}: define it in the env file or fix the template"
        ) from None
    return fill_checksum(text)


def fill_checksum(text: str) -> str:
    """Replace the checksum placeholder with the SHA-256 of the text that contains it."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(CHECKSUM_PLACEHOLDER, digest)


def embedded_checksum(text: str) -> str | None:
    """Return the checksum written in a rendered configuration, or None."""
    match = CHECKSUM_PATTERN.search(text)
    return match[1] if match else None


@dataclass
class ValidationError:
    line: int | None
    message: str


def validation_errors(haproxy_output: str) -> list[ValidationError]:
    """Return the alerts of `haproxy -c` output, with the config line where one is given.

    The summary alerts ("Error(s) found", "Fatal errors found") are dropped
    when a more precise alert precedes them.
    """
    errors = []
    for raw in haproxy_output.splitlines():
        match = ALERT_LINE.search(raw)
        if match:
            line = int(match["line"]) if match["line"] else None
            errors.append(ValidationError(line, match["message"].strip()))
    precise = [
        error
        for error in errors
        if not error.message.startswith(("Error(s) found", "Fatal errors found"))
    ]
    return precise or errors


def describe_errors(text: str, haproxy_output: str) -> str:
    """Summarise `haproxy -c` alerts as `line N (`text`): message`, first one first."""
    errors = validation_errors(haproxy_output)
    if not errors:
        lines = [line for line in haproxy_output.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "haproxy -c failed without output"
    lines = text.splitlines()
    parts = []
    for error in errors:
        if error.line and 0 < error.line <= len(lines):
            source = lines[error.line - 1].strip()
            parts.append(f"line {error.line} (`{source}`): {error.message}")
        else:
            parts.append(error.message)
    return "; ".join(parts)
