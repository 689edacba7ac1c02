"""A guard that keeps traffic for the lab's network on this machine.

The lab's services listen on the host side of docker_gwbridge
(172.31.250.1). Without that bridge the default route would send a
connection to that address off this machine, so the tasks check the address
before they connect to the database or the mail relay.
"""

import ipaddress
import socket

from authops.errors import OpsError
from authops.localsvc import GWBRIDGE_GATEWAY, GWBRIDGE_SUBNET


def is_local_address(address: str) -> bool:
    """Return whether `address` belongs to an interface of this machine (bind succeeds)."""
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def check_lab_target(host: str) -> None:
    """Raise OpsError when `host` is in the lab subnet while the lab's bridge is missing."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if address in ipaddress.ip_network(GWBRIDGE_SUBNET) and not is_local_address(
        GWBRIDGE_GATEWAY
    ):
        raise OpsError(
            f"{host} is in the lab's network {GWBRIDGE_SUBNET}, which does not exist on this machine "
            "now: run `invoke lab.up` first"
        )
