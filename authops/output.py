"""Console output: phase lines, per-host status lines, and secret redaction.

Every line the tasks print goes through `redact`, so a secret that was
registered with `register_secret` never reaches the terminal or a log.
"""

import sys
import threading

MASK = "********"

# Values shorter than this are not masked: masking "1" or "true" would garble
# every line, and no generated or validated secret is that short.
MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_print_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask `value` in every later line of output."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in `text` with a mask."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def emit(line: str, *, err: bool = False) -> None:
    """Print one redacted line, whole, even when threads print at once."""
    stream = sys.stderr if err else sys.stdout
    with _print_lock:
        print(redact(line), file=stream, flush=True)


def phase(message: str) -> None:
    """Announce a step of a task."""
    emit(f"--> {message}")


def info(message: str) -> None:
    """Print a detail line under the current step."""
    emit(f"    {message}")


def warn(message: str) -> None:
    """Print a warning on standard error."""
    emit(f"warning: {message}", err=True)


def status(host: str, state: str, detail: str = "") -> None:
    """Print one status line for a host or an item: `[name] state: detail`."""
    suffix = f": {detail}" if detail else ""
    emit(f"[{host}] {state}{suffix}")
