"""End to end: DHCP snooping with a real server and real clients.

Topology (topologies.IspTopo(2, 2, dhcp=True)): h1, h2 on s2; h3, h4 on s3;
dns, portal, mail, inet and dhcp (10.0.0.253) on s9. Debian's dnsmasq runs
on dhcp, whose port is the controller's only trusted one; h1 and h3 take
their addresses with busybox's udhcpc, h4 stays static. A rogue dnsmasq on
h2's subscriber line answers h1's requests, and the switch drops every
answer: h1 leases from the real server, or from nobody.
"""
import re
import time

import pytest

from testbed import dhcp, topologies
from testbed import lab as harness

pytestmark = pytest.mark.mininet

RANGE = ("10.0.0.100", "10.0.0.149")
V6_RANGE = ("2001:db8::1000", "2001:db8::10ff")
ROGUE_RANGE = ("10.0.0.60", "10.0.0.69")
TOPO = topologies.IspTopo(access=2, subscribers_per_switch=2, dhcp=True)


def in_range(ip, bounds) -> bool:
    low, high = (int(b.rsplit(".", 1)[1]) for b in bounds)
    return ip.startswith("10.0.0.") and low <= int(ip.rsplit(".", 1)[1]) <= high


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(TOPO, expected_links=6,
                      controller_args=["--dhcp-trusted", dhcp.trusted_port(TOPO, "s9", "dhcp")])
    # DHCPv6 serves a /64 the server has an address in.
    lab.host("dhcp").cmd("ip -6 addr add 2001:db8::253/64 dev dhcp-eth0 nodad")
    lab.server = start_server(lab)
    return lab


def start_server(lab):
    return dhcp.start_dhcp_server(lab.host("dhcp"), RANGE, lease_seconds=120,
                                  v6_range=V6_RANGE)


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def bindings_logged(lab) -> dict[str, tuple[str, str]]:
    """MAC -> (address, lease end) from the controller's log, the newest."""
    found = {}
    for match in re.finditer(r"dhcp binding: (\S+) (\S+), lease ends (\S+ \S+)",
                             lab.log_path.read_text()):
        found[match.group(1)] = (match.group(2), match.group(3))
    return found


def dropped_server_replies(switch: str, port: int) -> int:
    """The n_packets of the switch's drop of DHCP server messages from port."""
    out = harness.ofctl("dump-flows", switch, "table=2")
    return sum(int(re.search(r"n_packets=(\d+)", line).group(1))
               for line in out.splitlines()
               if "priority=400" in line and f"in_port={port}," in line and "drop" in line)


def test_the_trusted_port_is_copied_and_the_subscriber_ports_drop_server_replies(lab):
    trusted = TOPO.port("s9", "dhcp")[0]
    s9 = harness.dump_flows("s9", table=2)
    assert any(f"in_port={trusted}," in f and "tp_src=67" in f and "CONTROLLER" in f
               for f in s9), s9
    s2 = harness.dump_flows("s2", table=2)
    for host in ("h1", "h2"):
        port = TOPO.port("s2", host)[0]
        assert sum(f"in_port={port}," in f and "actions=drop" in f and "priority=400" in f
                   for f in s2) == 2, s2  # IPv4 and IPv6
    uplink = TOPO.port("s2", "s1")[0]
    assert not any(f"in_port={uplink}," in f and "priority=400" in f for f in s2)


def test_subscribers_lease_from_the_real_server_and_the_controller_binds_them(lab):
    h1, h3 = lab.host("h1"), lab.host("h3")
    got = {name: dhcp.dhcp_client(lab.host(name)) for name in ("h1", "h3")}
    assert all(in_range(ip, RANGE) for ip in got.values()), got
    assert got["h1"] != got["h3"]
    leases = {mac: (ip, end) for mac, ip, end in lab.server.leases()}
    assert leases[h1.MAC()][0] == got["h1"] and leases[h3.MAC()][0] == got["h3"]

    def bound():
        logged = bindings_logged(lab)
        return all(logged.get(h.MAC(), ("",))[0] == h.IP() for h in (h1, h3)) and logged
    logged = harness.wait_until(bound, 10, "the bindings in the controller's log")
    for host in (h1, h3):
        end = logged[host.MAC()][1]
        # The lease end the controller computed is the server's, give or take.
        server_end = leases[host.MAC()][1]
        assert abs(time.mktime(time.strptime(end, "%Y-%m-%d %H:%M:%S")) - server_end) <= 3
    # The new addresses work: to a server, and between the two subscribers.
    assert harness.ping(h1, "10.0.0.250") and harness.ping(h3, "10.0.0.250")
    assert harness.ping(h1, got["h3"])


def test_a_renewal_keeps_the_address(lab):
    h1 = lab.host("h1")
    before = h1.IP()
    assert dhcp.renew(h1) == before
    assert harness.ping(h1, "10.0.0.250")


def test_a_renewal_onto_a_new_address_ends_the_old_binding(lab):
    """The server now reserves another address for h3: its renewal is
    refused, it asks afresh and gets the new one; the controller's table
    follows (the NAK ends the old binding)."""
    h3 = lab.host("h3")
    old = h3.IP()
    new = "10.0.0.140" if old != "10.0.0.140" else "10.0.0.141"
    lab.server.set_static({h3.MAC(): new})
    assert dhcp.renew(h3, timeout=20) == new
    harness.wait_until(lambda: bindings_logged(lab).get(h3.MAC(), ("",))[0] == new, 10,
                       "the new binding in the controller's log")
    assert re.search(rf"dhcp binding ended \((nak|moved)\): {h3.MAC()} {re.escape(old)},",
                     lab.log_path.read_text())
    assert harness.ping(h3, "10.0.0.250")


