"""The subscriber is the adversary: one host floods the control plane, and
the network (its neighbours, new hosts, decisions) keeps working.

Topology: LinearTopo(3, 2): h1 h2 on s1, h3 h4 on s2, h5 h6 on s3; h1 is the
attacker. Every figure is measured with real traffic through real Open
vSwitch on this machine, against the controller on its defaults.
"""
import re
import statistics
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

FLOODER = harness.HOST_SCRIPTS / "flood.py"
FLOOD_SECONDS = 20
# The figure is "at least 100,000 frames/s" (a margin for pacing);
# as fast as Python can (800,000/s here) the flood mostly measures how Open
# vSwitch's userspace datapath, which shares its thread with the OpenFlow
# connection, copes on two cores shared with everything else
# (bench/control_plane.py floods that hard).
FLOOD_RATE = 110_000
STORM_PPS = 200  # the controller's default --storm-pps


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.LinearTopo(switches=3, hosts_per_switch=2),
                      expected_links=4)
    harness.start_listener(lab.host("h6"), (80,))
    return lab


def apply_latencies(lab, count, tag):
    """Apply (a meter on h6, asked for explicitly, so repeats do not climb
    the ladder) then Lift, count times; Apply's seconds."""
    seconds = []
    action = pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT, rate=5000,
                              unit=pb.RATE_UNIT_KBPS, burst=2500)
    for i in range(count):
        message = pb.ApplyRequest(request_id=f"{tag}-{i}", case_id=f"CASE-{tag}",
                                  subscriber=pb.Subscriber(ip=lab.host("h6").IP()),
                                  violation=pb.VIOLATION_MINING, reason="latency probe",
                                  action=action)
        start = time.perf_counter()
        enforcement = lab.stub.Apply(message, timeout=10)
        seconds.append(time.perf_counter() - start)
        assert enforcement.state == pb.STATE_ACTIVE, enforcement.state_reason
        lab.stub.Lift(pb.LiftRequest(id=enforcement.id, reason="probe done"), timeout=10)
    return seconds


