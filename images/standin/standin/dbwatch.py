"""Log database state changes once, instead of once per check."""

import threading

from standin import log


class DatabaseWatch:
    """Remembers the last check's result and logs only when it changes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.last_error: str | None = "not checked yet"

    def record(self, error: str | None) -> None:
        with self.lock:
            if error == self.last_error:
                return
            self.last_error = error
        if error is None:
            log.info("database reachable")
        else:
            log.error("database not reachable", error=error)
