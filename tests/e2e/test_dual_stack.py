"""Dual-stack subscribers against real switches and hosts: every action,
named by the subscriber's IPv4 or by its IPv6 address, holds in both
families, touches none of its other traffic and none of its neighbours, and
an anti-spoofing subscriber cannot get around it over IPv6.

Topology (topologies.IspTopo): h1, h2 on access switch s2; dns, portal,
inet behind the aggregation. Every host gets a global IPv6 address
2001:db8::N next to its 10.0.0.N (inet: 2001:db8::200, dns ::250, portal
::251), and the policy lists the walled garden in both families. The
controller learns the IPv6 addresses from neighbour discovery.
"""
from __future__ import annotations

import contextlib
import sys
import time

import pytest

from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies
from testbed.capture import Capture

pytestmark = pytest.mark.mininet

FORGE = f"{sys.executable} {harness.HOST_SCRIPTS / 'v6_forge.py'}"
# Who is enforced against when the decision names which family, and its
# neighbour on the same access switch. Two subscribers, so that the tests by
# IPv6 are not repeats of those by IPv4 (a repeat climbs the ladder: one
# subscriber, one history, whichever address is named).
SUBJECTS = {4: ("h1", "h2"), 6: ("h2", "h1")}


def v6(host) -> str:
    return f"2001:db8::{host.IP().rsplit('.', 1)[1]}"


@pytest.fixture(scope="module")
def lab(lab_factory, tmp_path_factory):
    shipped = (harness.ROOT / "enforcement" / "domain" / "default_policy.toml").read_text()
    assert 'dns = ["10.0.0.250"]' in shipped and 'portal = ["10.0.0.251"]' in shipped
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    policy.write_text(shipped.replace('dns = ["10.0.0.250"]',
                                      'dns = ["10.0.0.250", "2001:db8::250"]')
                      .replace('portal = ["10.0.0.251"]',
                               'portal = ["10.0.0.251", "2001:db8::251"]'))
    lab = lab_factory(topologies.IspTopo(), expected_links=6,
                      controller_args=["--policy", str(policy)])
    for host in lab.net.hosts:
        host.cmd(f"ip -6 addr add {v6(host)}/64 dev {host.defaultIntf()} nodad")
    harness.start_listener(lab.host("inet"), (25, 80, 587), udp_ports=(9,), v6=True)
    harness.start_listener(lab.host("dns"), (53,), udp_ports=(53,), v6=True)
    harness.start_listener(lab.host("portal"), (80, 443), v6=True)
    for name in ("h1", "h2", "dns", "portal"):
        harness.wait_until(lambda n=name: connects(lab, n, "inet", 80, family=6), 20,
                           f"IPv6 from {name}")
    # Each host's address is learned from its neighbour solicitations.
    harness.wait_until(lambda: {"h1", "h2", "dns", "portal"} <= set(learned(lab)), 20,
                       "IPv6 addresses learned from neighbour discovery")
    return lab


def learned(lab) -> dict[str, list[str]]:
    """Host name -> the IPv6 addresses the controller knows it by."""
    names = {h.MAC(): h.name for h in lab.net.hosts}
    return {names[h.mac]: list(h.ipv6)
            for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts
            if h.mac in names and any(a.startswith("2001:db8::") for a in h.ipv6)}


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def connects(lab, src, dst, port, family=4):
    target = lab.host(dst)
    return harness.tcp_connects(lab.host(src), v6(target) if family == 6 else target.IP(),
                                port)


def answers(lab, src, dst, port, family=4):
    target = lab.host(dst)
    return harness.udp_answers(lab.host(src), v6(target) if family == 6 else target.IP(),
                               port)


def pings(lab, src, dst, family=4):
    target = lab.host(dst)
    return harness.ping(lab.host(src), v6(target) if family == 6 else target.IP())


@contextlib.contextmanager
def enforced(lab, src, violation, request_id, family=4):
    """Applied on the subscriber's IPv4 or IPv6 address, lifted afterwards."""
    host = lab.host(src)
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id=request_id, case_id=f"CASE-{request_id}",
        subscriber=pb.Subscriber(ip=v6(host) if family == 6 else host.IP()),
        violation=violation, reason="test"))
    assert record.state == pb.STATE_ACTIVE, record.state_reason
    # One identity: both families' addresses, whichever was named.
    assert {host.IP(), v6(host)} <= set(record.subscriber.addresses), record.subscriber
    try:
        yield record
    finally:
        lifted = lab.stub.Lift(pb.LiftRequest(id=record.id, reason="test over"))
        assert lifted.state == pb.STATE_LIFTED


