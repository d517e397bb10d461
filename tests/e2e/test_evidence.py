"""Evidence, with real Open vSwitch, real hosts and real packets: what an
enforcement's rules and meters counted reaches Get, List, Watch and
enforcementctl get, exactly, and survives a controller restart and a switch
that reconnects empty (counters added up, never reset to zero).

Topology (topologies.IspTopo): s2 access with h1, h2; s3 access with h3,
h4; inet behind the aggregation. Subscribers send an exact number of TCP
SYNs from a raw socket (mininet/syn_send.py: no connection, so no
retransmission adds to the count), and a capture on the receiver says what
arrived.
"""
from __future__ import annotations

import contextlib
import itertools
import pathlib
import subprocess
import sys
import threading
import time

import grpc
import pytest

from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies
from testbed.capture import Capture

pytestmark = pytest.mark.mininet

INTERVAL = 1.0  # --evidence-interval: short, so that the tests wait little
SEND = f"{sys.executable} {harness.HOST_SCRIPTS / 'syn_send.py'}"
SYN_FRAME = 54  # Ethernet 14 + IPv4 20 + TCP 20 (no options)
SYN_ONLY = "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.IspTopo(), expected_links=6,
                      controller_args=["--evidence-interval", str(INTERVAL)])
    harness.start_listener(lab.host("inet"), (25, 80))
    return lab


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def decision(lab, src, violation, request_id, action=None):
    message = pb.ApplyRequest(request_id=request_id, case_id=f"CASE-{request_id}",
                              subscriber=pb.Subscriber(ip=lab.host(src).IP()),
                              violation=violation, reason="test")
    if action is not None:
        message.action.CopyFrom(action)
    return message


@contextlib.contextmanager
def enforced(lab, message):
    enforcement = lab.stub.Apply(message)
    assert enforcement.state == pb.STATE_ACTIVE, enforcement.state_reason
    try:
        yield enforcement
    finally:
        assert lab.stub.Lift(pb.LiftRequest(id=enforcement.id)).state == pb.STATE_LIFTED


def send_syns(lab, src, dst, port, count, interval=0.002):
    host = lab.host(src)
    assert harness.ping(host, lab.host(dst).IP())  # the neighbour resolved first
    out = host.cmd(f"{SEND} {lab.host(dst).IP()} {port} --count {count} "
                   f"--interval {interval}")
    assert out.split()[-1] == str(count), out


def evidence_of(lab, enforcement_id) -> pb.Evidence:
    return lab.stub.Get(pb.GetRequest(id=enforcement_id)).evidence


def settled_evidence(lab, enforcement_id, predicate, what) -> pb.Evidence:
    """The evidence once predicate holds, checked again after two more
    reads (a count that goes on growing is no exact count)."""
    harness.wait_until(lambda: predicate(evidence_of(lab, enforcement_id)), 6 * INTERVAL + 4,
                       what)
    time.sleep(2 * INTERVAL + 0.5)
    found = evidence_of(lab, enforcement_id)
    assert predicate(found), found
    return found


def ctl_get(lab, enforcement_id) -> str:
    return subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "enforcementctl"),
         "--server", lab.controller.grpc_address, "get", enforcement_id],
        capture_output=True, text=True, timeout=30, check=True).stdout


def test_a_port_25_block_counts_exactly_what_the_receiver_did_not_get(lab):
    inet = lab.host("inet")
    src = lab.host("h1").IP()
    with enforced(lab, decision(lab, "h1", pb.VIOLATION_SPAM, "ev-block")) as e:
        blocked = Capture(inet, f"src host {src} and tcp dst port 25", "ev-25")
        passed = Capture(inet, f"src host {src} and tcp dst port 80 and {SYN_ONLY}", "ev-80")
        send_syns(lab, "h1", "inet", 25, 137)
        send_syns(lab, "h1", "inet", 80, 61)
        time.sleep(0.5)
        assert blocked.stop() == []           # none of the 137 arrived
        assert len(passed.stop()) == 61       # port 80 unaffected
        found = settled_evidence(lab, e.id, lambda ev: ev.dropped_packets == 137,
                                 "the 137 SYNs counted")
        print(f"evidence: {found}")
        assert found.dropped_bytes == 137 * SYN_FRAME
        assert found.HasField("last_matched_at") and found.HasField("read_at")
        (v4,) = [r for r in found.rules if "eth_type=0x0800" in r.rule]
        assert (v4.packets, v4.verdict) == (137, "dropped") and "tcp_dst=25" in v4.rule
        assert sum(r.packets for r in found.rules) == 137  # the IPv6 rule saw none
        listed = list(lab.stub.List(pb.ListRequest(case_id=e.case_id)).enforcements)
        assert listed[0].evidence.dropped_packets == 137
        words = ctl_get(lab, e.id)
        print(words)
        assert "evidence:  dropped 137 packets (7,398 bytes) since " in words
        assert "; last at " in words


