"""The exception that carries an operator-facing error, and per-host reports."""

from dataclasses import dataclass, field

from invoke.exceptions import Exit

from authops import output

# Per-item states. "would change" is what a dry run reports instead of "changed".
OK = "ok"
CHANGED = "changed"
UNCHANGED = "unchanged"
WOULD_CHANGE = "would change"
WARNING = "warning"
FAILED = "failed"


class OpsError(Exception):
    """An error to show the operator as one message, without a traceback.

    The message names the value that is wrong and how to fix it.
    """

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class Result:
    name: str
    state: str
    detail: str = ""


@dataclass
class Report:
    """Collects one result per host or item and fails once, at the end."""

    action: str
    results: list[Result] = field(default_factory=list)

    def record(self, name: str, state: str, detail: str = "") -> Result:
        result = Result(name, state, detail)
        self.results.append(result)
        output.status(name, state, detail)
        return result

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.state == FAILED]

    @property
    def changed(self) -> bool:
        return any(r.state in (CHANGED, WOULD_CHANGE) for r in self.results)

    def finish(self) -> None:
        """Raise `Exit(1)` naming every failed host, if any failed."""
        failures = self.failures
        if not failures:
            return
        names = "; ".join(f"{r.name} ({r.detail})" for r in failures)
        raise Exit(
            output.redact(
                f"{self.action} failed on {len(failures)} of {len(self.results)}: {names}"
            ),
            code=1,
        )