@pytest.mark.parametrize("family", [4, 6])
def test_a_port_25_block_holds_in_both_families_and_nothing_else_is_touched(lab, family):
    me, neighbour = SUBJECTS[family]
    assert connects(lab, me, "inet", 25, family=6)
    with enforced(lab, me, pb.VIOLATION_SPAM, f"spam-by-v{family}", family) as record:
        assert record.escalation.step == 1
        assert any("eth_type=0x86dd" in r.text for r in record.rules)
        assert not connects(lab, me, "inet", 25, family=4)
        assert not connects(lab, me, "inet", 25, family=6)      # not sidestepped
        for port in (80, 587):
            for other in (4, 6):
                assert connects(lab, me, "inet", port, family=other)  # its other traffic
        assert connects(lab, neighbour, "inet", 25, family=6)   # its neighbour
        assert connects(lab, neighbour, "inet", 25, family=4)
    for other in (4, 6):
        assert connects(lab, me, "inet", 25, family=other)      # lifted in both families


def test_a_repeat_by_the_other_family_climbs_the_same_ladder(lab):
    h1 = lab.host("h1")
    first = lab.stub.Apply(pb.ApplyRequest(
        request_id="ladder-1", case_id="CASE-ladder", subscriber=pb.Subscriber(ip=h1.IP()),
        violation=pb.VIOLATION_PORT_SCAN, reason="scan"))
    lab.stub.Lift(pb.LiftRequest(id=first.id, reason="next"))
    second = lab.stub.Apply(pb.ApplyRequest(
        request_id="ladder-2", case_id="CASE-ladder", subscriber=pb.Subscriber(ip=v6(h1)),
        violation=pb.VIOLATION_PORT_SCAN, reason="scan again"))
    try:
        assert (first.escalation.step, second.escalation.step) == (1, 2)
        assert first.id in second.escalation.reason
    finally:
        lab.stub.Lift(pb.LiftRequest(id=second.id, reason="test over"))


@pytest.mark.parametrize("family", [4, 6])
def test_a_ping_flood_meter_holds_in_both_families(lab, family):
    me, neighbour = SUBJECTS[family]

    def delivered(dst_family: int, src: str = me) -> int:
        dst = lab.host("inet")
        address = v6(dst) if dst_family == 6 else dst.IP()
        out = lab.host(src).cmd(f"ping -c 100 -i 0.01 -W 1 -q {address}")
        return int(out.split(" received")[0].rsplit(" ", 1)[-1])

    assert delivered(6) >= 95
    with enforced(lab, me, pb.VIOLATION_PING_FLOOD, f"ping-by-v{family}", family):
        # 10 packets/s and a burst of 10 over about one second of pings.
        for dst_family in (4, 6):
            assert delivered(dst_family) <= 40, dst_family
        assert delivered(6, src=neighbour) >= 95                  # its neighbour
        assert connects(lab, me, "inet", 80, family=6)            # its other traffic
    assert delivered(6) >= 95


@pytest.mark.parametrize("family", [4, 6])
def test_cutoff_stops_both_families_and_only_the_subscriber(lab, family):
    me, neighbour = SUBJECTS[family]
    with enforced(lab, me, pb.VIOLATION_ILLEGAL_USE, f"cutoff-by-v{family}", family):
        for other in (4, 6):
            assert not connects(lab, me, "inet", 80, family=other)
            assert not pings(lab, neighbour, me, family=other)
            assert pings(lab, neighbour, "inet", family=other)
    harness.forget_unresolved_neighbours(lab.host(me), lab.host(neighbour))
    assert pings(lab, neighbour, me, family=6) and connects(lab, me, "inet", 80, family=6)


@pytest.mark.parametrize("family", [4, 6])
def test_quarantine_answers_dns_and_the_portal_in_both_families_and_nothing_else(lab,
                                                                              family):
    me, neighbour = SUBJECTS[family]
    with enforced(lab, me, pb.VIOLATION_MALWARE, f"quarantine-by-v{family}", family):
        for other in (4, 6):
            assert answers(lab, me, "dns", 53, family=other), other
            assert connects(lab, me, "dns", 53, family=other), other
            assert connects(lab, me, "portal", 80, family=other), other
            assert not connects(lab, me, "inet", 80, family=other), other
            assert not pings(lab, me, neighbour, family=other), other
            assert not pings(lab, neighbour, me, family=other), other
            assert connects(lab, neighbour, "inet", 80, family=other), other  # the others
    for other in (4, 6):
        assert connects(lab, me, "inet", 80, family=other)


def arrived(receiver, expression: str, send, name: str) -> int:
    """How many frames matching expression reached receiver while send ran."""
    capture = Capture(receiver, expression, name)
    try:
        send()
        time.sleep(0.5)
    finally:
        frames = capture.stop()
    return len(frames)


