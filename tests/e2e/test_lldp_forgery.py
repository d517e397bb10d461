"""Topology only switches can write: subscribers forge LLDP from their ports
(raw sockets, mininet/lldp_forge.py), claiming other switches' ports, one
way and both ways from two lines; nothing they send makes a link, moves a
port's classification or costs anybody service, and every frame is counted.

Topology: LinearTopo(3, 2): h1 h2 on s1, h3 h4 on s2, h5 h6 on s3 (hosts on
ports 1-2; s1:3-s2:3 and s2:4-s3:3 are the links).
"""
import re
import sys
import time
import urllib.request

import grpc
import pytest

from controller.openflow import dataplane
from controller.topology.settling import SETTLE_SECONDS
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet

FORGE = harness.HOST_SCRIPTS / "lldp_forge.py"
RELAY = harness.HOST_SCRIPTS / "lldp_relay.py"
REAL_LINKS = {(1, 3, 2, 3), (2, 3, 1, 3), (2, 4, 3, 3), (3, 3, 2, 4)}
HOME = {"h1": (1, 1), "h2": (1, 2), "h3": (2, 1), "h4": (2, 2), "h5": (3, 1), "h6": (3, 2)}


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.LinearTopo(switches=3, hosts_per_switch=2),
                      expected_links=len(REAL_LINKS))
    for host in ("h2", "h5", "h6"):
        harness.start_listener(lab.host(host), (80,))
    return lab


@pytest.fixture(autouse=True)
def no_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def refused(lab) -> float:
    """LLDP frames the controller refused so far (its metrics)."""
    text = urllib.request.urlopen(f"http://{lab.controller.metrics_address}/metrics",
                                  timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(
        r'^openflow_lldp_refused_total\{reason="[^"]+"\} (\S+)$', text, re.M))


def forge(lab, host: str, claims, rounds=10, interval=0.2) -> int:
    """Frames sent from host's line claiming each (dpid, port); returns how
    many (two per claim per round: unsigned, and with a made-up
    authenticator)."""
    h = lab.host(host)
    out = h.cmd(f"{sys.executable} {FORGE} {h.defaultIntf().name} {rounds} {interval} "
                + " ".join(f"{dpid:x}:{port}" for dpid, port in claims))
    return int(re.search(r"sent=(\d+)", out).group(1))


def links(lab) -> set[tuple[int, int, int, int]]:
    return {(link.src_datapath_id, link.src_port, link.dst_datapath_id, link.dst_port)
            for link in lab.stub.GetTopology(pb.GetTopologyRequest()).links}


def located(lab) -> dict[str, tuple[int, int]]:
    by_ip = {h.ip: (h.datapath_id, h.port)
             for h in lab.stub.GetTopology(pb.GetTopologyRequest()).hosts}
    return {name: by_ip.get(lab.host(name).IP()) for name in HOME}


def lldp_events(lab, **wanted) -> list:
    """The lldp_forged identity events on Watch so far with every field
    wanted."""
    found = []
    stream = lab.stub.Watch(pb.WatchRequest(), timeout=3)
    try:
        for event in stream:
            if event.kind == pb.EVENT_KIND_IDENTITY_REFUSED and event.identity == "lldp_forged" \
                    and all(getattr(event, k) == v for k, v in wanted.items()):
                found.append(event)
    except grpc.RpcError as exc:  # the deadline ends the replay
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return found


def assert_nothing_changed(lab):
    """Exactly the real links; every host where it is (none of their ports
    turned into an uplink, which would forget its hosts and stop their
    learning and flooding); everybody reaches everybody, TCP across the
    whole line included."""
    # A link is announced within milliseconds of its frames: give the
    # controller's data plane a moment to show any change.
    time.sleep(1.0)
    assert links(lab) == REAL_LINKS
    assert located(lab) == HOME
    assert lab.net.pingAll(timeout=2) == 0
    for src, dst in (("h1", "h6"), ("h4", "h5"), ("h6", "h2"), ("h1", "h5")):
        assert harness.tcp_connects(lab.host(src), lab.host(dst).IP(), 80), (src, dst)
    assert located(lab) == HOME


