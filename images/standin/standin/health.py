"""`ak healthcheck`: exit 0 when the process running in this container is healthy."""

import sys
import time
import urllib.error
import urllib.request

from standin import state
from standin.worker import CHECK_INTERVAL

READY_URL = "http://127.0.0.1:9000/-/health/ready/"
# A worker record older than this means the worker loop is stuck or gone.
MAX_WORKER_AGE = 6 * CHECK_INTERVAL


def check_server() -> str | None:
    try:
        with urllib.request.urlopen(READY_URL, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        return f"{READY_URL}: {error}"
    return None if status == 200 else f"{READY_URL} returned {status}"


def check_worker() -> str | None:
    record = state.read_worker_health()
    if record is None:
        return "the worker has not checked the database yet"
    age = time.time() - record["time"]
    if age > MAX_WORKER_AGE:
        return f"the worker's last database check is {age:.0f} s old"
    if not record["ok"]:
        return f"database not reachable: {record['error']}"
    return None


def run() -> int:
    mode = state.read_mode()
    checks = {"server": check_server, "worker": check_worker}
    if mode not in checks:
        print("unhealthy: neither server nor worker is running", file=sys.stderr)
        return 1
    problem = checks[mode]()
    if problem:
        print(f"unhealthy ({mode}): {problem}", file=sys.stderr)
        return 1
    print(f"healthy ({mode})")
    return 0
