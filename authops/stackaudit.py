"""The audit log on the swarm manager: one line per deploy, rollback or removal."""

import shlex

from authops import output
from authops.hosts import Host
from authops.stacklock import operator_name, utc_now

AUDIT_LOG = "/var/log/authops-deploys.log"


def audit_line(action: str, stack: str, image: str, result: str) -> str:
    """Return `TIME WHO ACTION stack=S image=I result=R` as one line."""
    result = " ".join(result.split())
    return f"{utc_now()} {operator_name()} {action} stack={stack} image={image} result={result}\n"


def append_audit(host: Host, action: str, stack: str, image: str, result: str) -> None:
    """Append one line to the manager's audit log; a failure only warns."""
    line = audit_line(action, stack, image, result)
    written = host.run(f"cat >> {shlex.quote(AUDIT_LOG)}", stdin=output.redact(line))
    if not written.ok:
        output.warn(
            f"could not append to {AUDIT_LOG} on {host.name}: {written.error_text()}"
        )
