"""The subscriber is the adversary at layer 2: forged ARP, neighbour
advertisements and copied MACs from a subscriber's port change nothing of
who is where, and an enforcement stays on its subscriber whatever address
it takes.

Topology (topologies.IspTopo(2, 2)): aggregation s1; access s2 (h1 port 2,
h2 port 3) and s3 (h3, h4); services s9 (dns 10.0.0.250, portal, mail,
inet 10.0.0.200). Every host also has 2001:db8::N/64.
"""
import re
import sys
import time

import pytest

from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet

FORGE = f"{sys.executable} {harness.HOST_SCRIPTS / 'l2_forge.py'}"
V6_FORGE = f"{sys.executable} {harness.HOST_SCRIPTS / 'v6_forge.py'}"
INET, DNS = "10.0.0.200", "10.0.0.250"


def v6(host) -> str:
    return {"inet": "2001:db8::200", "dns": "2001:db8::250"}.get(
        host.name, f"2001:db8::{host.IP().rsplit('.', 1)[1]}")


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.IspTopo(access=2, subscribers_per_switch=2),
                      expected_links=6)
    for host in lab.net.hosts:
        host.cmd(f"ip -6 addr add {v6(host)}/64 dev {host.defaultIntf()} nodad")
    inet = lab.host("inet")
    harness.start_listener(inet, (25, 80), v6=True)
    harness.start_listener(lab.host("dns"), (), udp_ports=(53,))
    for name in ("h1", "h2", "h3", "h4"):
        harness.start_listener(lab.host(name), (80,), v6=True)
    # Everyone known in both families before anything is claimed.
    for host in lab.net.hosts:
        if host is not inet:
            assert harness.ping(host, INET) and _ping6(host, v6(inet)), host.name
    return lab


def _ping6(src, dst: str) -> bool:
    return "rc=0" in src.cmd(f"ping -6 -c 1 -W 2 {dst} > /dev/null; echo rc=$?")


def _connects6(src, dst: str, port: int) -> bool:
    return "rc=0" in src.cmd(f"nc -6 -z -w 2 {dst} {port}; echo rc=$?")


def neighbour(host, address: str) -> str:
    """The MAC host's neighbour table holds for address ('' if none)."""
    found = re.search(r"lladdr (\S+)", host.cmd(f"ip neigh show {address}"))
    return found.group(1) if found else ""


def refusals(lab) -> list[str]:
    return [line for line in lab.log_path.read_text(errors="replace").splitlines()
            if line.endswith(": refused") and " claimed " in line]


def identity_events(lab, **wanted) -> list:
    """Refused identity claims on Watch so far, those with every field
    wanted."""
    found = []
    stream = lab.stub.Watch(pb.WatchRequest(), timeout=3)
    try:
        for event in stream:
            if event.kind == pb.EVENT_KIND_IDENTITY_REFUSED and all(
                    getattr(event, k) == v for k, v in wanted.items()):
                found.append(event)
    except Exception as exc:  # the deadline ends the replay
        if "DEADLINE_EXCEEDED" not in str(exc):
            raise
    return found


def apply(lab, host, violation, request_id):
    """A decision; a spam decision asks for the port-25 block whatever step
    of the ladder the subscriber is on (each test repeats one)."""
    action = (pb.ActionRequest(kind=pb.ACTION_KIND_BLOCK, protocol="tcp", ports=[25])
              if violation == pb.VIOLATION_SPAM else None)
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id=request_id, case_id=f"ID-{request_id}",
        subscriber=pb.Subscriber(ip=host.IP()), violation=violation, reason="identity",
        action=action))
    assert record.state == pb.STATE_ACTIVE, record.state_reason
    return record


@pytest.fixture(autouse=True)
def lift_everything(lab):
    yield
    for record in lab.stub.List(pb.ListRequest()).enforcements:
        if record.state in (pb.STATE_ACTIVE, pb.STATE_PENDING):
            lab.stub.Lift(pb.LiftRequest(id=record.id, reason="test over"))


def test_a_neighbour_claiming_an_enforced_subscribers_addresses_changes_nothing(lab):
    h1, h2, inet = lab.host("h1"), lab.host("h2"), lab.host("inet")
    record = apply(lab, h1, pb.VIOLATION_SPAM, "claim-1")
    assert not harness.tcp_connects(h1, INET, 25) and harness.tcp_connects(h1, INET, 80)
    assert neighbour(inet, h1.IP()) == h1.MAC() and neighbour(inet, v6(h1)) == h1.MAC()
    before = len(refusals(lab))
    # h2 claims h1's IPv4 address (gratuitous ARP) and IPv6 address
    # (unsolicited override advertisement), the way a poisoner does.
    intf = h2.defaultIntf().name
    h2.cmd(f"{FORGE} garp {intf} {h1.IP()}")
    h2.cmd(f"{V6_FORGE} na {intf} {v6(h1)}")
    h2.cmd(f"{V6_FORGE} na {intf} {v6(h1)}")
    harness.wait_until(lambda: len(refusals(lab)) >= before + 2, 5,
                       "both claims refused in the controller's log")
    time.sleep(0.5)
    # Nobody's neighbour table was poisoned: the forged frames went nowhere.
    assert neighbour(inet, h1.IP()) == h1.MAC()
    assert neighbour(inet, v6(h1)) == h1.MAC()
    assert harness.tcp_connects(inet, h1.IP(), 80) and _connects6(inet, v6(h1), 80)
    # The enforcement stayed on h1, which is still blocked, and only that.
    now = lab.stub.Get(pb.GetRequest(id=record.id))
    assert (now.state, now.location.port, now.location.mac) == (
        pb.STATE_ACTIVE, record.location.port, h1.MAC())
    assert not harness.tcp_connects(h1, INET, 25) and harness.tcp_connects(h1, INET, 80)
    # The claimant keeps its own service, and is not blocked.
    assert harness.tcp_connects(h2, INET, 25) and _connects6(h2, v6(inet), 25)
    topology = lab.stub.GetTopology(pb.GetTopologyRequest())
    located = {h.mac: h for h in topology.hosts}
    assert located[h1.MAC()].ip == h1.IP() and v6(h1) in located[h1.MAC()].ipv6
    assert located[h2.MAC()].ip == h2.IP()
    # The case system hears of each claim: who claimed what, from where,
    # whose it is.
    for claimed in (h1.IP(), v6(h1)):
        event, *_ = identity_events(lab, claimed=claimed, claimant_mac=h2.MAC())
        assert (event.identity, event.datapath_id, event.port) == ("address_claim", 2, 3)
        assert h1.MAC() in event.owner and event.subscriber_ip == h2.IP()


