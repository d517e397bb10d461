"""Every action, proven with real traffic on an ISP-like topology, with its
collateral: other subscribers and the same subscriber's other traffic.

Topology (topologies.IspTopo): s1 aggregation; s2 access with h1, h2; s3
access with h3, h4; s9 services with dns, portal, mail, inet. The subscriber
under enforcement is always h1 (or h2), on s2.
"""
import contextlib
import re
import time

import grpc
import pytest

from enforcement.domain import pipeline
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies
from testbed.capture import Capture

pytestmark = pytest.mark.mininet

SWITCHES = ("s1", "s2", "s3", "s9")
# iperf3 reports TCP payload; meters count whole frames (1448 payload bytes
# ride in 1514-byte frames with timestamps on).
FRAME_PER_PAYLOAD = 1514 / 1448


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.IspTopo(), expected_links=6)
    harness.start_listener(lab.host("inet"), (25, 80, 443, 587))
    harness.start_listener(lab.host("dns"), (53,), udp_ports=(53,))
    harness.start_listener(lab.host("portal"), (80, 443))
    harness.start_listener(lab.host("mail"), (25, 110, 995))
    for name in ("h1", "h2", "h3"):
        harness.start_listener(lab.host(name), (80,))
    return lab


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def connects(lab, src, dst, port):
    return harness.tcp_connects(lab.host(src), lab.host(dst).IP(), port)


def pings(lab, src, dst):
    return harness.ping(lab.host(src), lab.host(dst).IP())


def request(lab, src, violation, request_id, action=None):
    message = pb.ApplyRequest(request_id=request_id, case_id=f"CASE-{request_id}",
                              subscriber=pb.Subscriber(ip=lab.host(src).IP()),
                              violation=violation, reason="test")
    if action is not None:
        message.action.CopyFrom(action)
    return message


@contextlib.contextmanager
def enforced(lab, message, placed_on=("s2",)):
    """Applies a decision, checks it is active and placed only where it must
    be (the subscriber's access switch, plus a quarantine's path), and lifts
    it afterwards."""
    enforcement = lab.stub.Apply(message)
    assert enforcement.state == pb.STATE_ACTIVE, enforcement.state_reason
    cookie = enforcement.rules[0].cookie
    placement = {sw: len(harness.flows_with_cookie(sw, cookie)) for sw in SWITCHES}
    planned = {sw: sum(1 for r in enforcement.rules if r.datapath_id == int(sw[1:]))
               for sw in SWITCHES}
    assert placement == planned, placement
    assert {sw for sw, n in placement.items() if n} == set(placed_on), placement
    try:
        yield enforcement
    finally:
        lifted = lab.stub.Lift(pb.LiftRequest(id=enforcement.id, reason="test over"))
        assert lifted.state == pb.STATE_LIFTED
        for sw in SWITCHES:
            assert harness.flows_with_cookie(sw, cookie) == []


def test_everything_reaches_everything_before_enforcement(lab):
    for src in ("h1", "h2", "h3"):
        assert connects(lab, src, "inet", 80)
        assert connects(lab, src, "inet", 25)
        assert harness.udp_answers(lab.host(src), lab.host("dns").IP(), 53)
    assert connects(lab, "h3", "h1", 80) and connects(lab, "h1", "h2", 80)


def test_port_25_block(lab):
    with enforced(lab, request(lab, "h1", pb.VIOLATION_SPAM, "block-1")) as e:
        assert e.action.kind == pb.ACTION_KIND_BLOCK
        assert not connects(lab, "h1", "inet", 25)
        assert not connects(lab, "h1", "mail", 25)
        assert connects(lab, "h1", "inet", 80)
        assert connects(lab, "h1", "inet", 587)
        assert connects(lab, "h2", "inet", 25)
        assert connects(lab, "h3", "inet", 25)
    assert connects(lab, "h1", "inet", 25)


def test_rate_limit_holds_the_subscriber_to_its_rate_and_no_one_else(lab):
    rate_kbps = 5000
    action = pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT, rate=rate_kbps,
                              unit=pb.RATE_UNIT_KBPS, burst=rate_kbps // 2)
    with enforced(lab, request(lab, "h1", pb.VIOLATION_DENIAL_OF_SERVICE, "meter-1",
                               action)) as e:
        assert [(m.rate, m.unit) for m in e.meters] == [(rate_kbps, "kbps")]
        limited = harness.iperf3_mbps(lab.host("h1"), lab.host("inet"), seconds=5, omit=2)
        on_the_wire = limited * FRAME_PER_PAYLOAD
        print(f"h1 under a {rate_kbps} kbit/s meter: {limited:.2f} Mbit/s payload, "
              f"{on_the_wire:.2f} Mbit/s in frames")
        assert abs(on_the_wire - rate_kbps / 1000) <= 0.15 * rate_kbps / 1000
        other = harness.iperf3_mbps(lab.host("h2"), lab.host("inet"), seconds=2)
        print(f"h2 meanwhile: {other:.1f} Mbit/s")
        assert other > 10 * rate_kbps / 1000
    assert harness.iperf3_mbps(lab.host("h1"), lab.host("inet"), seconds=2) > 10 * rate_kbps / 1000


