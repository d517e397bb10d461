"""End to end: a gRPC spam decision blocks port 25 for one Mininet host.

Topology (topologies.LinearTopo(2, 2)): h1, h2 on s1; h3, h4 on s2. The
subscriber is h1. Everything is shown with real TCP handshakes; flow dumps only
confirm placement.
"""
import re

import grpc
import pytest

from enforcement.domain import pipeline
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet

PORTS = (25, 80, 587)


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.LinearTopo(switches=2, hosts_per_switch=2),
                      expected_links=2)
    for name in ("h2", "h3"):
        harness.start_listener(lab.host(name), PORTS)
    return lab


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def enforcement_flows() -> dict[str, list[str]]:
    """Every flow in the enforcement cookie namespace, per switch."""
    return {sw: harness.flows_with_cookie(
                sw, pipeline.NS_ENFORCE << pipeline.COOKIE_NAMESPACE_SHIFT,
                pipeline.COOKIE_NAMESPACE_MASK)
            for sw in ("s1", "s2")}


def connects(lab, src, dst, port) -> bool:
    return harness.tcp_connects(lab.host(src), lab.host(dst).IP(), port)


def spam_request(ip, request_id):
    return pb.ApplyRequest(request_id=request_id, case_id="CASE-42",
                           subscriber=pb.Subscriber(ip=ip),
                           violation=pb.VIOLATION_SPAM,
                           reason="1,200 recipients in one hour")


def test_topology_is_discovered_and_fully_reachable(lab):
    topo = lab.stub.GetTopology(pb.GetTopologyRequest())
    assert sorted(s.datapath_id for s in topo.switches) == [1, 2]
    assert len(topo.links) == 2  # one per direction
    hosts = {h.ip: (h.datapath_id, h.port) for h in topo.hosts}
    assert hosts == {"10.0.0.1": (1, 1), "10.0.0.2": (1, 2),
                     "10.0.0.3": (2, 1), "10.0.0.4": (2, 2)}
    assert lab.net.pingAll(timeout=2) == 0
    for src in ("h1", "h4"):
        for port in PORTS:
            assert connects(lab, src, "h3", port), f"{src} -> h3:{port} before enforcement"


def test_spam_decision_blocks_port_25_for_h1_only(lab):
    h1 = lab.host("h1")
    enforcement = lab.stub.Apply(spam_request(h1.IP(), "skeleton-1"))
    assert enforcement.state == pb.STATE_ACTIVE
    assert enforcement.location.datapath_id == 1 and enforcement.location.port == 1
    assert len(enforcement.rules) == 2  # over IPv4, and its IPv6 twin
    rule = enforcement.rules[0]
    assert rule.datapath_id == 1 and rule.table_id == pipeline.TABLE_ENFORCE

    # The offender cannot reach port 25 anywhere, on its own switch or beyond.
    assert not connects(lab, "h1", "h3", 25)
    assert not connects(lab, "h1", "h2", 25)
    # Its other traffic, the submission port included, is untouched.
    assert connects(lab, "h1", "h3", 80)
    assert connects(lab, "h1", "h3", 587)
    assert harness.ping(h1, lab.host("h3").IP())
    # Other subscribers, on the same switch and on the other one, still send mail.
    assert connects(lab, "h2", "h3", 25)
    assert connects(lab, "h4", "h3", 25)
    assert connects(lab, "h4", "h2", 25)

    # Placement: one enforcement flow per family, on h1's access switch.
    assert len(harness.flows_with_cookie("s1", rule.cookie)) == 2
    assert harness.flows_with_cookie("s2", rule.cookie) == []
    assert enforcement_flows() == {"s1": harness.flows_with_cookie("s1", rule.cookie), "s2": []}

    lifted = lab.stub.Lift(pb.LiftRequest(id=enforcement.id, reason="case closed"))
    assert lifted.state == pb.STATE_LIFTED
    assert enforcement_flows() == {"s1": [], "s2": []}
    assert connects(lab, "h1", "h3", 25)
    assert connects(lab, "h1", "h2", 25)