def switch_latencies(switch: str, count: int) -> list[float]:
    """The switch's own floor, of the same kind as Apply: a flow added and
    confirmed by the switch's barrier reply, then deleted, over one OpenFlow
    connection to its management socket (as ovs-ofctl uses, without a
    process start per call: some 25 ms whose noise hid the few ms a flood
    adds to the switch, which this floor is there to measure)."""
    import socket
    import struct

    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as parser

    class Datapath:  # what os-ken's messages need to serialize
        ofproto, ofproto_parser = ofp, parser

    header = struct.Struct("!BBHI")
    connection = socket.socket(socket.AF_UNIX)
    connection.settimeout(10)
    connection.connect(f"/var/run/openvswitch/{switch}.mgmt")

    def read(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            assert chunk, f"{switch} closed the floor's connection"
            data += chunk
        return data

    def receive() -> tuple[int, int]:
        _, kind, length, xid = header.unpack(read(header.size))
        body = read(length - header.size)
        if kind == ofp.OFPT_ECHO_REQUEST:
            connection.sendall(header.pack(ofp.OFP_VERSION, ofp.OFPT_ECHO_REPLY, length, xid)
                               + body)
        assert kind != ofp.OFPT_ERROR, f"the switch refused the floor's flow: {body!r}"
        return kind, xid

    def confirmed(message, xid: int) -> None:
        barrier = parser.OFPBarrierRequest(Datapath())
        for n, m in ((xid, message), (xid + 1, barrier)):
            m.set_xid(n)
            m.serialize()
        connection.sendall(bytes(message.buf) + bytes(barrier.buf))
        while receive() != (ofp.OFPT_BARRIER_REPLY, xid + 1):
            pass

    seconds = []
    with connection:
        connection.sendall(header.pack(ofp.OFP_VERSION, ofp.OFPT_HELLO, header.size, 1))
        while receive()[0] != ofp.OFPT_HELLO:
            pass
        for i in range(count):
            start = time.perf_counter()
            confirmed(parser.OFPFlowMod(Datapath(), cookie=0x77, table_id=9, priority=i + 1,
                                        match=parser.OFPMatch(), instructions=[]), 10 + 4 * i)
            seconds.append(time.perf_counter() - start)
            confirmed(parser.OFPFlowMod(Datapath(), cookie=0x77, cookie_mask=2**64 - 1,
                                        table_id=9, command=ofp.OFPFC_DELETE,
                                        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                                        match=parser.OFPMatch()), 12 + 4 * i)
    return seconds


def p99(values):
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def ping_loss(output: str) -> float:
    match = re.search(r"(\d+(?:\.\d+)?)% packet loss", output)
    assert match, output
    return float(match.group(1))


def test_a_flooding_subscriber_takes_down_nobody(lab):
    h1 = lab.host("h1")
    apply_latencies(lab, 20, "warm-up")  # first calls pay for imports and caches
    idle = apply_latencies(lab, 100, "idle")
    floor_idle = switch_latencies("s3", 30)
    events, stop_watch = [], threading.Event()

    def watch():
        stream = lab.stub.Watch(pb.WatchRequest(after_sequence=0))
        try:
            for event in stream:
                if event.kind == pb.EVENT_KIND_PORT_OVER_BUDGET:
                    events.append(event)
                if stop_watch.is_set():
                    break
        except grpc.RpcError:
            pass
        finally:
            stream.cancel()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # Storm control as the neighbours see it: the flood's frames reaching h3.
    capture = Capture(lab.host("h3"), "ether proto 0x88b5", "storm-h3")
    count = int(FLOOD_SECONDS * 20) - 20
    pingers = {
        "same switch": lab.host("h2").popen(
            ["ping", "-i", "0.05", "-c", str(count), "-W", "1", "-q", lab.host("h6").IP()]),
        "other switch": lab.host("h5").popen(
            ["ping", "-i", "0.05", "-c", str(count), "-W", "1", "-q", lab.host("h4").IP()]),
    }
    # nice: in this lab the attacker's CPU is the controller's and the
    # switch's too (two cores for all); a subscriber's own CPU is its own.
    flood = h1.popen(["nice", "-n", "19", sys.executable, str(FLOODER),
                      h1.defaultIntf().name, str(FLOOD_SECONDS), "--rate", str(FLOOD_RATE)])
    flood_started = time.monotonic()
    time.sleep(3)
    # A new subscriber plugged in on another switch during the flood.
    h9 = harness.plug_in_host(lab.net, "h9", "s3", "10.0.0.9", "00:00:00:00:00:09")
    plugged = time.monotonic()
    reached = None
    while time.monotonic() - plugged < 10:
        if "rc=0" in h9.cmd(f"nc -z -w 1 {lab.host('h6').IP()} 80; echo rc=$?"):
            reached = time.monotonic() - plugged
            break
    during = apply_latencies(lab, 60, "flood")
    floor_during = switch_latencies("s3", 30)
    flood_out, _ = flood.communicate(timeout=FLOOD_SECONDS + 30)
    flood_ended = time.monotonic()
    time.sleep(max(0.0, flood_started + FLOOD_SECONDS + 1 - flood_ended))
    time.sleep(1)
    after = apply_latencies(lab, 30, "after")
    floor_after = switch_latencies("s3", 30)
    losses = {name: ping_loss(p.communicate(timeout=60)[0].decode())
              for name, p in pingers.items()}
    storm_frames = capture.stop()
    stop_watch.set()
    apply_latencies(lab, 1, "wake-watch")  # an event, so the watcher sees it must stop
    watcher.join(10)

    fps = float(re.search(rb"fps=(\d+)", flood_out).group(1))
    report = (f"flood {fps:.0f} frames/s; losses {losses}; new host reached in {reached}; "
              f"Apply p99 idle {p99(idle) * 1e3:.1f} ms, flood {p99(during) * 1e3:.1f} ms, "
              f"after {p99(after) * 1e3:.1f} ms; switch floor p50/p99 idle "
              f"{statistics.median(floor_idle) * 1e3:.1f}/{p99(floor_idle) * 1e3:.1f} ms, flood "
              f"{statistics.median(floor_during) * 1e3:.1f}/{p99(floor_during) * 1e3:.1f} ms, "
              f"after {p99(floor_after) * 1e3:.1f} ms; "
              f"Apply p50 idle {statistics.median(idle) * 1e3:.1f}, flood "
              f"{statistics.median(during) * 1e3:.1f} ms; storm frames at h3: {len(storm_frames)}; "
              f"alarms {[(e.budget, e.port, round(e.rate)) for e in events]}")
    print(report)
    assert fps >= 100_000, report
    assert all(loss < 1.0 for loss in losses.values()), report
    assert reached is not None and reached <= 2.0, report
    # No backlog: Apply keeps near its idle latency, beyond what the switch
    # itself loses (its flow_mod-and-barrier floor, measured alongside over
    # a connection of its own: it stays under a millisecond during the
    # flood). The flood's forwarding takes about a core of the two that
    # everything here shares, so a decision, which wakes several threads,
    # waits for the CPU: measured here its median goes from about 3 ms to
    # 4-7 ms (x1.3 to x2.3, the same before and after the changes of
    # 2026-12-02), hence x3, far under what a backlog gave (the old failure:
    # p50 81 ms, p99 148 ms, for 10 s after a 1 s flood). One second after
    # the flood it is back within x2, with the tail held lower: a backlog
    # raises every call, so the median shows it, while the p99 of 30 calls
    # is their slowest one, which a single stall of the switch after the
    # flood (its datapath cache revalidated) can take to 20 ms without any
    # backlog.
    median = statistics.median
    slack_during = max(0.0, median(floor_during) - median(floor_idle))
    slack_after = max(0.0, median(floor_after) - median(floor_idle))
    assert median(during) <= 3 * median(idle) + slack_during, report
    assert p99(during) <= 0.1, report
    assert median(after) <= 2 * median(idle) + slack_after, report
    assert p99(after) <= 0.05, report
    # Storm control: what reached a neighbour is the budget, not the flood.
    assert len(storm_frames) <= STORM_PPS * (FLOOD_SECONDS + 2) + STORM_PPS, report
    assert any(e.budget == "storm" and e.datapath_id == 1 and e.port == 1
               and e.subscriber_ip == h1.IP() and e.rate > e.limit for e in events), report
    text = lab.log_path.read_text()
    assert "disconnected" not in text, "a switch lost its controller during the flood"


def links(lab) -> int:
    return len(lab.stub.GetTopology(pb.GetTopologyRequest()).links)


def test_mac_flooding_and_frames_built_to_break_the_controller_change_nothing(lab):
    """A subscriber sends frames from random source MACs (each one a copy
    the controller would learn from), among them broadcasts whose payload is
    all zeros, and forged LLDP: once, one such frame stopped OS-Ken's link
    discovery for good (controller/topology/lldp/discovery.py)."""
    h1, h2 = lab.host("h1"), lab.host("h2")
    events = []
    stream = lab.stub.Watch(pb.WatchRequest(subscriber_ip=h1.IP()), timeout=60)
    watcher = threading.Thread(target=lambda: events.extend(
        e for e in _until_cancelled(stream) if e.kind == pb.EVENT_KIND_PORT_OVER_BUDGET),
        daemon=True)
    watcher.start()
    copies_before = packet_ins(lab)
    forged = h2.popen([sys.executable, str(FLOODER), h2.defaultIntf().name, "15",
                       "--forged-lldp"])
    flood = h1.popen(["nice", "-n", "19", sys.executable, str(FLOODER),
                      h1.defaultIntf().name, "15", "--random-src"])
    flood.communicate(timeout=60)
    forged.communicate(timeout=60)
    copies = packet_ins(lab) - copies_before
    assert any(BANNED in f for f in harness.dump_flows("s1", table=2))
    # LLDP kept coming through all of it: no link timed out (10 s)
    assert links(lab) == 4
    assert lab.net.pingAll(timeout=2) == 0
    assert apply_latencies(lab, 3, "after-mac-flood")
    stream.cancel()
    watcher.join(5)
    budgets = {e.budget for e in events}
    print(f"packet-ins in 15 s: {copies}; alarms {sorted(budgets)}")
    assert "learning_ban" in budgets, events
    # the learning meter and the ban bound what reached the controller
    assert copies < 50 * 15 + 100, copies
    located = [h for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts
               if h.mac.startswith("02:f1:")]
    assert len(located) <= 11, len(located)
    text = lab.log_path.read_text()
    assert "unreadable LLDP frame" in text
    assert lab.log_problems() == []
    # the ban ends by itself (30 s by default): the port learns again
    harness.wait_until(lambda: not any(BANNED in f for f in harness.dump_flows("s1", table=2)),
                       40, "the learning ban to end")


BANNED = "priority=20,in_port=1 actions=drop"  # s1 port 1 drops unknown sources


def packet_ins(lab) -> float:
    """Packet-ins the controller received (handled or dropped), from its
    own metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://{lab.controller.metrics_address}/metrics",
                                  timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(
        r'^openflow_packet_ins_total\{outcome="\w+"\} (\S+)$', text, re.M))


def _until_cancelled(stream):
    try:
        yield from stream
    except grpc.RpcError:
        return


def set_fast_neighbour_expiry(lab):
    """Neighbour entries go stale within seconds, so hosts keep resolving
    (ARP) while the controller is away: the data plane must answer alone."""
    for host in lab.net.hosts:
        for intf in host.intfList():
            if intf.name != "lo":
                host.cmd(f"sysctl -qw net.ipv4.neigh.{intf.name}.base_reachable_time_ms=5000")
        host.cmd("sysctl -qw net.ipv4.neigh.default.base_reachable_time_ms=5000")


def data_plane_flows(switch):
    """The data plane's flows (tables 2-5), without counters."""
    return [f for f in harness.dump_flows(switch)
            if re.search(r"table=[2-5],", f)]


HEADLESS_SECONDS = 90


def test_the_network_runs_on_while_the_controller_is_dead_and_is_not_flushed_on_restart(lab):
    set_fast_neighbour_expiry(lab)
    # everybody knows everybody: the switches hold every host's flows
    assert lab.net.pingAll(timeout=2) == 0
    switches = [s.name for s in lab.net.switches]
    before = {s: data_plane_flows(s) for s in switches}
    count = int((HEADLESS_SECONDS + 30) * 20)
    pingers = {
        "same switch": lab.host("h1").popen(
            ["ping", "-i", "0.05", "-c", str(count), "-W", "1", "-q", lab.host("h2").IP()]),
        "across switches": lab.host("h3").popen(
            ["ping", "-i", "0.05", "-c", str(count), "-W", "1", "-q", lab.host("h6").IP()]),
    }
    time.sleep(2)
    lab.controller.proc.kill()  # kill -9
    lab.controller.proc.wait()
    killed = time.monotonic()
    restarted = None
    try:
        time.sleep(HEADLESS_SECONDS / 2)
        # neighbour entries long expired: a new TCP connection between known
        # hosts resolves and connects through the switches alone
        assert harness.tcp_connects(lab.host("h4"), lab.host("h6").IP(), 80)
        assert harness.tcp_connects(lab.host("h1"), lab.host("h6").IP(), 80)
        time.sleep(max(0.0, killed + HEADLESS_SECONDS - time.monotonic()))
        restarted = harness.ControllerProcess(
            lab.ofp_port, log_path=lab.log_path.with_name(lab.log_path.stem + "-restarted.log"),
            extra_args=lab.controller_args)
        restarted.wait_ready()
        channel = grpc.insecure_channel(restarted.grpc_address)
        from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
        stub = pb_grpc.EnforcementServiceStub(channel)
        harness.wait_until(lambda: len(stub.GetTopology(pb.GetTopologyRequest()).links) >= 4,
                           30, "links rediscovered")
        # the hosts were read back from the switches' flows, not relearned
        known = {h.ip for h in stub.GetTopology(pb.GetTopologyRequest()).hosts}
        assert {h.IP() for h in lab.net.hosts} <= known
        time.sleep(20)  # past the start-up grace: the computed state now rules
        after = {s: data_plane_flows(s) for s in switches}
        losses = {name: ping_loss(p.communicate(timeout=HEADLESS_SECONDS)[0].decode())
                  for name, p in pingers.items()}
        print(f"losses over {HEADLESS_SECONDS} s headless and a restart: {losses}")
        assert losses == {"same switch": 0.0, "across switches": 0.0}
        assert after == before, "the restarted controller changed the data plane"
        assert harness.tcp_connects(lab.host("h2"), lab.host("h6").IP(), 80)
        problems = [line for line in restarted.log_path.read_text().splitlines()
                    if re.search(r" ERROR |Traceback|OFPET_", line)]
        assert problems == []
        channel.close()
    finally:
        for p in pingers.values():
            if p.poll() is None:
                p.kill()
        if restarted is not None:
            restarted.stop()
