"""The lab network guard: no connection to the lab subnet without its bridge."""

import pytest

from authops import netguard
from authops.errors import OpsError


@pytest.fixture
def absent_lab(monkeypatch):
    # 203.0.113.0/24 is reserved for documentation: no interface here has it,
    # and the guard only tries to bind, so no packet is sent.
    monkeypatch.setattr(
        netguard,
        "LAB_NETWORKS",
        (("203.0.113.0/24", "203.0.113.1"), ("198.51.100.0/30", "198.51.100.1")),
    )


def test_lab_address_rejected_without_bridge(absent_lab):
    with pytest.raises(OpsError, match="lab.up"):
        netguard.check_lab_target("203.0.113.1")


def test_second_node_rejected_without_veth(absent_lab):
    with pytest.raises(OpsError, match="198.51.100.0/30"):
        netguard.check_lab_target("198.51.100.2")


def test_loopback_always_allowed(absent_lab):
    netguard.check_lab_target("127.0.0.1")


def test_host_name_not_checked(absent_lab):
    netguard.check_lab_target("db.example.com")


def test_loopback_is_local():
    assert netguard.is_local_address("127.0.0.1")