def test_bad_input_gets_the_right_status_and_changes_no_flow(lab):
    before = {sw: harness.dump_flows(sw, table=pipeline.TABLE_ENFORCE) for sw in ("s1", "s2")}
    bad = [
        (spam_request("10.0.0.1.5", "bad-1"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ApplyRequest(request_id="bad-2", case_id="C",
                         subscriber=pb.Subscriber(ip="10.0.0.1")),
         grpc.StatusCode.INVALID_ARGUMENT),
        (spam_request("10.0.0.99", "bad-3"), grpc.StatusCode.NOT_FOUND),
    ]
    for request, expected in bad:
        with pytest.raises(grpc.RpcError) as err:
            lab.stub.Apply(request)
        assert err.value.code() == expected, err.value.details()
    for call in (lambda: lab.stub.Lift(pb.LiftRequest(id="enf-unknown")),
                 lambda: lab.stub.Get(pb.GetRequest(id="enf-unknown"))):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    after = {sw: harness.dump_flows(sw, table=pipeline.TABLE_ENFORCE) for sw in ("s1", "s2")}
    assert after == before
    assert connects(lab, "h1", "h3", 25)


def test_decision_for_a_disconnected_switch_waits_and_holds_across_reconnect(lab):
    """A decision for a subscriber whose switch is gone is stored PENDING and
    applied when it connects; an active enforcement on another switch holds
    throughout, and forwarding comes back."""
    s2 = lab.host("s2")
    # h2: a first offence (h1's earlier case would escalate a repeat).
    active = lab.stub.Apply(spam_request(lab.host("h2").IP(), "reconnect-1"))
    assert active.state == pb.STATE_ACTIVE and active.escalation.step == 1
    controller = s2.vsctl("get-controller", "s2").strip()
    s2.vsctl("del-controller", "s2")
    try:
        harness.wait_until(lambda: 2 not in {s.datapath_id for s in lab.stub.GetTopology(
            pb.GetTopologyRequest()).switches}, 10, "s2 to disconnect")
        pending = lab.stub.Apply(spam_request(lab.host("h3").IP(), "reconnect-2"))
        assert pending.state == pb.STATE_PENDING
        assert "not connected" in pending.state_reason
    finally:
        s2.vsctl("set-controller", "s2", controller)
    harness.wait_until(lambda: lab.stub.Get(pb.GetRequest(id=pending.id)).state
                       == pb.STATE_ACTIVE, 15, "the pending decision to be applied")
    assert not connects(lab, "h3", "h2", 25)
    assert not connects(lab, "h2", "h3", 25)
    harness.wait_until(lambda: connects(lab, "h4", "h3", 25), 10, "h4 -> h3:25 after reconnect")
    assert connects(lab, "h2", "h3", 80)
    for enforcement in (active, pending):
        lab.stub.Lift(pb.LiftRequest(id=enforcement.id))
    assert connects(lab, "h2", "h3", 25) and connects(lab, "h3", "h2", 25)


def test_cli_applies_lists_shows_and_lifts_with_trustworthy_exit_codes(lab):
    import subprocess
    import sys

    def ctl(*args):
        return subprocess.run([sys.executable, "-m", "enforcement.clients.cli", "--server",
                               lab.controller.grpc_address, *args],
                              capture_output=True, text=True, timeout=30)

    applied = ctl("apply", "--ip", lab.host("h4").IP(), "--violation", "spam",
                  "--case", "CLI-1", "--reason", "from the CLI")
    assert applied.returncode == 0, applied.stderr
    enforcement_id = re.search(r"^id:\s+(\S+)", applied.stdout, re.M).group(1)
    assert "state:     active" in applied.stdout
    assert not connects(lab, "h4", "h3", 25)
    listed = ctl("list", "--state", "active")
    assert listed.returncode == 0 and enforcement_id in listed.stdout
    shown = ctl("show", enforcement_id)
    assert shown.returncode == 0 and "tcp_dst=25" in shown.stdout
    assert ctl("lift", enforcement_id).returncode == 0
    assert connects(lab, "h4", "h3", 25)
    refused = ctl("apply", "--ip", "10.0.0.99", "--violation", "spam", "--case", "CLI-2")
    assert refused.returncode == 1 and "NOT_FOUND" in refused.stderr
    assert ctl("show", "enf-nope").returncode == 1
    assert ctl("--server", "127.0.0.1:1", "list").returncode == 3
    topology = ctl("topology")
    assert topology.returncode == 0 and "2 switches" in topology.stdout