def test_a_rogue_server_on_a_subscriber_line_leases_nothing_to_its_neighbour(lab):
    h1, h2 = lab.host("h1"), lab.host("h2")
    rogue_port = TOPO.port("s2", "h2")[0]
    dropped_before = dropped_server_replies("s2", rogue_port)
    # It offers without pinging first: its answers would come before the
    # real server's, and udhcpc takes the first offer it gets.
    rogue = dhcp.start_dhcp_server(h2, ROGUE_RANGE, lease_seconds=120, ping=False)
    try:
        # Both servers hear h1 ask afresh; only the real one's answer arrives.
        dhcp.stop_client(h1, release=True)
        address = dhcp.dhcp_client(h1)
        assert in_range(address, RANGE), address
        harness.wait_until(lambda: "DHCPOFFER" in rogue.log, 5,
                           "the rogue's offer (without it nothing is proven)")
        harness.wait_until(lambda: dropped_server_replies("s2", rogue_port) > dropped_before,
                           5, "the drop rule's counter to move")

        # With the real server gone, h1 gets nothing rather than the rogue's.
        lab.server.stop()
        dhcp.stop_client(h1, release=False)
        with pytest.raises(TimeoutError):
            dhcp.dhcp_client(h1, timeout=12)
        events = h1.dhcp_client.events()
        assert not any(what == "bound" for what, _ in events), events
        assert rogue.leases() == [] or all(mac != h1.MAC() for mac, _, _ in rogue.leases())
    finally:
        rogue.stop()
        dhcp.stop_client(h1)
        lab.server = start_server(lab)
    assert not any(in_range(ip, ROGUE_RANGE) for ip, _ in bindings_logged(lab).values())
    # The drop kept the copies away: nothing untrusted reached the controller.
    assert "not declared trusted" not in lab.log_path.read_text()
    assert in_range(dhcp.dhcp_client(h1), RANGE)


def test_a_static_subscriber_keeps_working_beside_dhcp_ones(lab):
    h1, h4 = lab.host("h1"), lab.host("h4")
    assert h4.IP() == "10.0.0.4"
    assert harness.ping(h4, "10.0.0.250")
    assert harness.ping(h4, h1.IP())


def test_a_dhcpv6_lease_is_bound_to_the_clients_mac(lab):
    h3 = lab.host("h3")
    address = dhcp.dhcp6_client(h3)
    assert V6_RANGE[0] <= address <= V6_RANGE[1] and len(address) == len(V6_RANGE[0])
    harness.wait_until(lambda: bindings_logged(lab).get(h3.MAC()) is not None
                       and any(m.group(1) == address for m in re.finditer(
                           rf"dhcp binding: {h3.MAC()} (\S+),", lab.log_path.read_text())),
                       10, f"the binding of {address} to {h3.MAC()} in the controller's log")
    # The address works: the server answers it.
    assert "rc=0" in h3.cmd("ping -6 -c 1 -W 2 2001:db8::253 > /dev/null; echo rc=$?")


def test_a_blocked_subscriber_renews_onto_a_new_address_and_its_heir_is_not_blocked(lab):
    """The enforcement belongs to the subscriber, not to its lease: h1,
    under a port-25 block, is given a new address by the server (a
    renewal refused, a new lease); it is still blocked there, and 80 still
    works. Its old address is then leased to its neighbour h2, who connects
    to port 25 at once."""
    from enforcement.v1 import enforcement_pb2 as pb
    h1, h2, inet = lab.host("h1"), lab.host("h2"), lab.host("inet")
    harness.start_listener(inet, (25, 80))
    old = h1.IP()
    if not in_range(old, RANGE):
        old = dhcp.dhcp_client(h1)
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id="dhcp-block-1", case_id="DHCP-1", subscriber=pb.Subscriber(ip=old),
        violation=pb.VIOLATION_SPAM, reason="renewal test"))
    assert record.state == pb.STATE_ACTIVE, record.state_reason
    assert not harness.tcp_connects(h1, "10.0.0.200", 25)
    assert harness.tcp_connects(h1, "10.0.0.200", 80)
    new = next(f"10.0.0.{n}" for n in range(120, 149) if f"10.0.0.{n}" != old)
    lab.server.set_static({h1.MAC(): new, h2.MAC(): old})
    assert dhcp.renew(h1, timeout=20) == new
    assert not harness.tcp_connects(h1, "10.0.0.200", 25), "the new lease walked out"
    assert harness.tcp_connects(h1, "10.0.0.200", 80)
    harness.wait_until(lambda: new in lab.stub.Get(pb.GetRequest(id=record.id))
                       .subscriber.addresses, 10, "the enforcement planned for the new lease")
    # The old address goes to the neighbour: it is not enforced against.
    assert dhcp.dhcp_client(h2) == old
    assert harness.tcp_connects(h2, "10.0.0.200", 25), "the heir of the old lease was blocked"
    assert harness.tcp_connects(h2, "10.0.0.200", 80)
    now = lab.stub.Get(pb.GetRequest(id=record.id))
    assert (now.state, now.location.mac, now.location.port) == (
        pb.STATE_ACTIVE, h1.MAC(), record.location.port)
    assert old not in now.subscriber.addresses
    assert not harness.tcp_connects(h1, "10.0.0.200", 25)
    lab.stub.Lift(pb.LiftRequest(id=record.id, reason="test over"))