def test_the_controllers_lldp_goes_through_the_pipeline_not_around_it(lab):
    for switch in ("s1", "s2", "s3"):
        # OS-Ken's table-0 rule (above every enforcement) is not there ...
        assert not [f for f in harness.dump_flows(switch, 0) if "0x88cc" in f]
        # ... table 2 copies LLDP: metered from the access ports, from the rest not
        lldp = [f for f in harness.dump_flows(switch, 2) if "dl_type=0x88cc" in f]
        access = [f for f in lldp if f"priority={dataplane.PRIORITY_LLDP_ACCESS}," in f]
        assert sorted(re.search(r"in_port=(\d+)", f).group(1) for f in access) == ["1", "2"]
        assert all("meter:" in f and "CONTROLLER" in f and "goto" not in f for f in access)
        assert [f for f in lldp if f"priority={dataplane.PRIORITY_LLDP}," in f
                and "in_port" not in f and "actions=CONTROLLER" in f]


def test_forged_lldp_one_way_from_one_line_changes_nothing_and_is_counted(lab):
    before = refused(lab)
    # h1 claims to be s3's subscriber port (h5's), s2's uplink toward s3, and
    # s3's uplink: each frame alone used to make a link and an uplink
    sent = forge(lab, "h1", [(3, 1), (2, 4), (3, 3)])
    assert_nothing_changed(lab)
    counted = refused(lab) - before
    assert sent == 60 and counted >= 0.95 * sent, (sent, counted)
    # one event on Watch for the port (throttled: 60 frames in 2 s), naming
    # the claimant and its first claim
    (event,) = lldp_events(lab, datapath_id=1, port=1)
    assert (event.claimant_mac, event.claimed, event.subscriber_ip) == (
        lab.host("h1").MAC(), "switch 0000000000000003 port 1", lab.host("h1").IP())
    assert "forged LLDP frame claiming switch 0000000000000003 port 1" in (
        lab.log_path.read_text())


def test_forged_lldp_both_ways_from_two_lines_on_different_switches_changes_nothing(lab):
    before = refused(lab)
    # a link s1:2 <-> s3:2 between two subscriber lines, each claiming the
    # other; and both of them claiming s2's real link ports
    sent = forge(lab, "h2", [(3, 2), (2, 3)]) + forge(lab, "h6", [(1, 2), (2, 4)])
    sent += forge(lab, "h2", [(3, 2)], rounds=5) + forge(lab, "h6", [(1, 2)], rounds=5)
    assert_nothing_changed(lab)
    assert refused(lab) - before >= 0.95 * sent
    for host, claimed in (("h2", "switch 0000000000000003 port 2"),
                          ("h6", "switch 0000000000000001 port 2")):
        dpid, port = HOME[host]
        assert [e.claimed for e in lldp_events(lab, datapath_id=dpid, port=port)] == [claimed]


def test_a_flood_of_forged_lldp_costs_only_its_ports_copy_budget(lab):
    before = refused(lab)
    started = time.monotonic()
    sent = forge(lab, "h3", [(1, 1), (3, 1)], rounds=10000, interval=0)
    elapsed = time.monotonic() - started
    time.sleep(1.0)
    counted = refused(lab) - before
    budget = dataplane.Budgets()
    # the learning meter of s2 port 1: its burst, then its rate
    allowed = budget.learn_burst + budget.learn_pps * (elapsed + 1.0)
    print(f"sent {sent} forged LLDP frames in {elapsed:.2f} s; {counted:.0f} reached "
          f"the controller (allowed {allowed:.0f})")
    assert 0 < counted <= allowed and sent > 10 * counted
    assert_nothing_changed(lab)


def test_a_cut_off_subscribers_lldp_never_reaches_the_controller(lab):
    record = lab.stub.Apply(pb.ApplyRequest(
        request_id="lldp-cutoff", case_id="CASE-lldp-cutoff",
        subscriber=pb.Subscriber(ip=lab.host("h4").IP()),
        violation=pb.VIOLATION_ILLEGAL_USE, reason="lldp test"))
    assert record.action.kind == pb.ACTION_KIND_CUTOFF
    try:
        before = refused(lab)
        forge(lab, "h4", [(1, 1), (3, 3)])
        time.sleep(1.0)
        assert refused(lab) == before  # dropped in table 0, before any copy
        assert links(lab) == REAL_LINKS
    finally:
        lab.stub.Lift(pb.LiftRequest(id=record.id, reason="lldp test over"))
    # the same frames, the cutoff lifted: they reach discovery (and are refused)
    before = refused(lab)
    forge(lab, "h4", [(1, 1), (3, 3)], rounds=3)
    harness.wait_until(lambda: refused(lab) > before, 5, "h4's frames to be counted")
    assert_nothing_changed(lab)


