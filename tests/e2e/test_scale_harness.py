"""The scale harness at a small size (issue 25): 50 real Open vSwitch bridges
(a private ovs-vswitchd, the dummy datapath) in a gateway / aggregation /
access tree, 1,000 subscribers as dummy ports, the real controller process
over OpenFlow 1.3 and gRPC.

Every switch connects and comes in sync; every subscriber is located at its
own line in both families (announced by injected ARP and neighbour
advertisements); the DHCP server's acknowledgements from its trusted port
become bindings; an enforcement lands, bites (a frame to TCP 25 injected on
the subscriber's port does not leave the gateway, one to TCP 80 does) and
holds across a kill -9 of the controller and a restart, after which every
switch holds the flows it held before; flow entries per switch are reported
by tier.

The controller runs on its defaults but one: --switch-timeout 30 (5 s by
default). A restarted controller reads back every reconnecting switch's
flows in one Python process, and with today's forwarding (a flow for every
host on every switch: about 1,400 per switch here) the last of 50 switches
waits more than 5 s on two shared cores; a switch whose preparation timed
out is logged ("could not be prepared: did not confirm within 5.0 s") and
never prepared again while it stays connected, so its hosts stay unknown
and the controller never gets back in sync. Seen here once in three runs at
1,000 subscribers, and at 2,000 in every run (two minutes of timeouts and
reconnections, once no sync within ten minutes): bench/results/
2026-12-07-scale.md. 1,000 subscribers rather than the issue's 2,000 keep
the module within about three minutes; the larger sizes are bench/scale.py's.
"""
import time

import pytest

from enforcement.v1 import enforcement_pb2 as pb
from testbed.scale import tree
from testbed.scale.lab import ScaleLab
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.mininet

SWITCHES, SUBSCRIBERS = 50, 1000
RECONCILE_WITHIN = 90.0   # seconds from the kill; seen here: 9-19 s
SWITCH_TIMEOUT = "30"     # see the module's notes


@pytest.fixture(scope="module")
def scale(mininet_lock):
    """The lab with every subscriber located. Its own Open vSwitch touches
    no lab bridge, but the module still takes the shared lock: 50 switches
    on two cores would slow the Mininet tests' timing-sensitive checks."""
    ARTIFACTS.mkdir(exist_ok=True)
    begun = time.monotonic()
    shape = tree.build(SWITCHES, SUBSCRIBERS)
    with ScaleLab(shape, log_path=ARTIFACTS / "test_scale_harness-controller.log",
                  controller_args=["--switch-timeout", SWITCH_TIMEOUT]) as lab:
        lab.build()
        lab.start_controller()
        lab.figures = {"start to sync": lab.wait_in_sync(lab.started_at, timeout=120)}
        lab.announce_services()
        started = time.monotonic()
        lab.appearance = lab.add_hosts(shape.subscribers)
        lab.figures["hosts located"] = lab.appearance.seconds
        lab.figures["hosts in sync"] = lab.wait_in_sync(started, timeout=180)
        lab.figures["set-up in all"] = time.monotonic() - begun
        yield lab


@pytest.fixture(autouse=True)
def no_controller_errors(scale):
    yield
    assert scale.log_problems() == [], "the controller logged errors"


def test_every_switch_connects_and_comes_in_sync(scale):
    state, wanted = scale.sync_state(), scale.wanted()
    print(f"\n{SWITCHES} switches, {SUBSCRIBERS} subscribers: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in scale.figures.items())
          + f"; {scale.appearance}")
    assert (state.connected, state.links, state.hosts, state.delivered) == \
        (wanted.connected, wanted.links, wanted.hosts, wanted.delivered)
    # As the switches see it: each one's controller connected and its master,
    # each bridge in fail-mode secure (it never becomes a learning switch).
    rows = scale.ovs.select("Controller", ["is_connected", "role"])
    assert len(rows) == SWITCHES
    assert all(r["is_connected"] and r["role"] == "master" for r in rows)
    bridges = scale.ovs.select("Bridge", ["name", "fail_mode"])
    assert sorted(b["name"] for b in bridges) == sorted(s.name for s in scale.tree.switches)
    assert {b["fail_mode"] for b in bridges} == {"secure"}


def test_every_subscriber_is_located_at_its_own_line_in_both_families(scale):
    seen = {h.ip: h for h in scale.topology().hosts}
    for host in scale.tree.subscribers:
        got = seen.get(host.ip)
        assert got is not None, f"{host} not located"
        assert (got.datapath_id, got.port, got.mac) == (host.dpid, host.port, host.mac)
        assert host.ipv6 in got.ipv6


def test_the_dhcp_servers_acknowledgements_become_bindings(scale):
    report = scale.leases(scale.tree.subscribers)
    print(f"\nDHCP: {report}")
    assert {(h.mac, h.ip) for h in scale.tree.subscribers} <= scale.bindings()


def test_an_enforcement_lands_bites_and_holds_across_a_kill_9(scale):
    deepest = scale.tree.deepest()
    neighbour = next(h for h in scale.tree.subscribers
                     if h.switch == deepest.switch and h != deepest)
    assert scale.reaches_inet(deepest, 25) and scale.reaches_inet(deepest, 80)

    record = scale.client.apply(ip=deepest.ip, violation="spam", case_id="SCALE-1")
    assert record.state == pb.STATE_ACTIVE, record.state_reason
    assert not scale.reaches_inet(deepest, 25), "TCP 25 left the gateway under the block"
    assert scale.reaches_inet(deepest, 80), "the block stopped more than TCP 25"
    assert scale.reaches_inet(neighbour, 25), "the block reached a neighbour"

    before = scale.flow_counts()
    killed = time.monotonic()
    scale.kill_and_restart()
    reconciled = scale.wait_in_sync(killed, timeout=RECONCILE_WITHIN + 60)
    print(f"\nkill -9, restart, in sync again {reconciled:.1f} s after the kill")
    assert reconciled <= RECONCILE_WITHIN
    after = scale.flow_counts()
    changed = {f"{d:016x}": (before[d], after[d]) for d in before if before[d] != after[d]}
    assert changed == {}, "the restart changed what switches hold"
    assert scale.client.get(record.id).state == pb.STATE_ACTIVE
    assert not scale.reaches_inet(deepest, 25), "the block did not survive the restart"
    assert scale.reaches_inet(deepest, 80)

    scale.client.lift(record.id, "case closed")
    assert scale.reaches_inet(deepest, 25), "TCP 25 still blocked after the lift"


def test_flow_entries_per_switch_are_reported_by_tier(scale):
    counts = scale.flow_counts()
    by_tier = tree.tier_counts(scale.tree, counts)
    print("\nflow entries per switch (min / median / max): " + "; ".join(
        f"{tier} ({len(values)}): {tree.spread(values)}" for tier, values in by_tier.items()))
    assert {tier: len(values) for tier, values in by_tier.items()} == \
        {t: len(scale.tree.tier(t)) for t in tree.TIERS}
    # What holds whatever the forwarding design: every switch holds its
    # pipeline, and an access switch at least a flow per subscriber line.
    assert all(count > 0 for count in counts.values())
    for switch in scale.tree.tier(tree.ACCESS):
        lines = sum(1 for h in scale.tree.subscribers if h.switch == switch.name)
        assert counts[switch.dpid] >= lines