@pytest.mark.parametrize("family", [4, 6])
def test_anti_spoofing_validates_ipv6_sources_and_neighbour_discovery(lab, family):
    me, neighbour = SUBJECTS[family]
    spoofer, victim, inet = lab.host(me), lab.host(neighbour), lab.host("inet")
    intf = spoofer.defaultIntf()

    def udp_from(src: str) -> int:
        return arrived(inet, f"ip6 src {src} and udp dst port 9",
                       lambda: spoofer.cmd(f"{FORGE} udp {src} {v6(inet)} 9"),
                       f"spoof-{family}")

    def advertised(target: str) -> int:
        # The forged advertisement goes to all nodes; the host's own answers
        # to solicitations (inet asking for it meanwhile) go unicast and are
        # not counted.
        return arrived(inet, f"icmp6 and ip6[40] == 136 and ether src {spoofer.MAC()} "
                             "and ip6 dst ff02::1",
                       lambda: spoofer.cmd(f"{FORGE} na {intf} {target}"), f"na-{family}")

    def rogue_route_on_victim() -> bool:
        victim.cmd(f"ip -6 route flush default dev {victim.defaultIntf()}")
        spoofer.cmd(f"{sys.executable} {harness.HOST_SCRIPTS / 'ra_send.py'} {intf}")
        time.sleep(0.5)
        return "via fe80" in victim.cmd("ip -6 route show default")

    def dhcp6_reply() -> int:
        link_local = victim.cmd(f"ip -6 -o addr show dev {victim.defaultIntf()} scope link"
                                ).split()[3].split("/")[0]
        return arrived(victim, "udp dst port 546",
                       lambda: spoofer.cmd(f"{FORGE} dhcp6 {intf} {link_local}"),
                       f"dhcp6-{family}")

    def dhcp4_discover() -> int:
        return arrived(victim, "udp dst port 67 and src host 0.0.0.0",
                       lambda: spoofer.cmd(f"{FORGE} dhcp4 {intf}"), f"dhcp4-{family}")

    # A neighbour's address, another in the prefix, one outside it.
    forged = [v6(victim), "2001:db8::99", "2001:db9::1"]
    # Without enforcement every one of them gets out: the checks below can fail.
    assert all(udp_from(src) == 1 for src in [v6(spoofer), *forged])
    # A neighbour's address is never advertised, enforced or not: the switch
    # holds the claim and the controller refuses it (controller/topology/claims.py);
    # its own goes out (so the capture can see one).
    assert advertised(v6(victim)) == 0
    assert advertised(v6(spoofer)) == 1
    assert rogue_route_on_victim()
    # DHCP server messages from a subscriber line are dropped enforced or
    # not (controller/openflow/dhcpguard.py); the guard below repeats it in table 0.
    assert dhcp6_reply() == 0
    # The advertisement claimed the victim's address: it takes it back.
    victim.cmd(f"{FORGE} na {victim.defaultIntf()} {v6(victim)}")
    harness.wait_until(lambda: v6(victim) in learned(lab).get(neighbour, []), 10,
                       "the victim's address learned back")
    with enforced(lab, me, pb.VIOLATION_SPOOFING, f"spoof-by-v{family}", family):
        assert udp_from(v6(spoofer)) == 1                            # genuine
        assert connects(lab, me, "inet", 80, family=6)
        assert connects(lab, me, "inet", 80, family=4)
        assert [udp_from(src) for src in forged] == [0, 0, 0]
        assert advertised(v6(victim)) == 0                           # a neighbour's address
        assert advertised(v6(spoofer)) == 1                          # its own
        assert not rogue_route_on_victim()                           # RA guard
        assert dhcp6_reply() == 0
        assert dhcp4_discover() == 1                                 # a DHCP client asking
        assert v6(victim) in learned(lab)[neighbour]                 # nothing stolen
        assert connects(lab, neighbour, "inet", 80, family=6)        # the neighbour
        # A new (privacy) address in its /64, checked for duplicates as any
        # host does, is its own from then on (first come, first served); one
        # outside its /64 is not, checked or not.
        fresh, outside = f"2001:db8::{family}:abcd", f"2001:db9::{family}:abcd"
        for address in (fresh, outside):
            spoofer.cmd(f"ip -6 addr add {address}/64 dev {intf}")
        harness.wait_until(lambda: "tentative" not in spoofer.cmd(f"ip -6 addr show {intf}"),
                           10, "duplicate address detection over")
        harness.wait_until(lambda: udp_from(fresh) == 1, 10, "the new address validated")
        assert udp_from(outside) == 0
        assert [udp_from(src) for src in forged] == [0, 0, 0]
        for address in (fresh, outside):
            spoofer.cmd(f"ip -6 addr del {address}/64 dev {intf}")
    victim.cmd(f"ip -6 route flush default dev {victim.defaultIntf()}")
    assert udp_from("2001:db8::99") == 1                             # lifted