def ping_flood_received(lab, src, dst, count=300):
    harness.current_tables()
    out = lab.host(src).cmd(f"ping -q -i 0.005 -c {count} -W 1 {lab.host(dst).IP()}")
    return int(re.search(r"(\d+) received", out).group(1))


def test_icmp_meter_cuts_a_ping_flood_while_tcp_is_untouched(lab):
    baseline_tcp = harness.iperf3_mbps(lab.host("h1"), lab.host("inet"), seconds=2)
    assert ping_flood_received(lab, "h1", "inet") == 300
    with enforced(lab, request(lab, "h1", pb.VIOLATION_PING_FLOOD, "icmp-1")) as e:
        meter = e.meters[0]
        assert (meter.unit, meter.rate) == ("pktps", 10)
        # 300 echo requests over about 1.5 s: the meter lets its burst plus
        # about 10 per second through.
        received = ping_flood_received(lab, "h1", "inet")
        print(f"ping flood under a 10 packet/s meter: {received}/300 answered")
        assert 5 <= received <= meter.burst + 10 * 3
        tcp = harness.iperf3_mbps(lab.host("h1"), lab.host("inet"), seconds=2)
        print(f"h1 TCP meanwhile: {tcp:.0f} Mbit/s (before: {baseline_tcp:.0f})")
        assert tcp > 0.5 * baseline_tcp
        assert ping_flood_received(lab, "h2", "inet") == 300
    assert ping_flood_received(lab, "h1", "inet") == 300


def test_quarantine_leaves_only_dns_and_the_portal(lab):
    # Tagged at s2, steered through s1, untagged at s9 where dns and portal are.
    with enforced(lab, request(lab, "h1", pb.VIOLATION_MALWARE, "quarantine-1"),
                  placed_on=("s2", "s1", "s9")) as e:
        assert e.action.kind == pb.ACTION_KIND_QUARANTINE
        steered = harness.flows_with_cookie("s1", e.rules[0].cookie)
        assert any("dl_vlan=3999" in f for f in steered), steered
        h1 = lab.host("h1")
        assert harness.udp_answers(h1, lab.host("dns").IP(), 53)
        assert connects(lab, "h1", "dns", 53)
        assert connects(lab, "h1", "portal", 80)
        assert connects(lab, "h1", "portal", 443)
        # nothing else: the Internet, the mail server, its neighbours
        assert not connects(lab, "h1", "inet", 80)
        assert not connects(lab, "h1", "mail", 25)
        assert not connects(lab, "h1", "h2", 80)
        assert not pings(lab, "h1", "h3")
        # and nobody reaches it
        assert not connects(lab, "h2", "h1", 80)
        assert not connects(lab, "h3", "h1", 80)
        # collateral: the others are untouched
        assert connects(lab, "h2", "inet", 80) and connects(lab, "h2", "h3", 80)
    assert connects(lab, "h1", "inet", 80) and connects(lab, "h3", "h1", 80)


def test_cutoff_stops_everything_in_and_out(lab):
    with enforced(lab, request(lab, "h1", pb.VIOLATION_ILLEGAL_USE, "cutoff-1")) as e:
        assert e.action.kind == pb.ACTION_KIND_CUTOFF
        assert not harness.udp_answers(lab.host("h1"), lab.host("dns").IP(), 53)
        assert not connects(lab, "h1", "portal", 80)
        assert not pings(lab, "h1", "h2")
        assert not pings(lab, "h3", "h1")
        assert not connects(lab, "h2", "h1", 80)
        assert connects(lab, "h2", "inet", 80) and pings(lab, "h2", "h3")
    harness.forget_unresolved_neighbours(*(lab.host(h) for h in ("h1", "h2", "h3")))
    assert pings(lab, "h1", "h2") and connects(lab, "h3", "h1", 80)


