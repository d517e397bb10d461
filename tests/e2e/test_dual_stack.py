"""Dual-stack subscribers against real switches and hosts: an enforcement
taken on a subscriber's IPv4 address is not sidestepped over IPv6, and a
block touches none of its other IPv6 traffic.

Topology (topologies.IspTopo): h1, h2 on access switch s2; inet behind the
aggregation. Every host gets a global IPv6 address 2001:db8::N next to its
10.0.0.N (inet: 2001:db8::200).
"""
from __future__ import annotations

import contextlib
import sys
import time

import pytest

import lab as harness
import topologies
from enforcement.v1 import enforcement_pb2 as pb

pytestmark = pytest.mark.mininet


def v6(host) -> str:
    return f"2001:db8::{host.IP().rsplit('.', 1)[1]}"


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.IspTopo(), expected_links=6)
    for host in lab.net.hosts:
        host.cmd(f"ip -6 addr add {v6(host)}/64 dev {host.defaultIntf()} nodad")
    harness.start_listener(lab.host("inet"), (25, 80, 587), v6=True)
    harness.wait_until(lambda: all(connects(lab, h, "inet", 80, family=6)
                                   for h in ("h1", "h2")), 20, "IPv6 between the hosts")
    return lab


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def connects(lab, src, dst, port, family=4):
    target = lab.host(dst)
    return harness.tcp_connects(lab.host(src), v6(target) if family == 6 else target.IP(),
                                port)


@contextlib.contextmanager
def enforced(lab, src, violation, request_id):
    """Applied on the subscriber's IPv4 address, lifted afterwards."""
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id=request_id, case_id=f"CASE-{request_id}",
        subscriber=pb.Subscriber(ip=lab.host(src).IP()), violation=violation, reason="test"))
    assert record.state == pb.STATE_ACTIVE, record.state_reason
    try:
        yield record
    finally:
        lifted = lab.stub.Lift(pb.LiftRequest(id=record.id, reason="test over"))
        assert lifted.state == pb.STATE_LIFTED


def test_a_port_25_block_holds_over_ipv6_and_nothing_else_is_touched(lab):
    assert connects(lab, "h1", "inet", 25, family=6)
    with enforced(lab, "h1", pb.VIOLATION_SPAM, "v6-spam") as record:
        assert any("eth_type=0x86dd" in r.text for r in record.rules)
        assert not connects(lab, "h1", "inet", 25, family=4)
        assert not connects(lab, "h1", "inet", 25, family=6)    # not sidestepped
        for port in (80, 587):
            assert connects(lab, "h1", "inet", port, family=6)  # its other traffic
        assert connects(lab, "h2", "inet", 25, family=6)        # its neighbour
    assert connects(lab, "h1", "inet", 25, family=6)            # lifted in both families


def test_anti_spoofing_leaves_no_way_around_over_ipv6(lab):
    """Its IPv6 sources cannot be validated yet (its IPv6 addresses are not
    known), so none of its IPv6 leaves, a rogue router advertisement
    included; its genuine IPv4 does, and its neighbours keep their IPv6."""
    h1, h2 = lab.host("h1"), lab.host("h2")

    def rogue_route_on_h2() -> bool:
        h2.cmd(f"ip -6 route flush default dev {h2.defaultIntf()}")
        h1.cmd(f"{sys.executable} {harness.HERE / 'ra_send.py'} {h1.defaultIntf()}")
        time.sleep(0.5)
        return "via fe80" in h2.cmd("ip -6 route show default")

    assert rogue_route_on_h2()  # without enforcement, it can play the router
    with enforced(lab, "h1", pb.VIOLATION_SPOOFING, "v6-spoof"):
        assert connects(lab, "h1", "inet", 80, family=4)
        assert not connects(lab, "h1", "inet", 80, family=6)
        assert not rogue_route_on_h2()
        assert connects(lab, "h2", "inet", 80, family=6)
    h2.cmd(f"ip -6 route flush default dev {h2.defaultIntf()}")
    assert connects(lab, "h1", "inet", 80, family=6)  # lifted
