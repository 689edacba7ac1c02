"""A guard that keeps traffic for the lab's networks on this machine.

The lab's services listen on the host side of docker_gwbridge
(172.31.250.1), and its second node answers in a network namespace behind
a veth pair (172.31.251.2). Without the bridge or the veth pair the default
route would send a connection to those addresses off this machine, so the
tasks check the address before they connect to it.
"""

import ipaddress
import socket

from authops.errors import OpsError
from authops.localsvc import (
    GWBRIDGE_GATEWAY,
    GWBRIDGE_SUBNET,
    LAB_NODE_HOST_ADDRESS,
    LAB_NODE_SUBNET,
)

# Each lab network, with the address this machine has on it while it exists.
LAB_NETWORKS = (
    (GWBRIDGE_SUBNET, GWBRIDGE_GATEWAY),
    (LAB_NODE_SUBNET, LAB_NODE_HOST_ADDRESS),
)


def is_local_address(address: str) -> bool:
    """Return whether `address` belongs to an interface of this machine (bind succeeds)."""
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def check_lab_target(host: str) -> None:
    """Raise OpsError when `host` is in a lab network that does not exist on this machine now."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    for subnet, own_address in LAB_NETWORKS:
        if address in ipaddress.ip_network(subnet) and not is_local_address(
            own_address
        ):
            raise OpsError(
                f"{host} is in the lab's network {subnet}, which does not exist on this machine "
                "now: run `invoke lab.up` first"
            )