def test_nothing_reaches_a_cut_off_subscriber_not_even_broadcast(lab):
    h1, h2, h3 = lab.host("h1"), lab.host("h2"), lab.host("h3")
    with enforced(lab, request(lab, "h1", pb.VIOLATION_ILLEGAL_USE, "cutoff-egress")):
        harness.current_tables()
        capture = Capture(h1, "not ether proto 0x88cc", "cutoff-h1")  # LLDP may go out
        h2.cmd(f"ping -c 3 -i 0.2 -W 1 {h1.IP()}")       # ARP for it, then unicast
        h3.cmd(f"ping -c 2 -i 0.2 -W 1 {h1.IP()}")       # the same from another switch
        h2.cmd("ping -c 2 -i 0.2 -W 1 10.0.0.77")        # ARP broadcasts for nobody
        h3.cmd("ping -b -c 2 -i 0.2 -W 1 10.0.0.255")    # an IP broadcast
        frames = capture.stop()
        assert frames == [], frames
    # lifting restores everything at once
    harness.forget_unresolved_neighbours(h1, h2, h3)
    assert pings(lab, "h1", "h2") and pings(lab, "h3", "h1")


def test_lifting_a_cutoff_restores_traffic_at_once_every_time(lab):
    """The lift is answered once the switch confirmed it, and the switch
    forwards and floods by itself: the very next packets pass, every time
    (this once depended on ARP taking a round trip through the controller)."""
    for i in range(8):
        e = lab.stub.Apply(request(lab, "h1", pb.VIOLATION_ILLEGAL_USE, f"cutoff-cycle-{i}"))
        assert e.state == pb.STATE_ACTIVE
        assert not harness.ping(lab.host("h1"), lab.host("h2").IP(), timeout=1)
        lab.stub.Lift(pb.LiftRequest(id=e.id, reason="cycle"))
        assert harness.ping(lab.host("h1"), lab.host("h2").IP(), timeout=1), f"cycle {i}"
        assert harness.ping(lab.host("h3"), lab.host("h1").IP(), timeout=1), f"cycle {i}"


def test_a_quarantined_subscriber_receives_only_its_garden_answers_and_arp(lab):
    h1, h2, h3, dns = lab.host("h1"), lab.host("h2"), lab.host("h3"), lab.host("dns")
    with enforced(lab, request(lab, "h2", pb.VIOLATION_MALWARE, "q-egress"),
                  placed_on=("s2", "s1", "s9")):
        harness.current_tables()
        capture = Capture(h2, "not ether proto 0x88cc", "quarantine-h2")
        h1.cmd(f"ping -c 3 -i 0.2 -W 1 {h2.IP()}")       # a neighbour, same switch
        h3.cmd(f"ping -c 2 -i 0.2 -W 1 {h2.IP()}")       # and from another switch
        h3.cmd("ping -b -c 2 -i 0.2 -W 1 10.0.0.255")    # an IP broadcast
        h1.cmd("ping -c 2 -i 0.2 -W 1 10.0.0.77")        # ARP broadcasts for nobody
        assert harness.udp_answers(h2, dns.IP(), 53)
        frames = capture.stop()
    garden = (dns.IP(), lab.host("portal").IP())
    answers = [f for f in frames if any(f": {ip}." in f for ip in garden)]
    arp = [f for f in frames if "ethertype ARP" in f]
    assert any(f": {dns.IP()}.53 >" in f for f in answers), frames  # the answer came
    assert sorted(answers + arp) == sorted(frames), frames  # and nothing else
    # ARP: replies to its own requests, and requests asking for its address
    assert all("Reply" in f or f"who-has {h2.IP()}" in f for f in arp), arp


def test_cutoff_supersedes_quarantine_and_lifting_it_restores_the_quarantine(lab):
    h1, dns = lab.host("h1"), lab.host("dns")
    with enforced(lab, request(lab, "h1", pb.VIOLATION_PHISHING, "stack-q"),
                  placed_on=("s2", "s1", "s9")):
        assert harness.udp_answers(h1, dns.IP(), 53)
        cutoff = lab.stub.Apply(request(lab, "h1", pb.VIOLATION_ROKSO_LISTED, "stack-c"))
        assert cutoff.state == pb.STATE_ACTIVE
        assert not harness.udp_answers(h1, dns.IP(), 53)
        assert not connects(lab, "h1", "portal", 80)
        lab.stub.Lift(pb.LiftRequest(id=cutoff.id))
        # back to exactly the quarantine: the garden answers, nothing else does
        assert harness.udp_answers(h1, dns.IP(), 53)
        assert connects(lab, "h1", "portal", 80)
        assert not connects(lab, "h1", "inet", 80)
    assert connects(lab, "h1", "inet", 80)