def restart_controller(lab, extra_args=()):
    """SIGKILL, then a new process on the same store and OpenFlow port."""
    old = lab.controller
    old.proc.kill()
    old.proc.wait()
    old.stop()
    new = harness.ControllerProcess(
        lab.ofp_port, log_path=old.log_path.with_name(old.log_path.stem + "-restarted.log"),
        extra_args=[*lab.controller_args, *extra_args])
    new.wait_ready()
    lab.controller = new
    lab.channel.close()
    lab.channel = grpc.insecure_channel(new.grpc_address)
    lab.stub = pb_grpc.EnforcementServiceStub(lab.channel)
    lab.log_path = new.log_path


def test_after_a_restart_real_links_are_found_and_forged_ones_still_refused(lab):
    # what a controller before this one left: OS-Ken's LLDP rule in table 0
    legacy = "priority=65535,dl_type=0x88cc,dl_dst=01:80:c2:00:00:0e"
    harness.ofctl("add-flow", "s1", f"cookie=0,table=0,{legacy},actions=CONTROLLER:65535")
    assert [f for f in harness.dump_flows("s1", 0) if "0x88cc" in f]
    restart_controller(lab)
    harness.wait_until(lambda: links(lab) == REAL_LINKS, 30, "the real links found again")
    harness.wait_until(lambda: not [f for f in harness.dump_flows("s1", 0) if "0x88cc" in f],
                       10, "OS-Ken's old LLDP rule removed")
    time.sleep(SETTLE_SECONDS)
    for host in lab.net.hosts:  # a new controller knows hosts once they speak
        host.cmd("ip neigh flush all")
        host.cmd(f"ping -c 1 -W 1 {lab.host('h1').IP()} > /dev/null")
    harness.wait_until(lambda: located(lab) == HOME, 15, "every host located")
    sent = forge(lab, "h5", [(1, 1), (2, 3)])
    assert_nothing_changed(lab)
    assert refused(lab) >= 0.95 * sent


def test_probes_a_subscriber_carries_between_two_inventory_lines_make_no_link(lab, tmp_path):
    """Authentic, fresh probes (the controller sends them out of every port,
    a subscriber's too) carried both ways between h1's and h5's lines, as
    if a cable joined s1:1 and s3:1: where the inventory declares the
    lines, no link ends there. (Without the inventory this is the one way
    left to write a link: see controller/linkpairs.py.)"""
    inventory = tmp_path / "inventory.toml"
    inventory.write_text("".join(
        f'[[subscriber]]\naccount = "{name}"\nip = "{lab.host(name).IP()}"\n'
        f"switch = {dpid}\nport = {port}\n" for name, (dpid, port) in HOME.items()
        if name in ("h1", "h5")))
    restart_controller(lab, ["--inventory", str(inventory)])
    harness.wait_until(lambda: links(lab) == REAL_LINKS, 30, "the real links found again")
    time.sleep(SETTLE_SECONDS)
    before = refused(lab)
    reported = {line: lldp_events(lab, datapath_id=line[0], port=line[1])
                for line in ((1, 1), (3, 1))}
    h1, h5 = lab.host("h1"), lab.host("h5")
    relays = [a.popen([sys.executable, str(RELAY), a.defaultIntf().name, b.IP(), "5999", "8"])
              for a, b in ((h1, h5), (h5, h1))]
    results = [relay.communicate(timeout=30)[0].decode() for relay in relays]
    for out in results:  # both lines received probes and sent the other's
        carried, injected = map(int, re.search(r"carried=(\d+) injected=(\d+)", out).groups())
        assert carried >= 5 and injected >= 5, results
    assert_nothing_changed(lab)
    assert refused(lab) - before >= 10
    assert "carried by a subscriber" in lab.log_path.read_text()
    # reported where the carried probes came in, claiming the other line
    # (once each: throttled)
    for (dpid, port), claimed in (((3, 1), "switch 0000000000000001 port 1"),
                                  ((1, 1), "switch 0000000000000003 port 1")):
        events = lldp_events(lab, datapath_id=dpid, port=port)
        assert [e.claimed for e in events[len(reported[(dpid, port)]):]] == [claimed]
