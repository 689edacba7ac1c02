"""JSON log lines on standard output, one object per line as authentik writes them."""

import json
import sys
import time


def log(level: str, event: str, **fields) -> None:
    record = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "level": level,
        "logger": "authentik.standin",
        "event": event,
        **fields,
    }
    print(json.dumps(record), file=sys.stdout, flush=True)


def info(event: str, **fields) -> None:
    log("info", event, **fields)


def warning(event: str, **fields) -> None:
    log("warning", event, **fields)


def error(event: str, **fields) -> None:
    log("error", event, **fields)