def forged_arrivals(lab, src, forged_ip, dst="inet", port=80, count=5) -> int:
    """Sends `count` TCP SYNs from src with a forged source address and counts
    how many reach dst (captured on dst's own interface)."""
    target = lab.host(dst)
    capture = f"/tmp/forged-{src}.pcap"
    # Hosts share the machine's process IDs: the capture is found and stopped
    # by its own pid, never by name (which would reach any tcpdump running).
    out = target.cmd(f"rm -f {capture} {capture}.log; "
                     f"tcpdump --immediate-mode -n -i {target.defaultIntf().name} -w {capture} "
                     f"'src host {forged_ip} and tcp dst port {port}' "
                     f"> /dev/null 2> {capture}.log & echo $!")
    tcpdump = int(out.split()[-1])
    harness.wait_until(lambda: "listening on" in target.cmd(f"cat {capture}.log"), 5,
                       "tcpdump listening")
    time.sleep(0.5)
    harness.current_tables()
    lab.host(src).cmd(f"hping3 -q -S -p {port} -a {forged_ip} -c {count} -i u20000 "
                      f"{target.IP()} > /dev/null 2>&1")
    time.sleep(0.5)
    target.cmd(f"kill -INT {tcpdump}; wait {tcpdump}")  # wait: the capture is written
    out = target.cmd(f"tcpdump -n -r {capture} 2>/dev/null | wc -l")
    return int(out.strip().splitlines()[-1])


def test_anti_spoofing_drops_forged_sources_and_keeps_genuine_traffic(lab):
    assert forged_arrivals(lab, "h1", "10.0.0.77") == 5  # the forgery works without it
    with enforced(lab, request(lab, "h1", pb.VIOLATION_SPOOFING, "spoof-1")) as e:
        assert e.action.kind == pb.ACTION_KIND_ANTI_SPOOFING
        assert forged_arrivals(lab, "h1", "10.0.0.77") == 0
        assert forged_arrivals(lab, "h1", lab.host("h2").IP()) == 0  # a neighbour's address
        assert connects(lab, "h1", "inet", 80) and pings(lab, "h1", "h3")
        assert forged_arrivals(lab, "h2", "10.0.0.78") == 5  # not h2's enforcement


def test_block_and_rate_limit_compose_and_lifting_one_keeps_the_other(lab):
    block = lab.stub.Apply(request(lab, "h2", pb.VIOLATION_SPAM, "compose-block"))
    action = pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT, rate=5000,
                              unit=pb.RATE_UNIT_KBPS, burst=2500)
    meter = lab.stub.Apply(request(lab, "h2", pb.VIOLATION_MINING, "compose-meter", action))
    try:
        assert (block.state, meter.state) == (pb.STATE_ACTIVE, pb.STATE_ACTIVE)
        assert not connects(lab, "h2", "inet", 25)
        assert harness.iperf3_mbps(lab.host("h2"), lab.host("inet"), seconds=3) < 6
        lab.stub.Lift(pb.LiftRequest(id=meter.id))
        assert not connects(lab, "h2", "inet", 25)
        assert harness.iperf3_mbps(lab.host("h2"), lab.host("inet"), seconds=2) > 50
    finally:
        lab.stub.Lift(pb.LiftRequest(id=block.id))
        lab.stub.Lift(pb.LiftRequest(id=meter.id))
    assert connects(lab, "h2", "inet", 25)


def test_plan_equals_what_apply_installs(lab):
    message = request(lab, "h2", pb.VIOLATION_PHISHING, "plan-1")
    before = {sw: harness.dump_flows(sw) for sw in SWITCHES}
    plan = lab.stub.Plan(message)
    assert {sw: harness.dump_flows(sw) for sw in SWITCHES} == before
    with enforced(lab, message, placed_on=("s2", "s1", "s9")) as enforcement:
        assert list(plan.rules) == list(enforcement.rules)
        assert plan.action == enforcement.action
        installed = sum(len(harness.flows_with_cookie(sw, enforcement.rules[0].cookie))
                        for sw in SWITCHES)
        assert installed == len(plan.rules)


def test_protected_assets_are_refused_and_nothing_changes(lab):
    before = {sw: harness.dump_flows(sw, table=pipeline.TABLE_ENFORCE) for sw in SWITCHES}
    with pytest.raises(grpc.RpcError) as err:
        lab.stub.Apply(request(lab, "dns", pb.VIOLATION_ILLEGAL_USE, "protected-1"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "protected asset" in err.value.details()
    assert {sw: harness.dump_flows(sw, table=pipeline.TABLE_ENFORCE) for sw in SWITCHES} == before