def test_a_meter_reports_what_it_let_through_and_dropped_as_ping_measures_it(lab):
    h1, inet = lab.host("h1"), lab.host("inet")
    with enforced(lab, decision(lab, "h1", pb.VIOLATION_PING_FLOOD, "ev-meter")) as e:
        (meter,) = e.meters
        assert (meter.unit, meter.rate) == ("pktps", 10)
        harness.current_tables()
        out = h1.cmd(f"ping -q -i 0.005 -c 300 -W 1 {inet.IP()}")
        received = int(out.split(" received")[0].rsplit(" ", 1)[-1])
        print(f"ping flood under a 10 packet/s meter: {received}/300 answered")
        found = settled_evidence(lab, e.id,
                                 lambda ev: len(ev.meters) == 1
                                 and ev.meters[0].passed_packets
                                 + ev.meters[0].dropped_packets >= 300,
                                 "the meter's 300 echo requests counted")
        (counted,) = found.meters
        print(f"meter evidence: {counted}")
        # The echo requests are all that h1 sent into the meter, bar a
        # neighbour solicitation or two (ICMPv6 is metered too).
        assert received <= counted.passed_packets <= received + 3
        assert 300 - received <= counted.dropped_packets <= 300 - received + 3
        assert counted.passed_packets + counted.dropped_packets <= 303
        # The rules' count and the meter's are two counters of the same
        # packets; Open vSwitch's userspace datapath was seen to credit a rule
        # with a few more than its meter under a flood (307 to 300, once
        # proofs had run alongside: neither evidence nor probes explain it).
        into_meter = counted.passed_packets + counted.dropped_packets
        print(f"the meter rules counted {found.metered_packets}, the meter {into_meter}")
        assert into_meter <= found.metered_packets <= into_meter + 10
        assert "meter " in ctl_get(lab, e.id)


def test_watch_gets_evidence_at_most_every_interval_and_only_for_what_moved(lab):
    moving_message = decision(lab, "h3", pb.VIOLATION_SPAM, "ev-watch-moving")
    idle_message = decision(lab, "h4", pb.VIOLATION_SPAM, "ev-watch-idle")
    with enforced(lab, moving_message) as moving, enforced(lab, idle_message) as idle:
        start = lab.stub.Get(pb.GetRequest(id=idle.id))  # both active before the stream
        assert start.state == pb.STATE_ACTIVE
        events: list[pb.Event] = []
        stream = lab.stub.Watch(pb.WatchRequest(after_sequence=0))

        def follow():
            with contextlib.suppress(grpc.RpcError):
                for event in stream:
                    if event.kind == pb.EVENT_KIND_EVIDENCE:
                        events.append(event)
        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        # SYNs for about 5 s, to port 25: dropped, counted at every read.
        send_syns(lab, "h3", "inet", 25, 250, interval=0.02)
        time.sleep(3 * INTERVAL)
        stream.cancel()
        reader.join(5)
        mine = [ev for ev in events if ev.enforcement_id == moving.id]
        times = [ev.at.ToNanoseconds() / 1e9 for ev in mine]
        print(f"{len(mine)} evidence events for the moving one, "
              f"gaps {[round(b - a, 2) for a, b in itertools.pairwise(times)]}")
        assert len(mine) >= 3
        assert all(b - a >= INTERVAL - 0.01 for a, b in itertools.pairwise(times))
        assert not [ev for ev in events if ev.enforcement_id == idle.id]
        counts = [ev.evidence.dropped_packets for ev in mine]
        assert counts == sorted(counts) and counts[-1] == 250
        assert all(ev.subscriber_ip == lab.host("h3").IP() for ev in mine)


def test_evidence_survives_a_controller_restart_and_a_switch_reconnect(lab):
    with enforced(lab, decision(lab, "h2", pb.VIOLATION_SPAM, "ev-survive")) as e:
        send_syns(lab, "h2", "inet", 25, 50)
        settled_evidence(lab, e.id, lambda ev: ev.dropped_packets == 50, "50 counted")
        lab.restart()
        after_restart = evidence_of(lab, e.id)
        assert after_restart.dropped_packets == 50  # from the store
        send_syns(lab, "h2", "inet", 25, 30)
        found = settled_evidence(lab, e.id, lambda ev: ev.dropped_packets == 80,
                                 "80 counted across the restart")
        assert found.dropped_bytes == 80 * SYN_FRAME
        # The switch loses its controller, and with it every flow; it
        # reconnects empty and gets the block back, counting from zero.
        s2 = lab.net.get("s2")
        target = s2.vsctl("get-controller", "s2").strip()
        s2.vsctl("del-controller", "s2")
        assert harness.flows_with_cookie("s2", e.rules[0].cookie) == []
        s2.vsctl("set-controller", "s2", target)
        harness.wait_until(lambda: len(harness.flows_with_cookie("s2", e.rules[0].cookie))
                           == len(e.rules), 15, "the block back on s2")
        time.sleep(2 * INTERVAL + 0.5)
        assert evidence_of(lab, e.id).dropped_packets == 80  # not reset to zero
        send_syns(lab, "h2", "inet", 25, 20)
        found = settled_evidence(lab, e.id, lambda ev: ev.dropped_packets == 100,
                                 "100 counted across the reconnect")
        assert found.resets >= 1 and found.dropped_bytes == 100 * SYN_FRAME