def test_a_mac_copied_from_another_port_moves_nothing(lab):
    h1, h3, inet = lab.host("h1"), lab.host("h3"), lab.host("inet")
    record = apply(lab, h1, pb.VIOLATION_SPAM, "mac-1")
    intf = h3.defaultIntf().name
    h3.cmd(f"{FORGE} frames {intf} {h1.MAC()}")
    h3.cmd(f"{FORGE} garp {intf} {h1.IP()} {h1.MAC()}")
    time.sleep(1)
    now = lab.stub.Get(pb.GetRequest(id=record.id))
    assert (now.location.datapath_id, now.location.port) == (
        record.location.datapath_id, record.location.port)
    located = {h.mac: h for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts}
    assert located[h1.MAC()].datapath_id == 2
    # Traffic toward h1 still goes to h1; h1 is still blocked; h3 untouched.
    assert harness.tcp_connects(inet, h1.IP(), 80)
    assert not harness.tcp_connects(h1, INET, 25)
    assert harness.tcp_connects(h3, INET, 25)
    assert any(f"at 0000000000000003 port 2 claimed MAC {h1.MAC()}" in line
               for line in refusals(lab))
    # (The forging port's own: a host seen on an uplink for a moment at start,
    # before LLDP confirmed the link both ways, can leave one from its own port.)
    event, *_ = identity_events(lab, identity="mac_claim", claimed=h1.MAC(),
                                datapath_id=3, port=2)
    assert "port 2" in event.owner


def test_the_dns_servers_address_claimed_during_a_quarantine(lab):
    h3, h4 = lab.host("h3"), lab.host("h4")
    record = apply(lab, h4, pb.VIOLATION_MALWARE, "garden-1")
    assert record.action.kind == pb.ACTION_KIND_QUARANTINE
    assert harness.udp_answers(h4, DNS, 53) and not harness.tcp_connects(h4, INET, 80)
    h3.cmd(f"{FORGE} garp {h3.defaultIntf().name} {DNS}")
    time.sleep(1)
    located = {h.ip: h for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts}
    assert located[DNS].mac == lab.host("dns").MAC()
    assert identity_events(lab, identity="address_claim", claimed=DNS, claimant_mac=h3.MAC())
    # The quarantined subscriber's DNS still reaches the real server.
    assert harness.udp_answers(h4, DNS, 53)
    assert harness.udp_answers(h3, DNS, 53)  # and the claimant keeps its own service
    assert not harness.tcp_connects(h4, INET, 80)


def test_a_subscriber_that_takes_a_new_address_stays_blocked_and_its_heir_is_not(lab):
    """Without DHCP: h1 moves to a new static address; h2 then takes h1's
    old one. The block stays on h1 (port and MAC) at once, and h2 with the
    old address connects to port 25."""
    h1, h2 = lab.host("h1"), lab.host("h2")
    old, new, h2_own = h1.IP(), "10.0.0.11", h2.IP()
    record = apply(lab, h1, pb.VIOLATION_SPAM, "renew-1")
    intf1, intf2 = h1.defaultIntf(), h2.defaultIntf()
    try:
        h1.cmd(f"ip addr flush dev {intf1} scope global; ip addr add {new}/24 dev {intf1}; "
               f"ip -6 addr add {v6(h1)}/64 dev {intf1} nodad")
        h1.setIP(new, 24)
        assert harness.ping(h1, INET)
        assert not harness.tcp_connects(h1, INET, 25), "a new address walked out of the block"
        assert harness.tcp_connects(h1, INET, 80)
        harness.wait_until(lambda: new in lab.stub.Get(pb.GetRequest(id=record.id)).subscriber
                           .addresses, 5, "the enforcement re-planned for the new address")
        # the old address is free now (its holder gave it up): h2 takes it
        h2.cmd(f"ip addr flush dev {intf2} scope global; ip addr add {old}/24 dev {intf2}; "
               f"ip -6 addr add {v6(h2)}/64 dev {intf2} nodad")
        h2.setIP(old, 24)
        assert harness.ping(h2, INET)
        assert harness.tcp_connects(h2, INET, 25), "the heir of the old address was blocked"
        now = lab.stub.Get(pb.GetRequest(id=record.id))
        assert (now.location.port, now.location.mac) == (record.location.port, h1.MAC())
        assert old not in now.subscriber.addresses
        assert not harness.tcp_connects(h1, INET, 25)
    finally:
        # h2 first: it gives the old address up before h1 claims it back
        for host, ip in ((h2, h2_own), (h1, old)):
            intf = host.defaultIntf()
            host.cmd(f"ip addr flush dev {intf} scope global; ip addr add {ip}/24 dev {intf}; "
                     f"ip -6 addr add {v6(host)}/64 dev {intf} nodad")
            host.setIP(ip, 24)
