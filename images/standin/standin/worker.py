"""`ak worker`: check the database every few seconds and record the result."""

import os
import signal
import threading

from standin import config, database, log, state, version
from standin.dbwatch import DatabaseWatch

CHECK_INTERVAL = 5  # seconds between database checks
AUTHENTIK_UID = 1000
# authentik's worker, started as root, hands these to UID 1000.
OWNED_PATHS = ("/media", "/certs")


def hand_over_storage() -> None:
    if os.geteuid() != 0:
        return
    for path in OWNED_PATHS:
        try:
            os.chown(path, AUTHENTIK_UID, AUTHENTIK_UID)
        except OSError as error:
            log.warning("cannot change owner", path=path, error=error.strerror)


def run() -> int:
    state.write_mode("worker")
    hand_over_storage()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("worker started", version=version())
    watch = DatabaseWatch()
    while not stop.is_set():
        error = database.check(config.database())
        watch.record(error)
        state.write_worker_health(error)
        stop.wait(CHECK_INTERVAL)
    log.info("worker stopping")
    return 0
