"""Subscriber isolation (split horizon) through a network of simulated
switches (tests/netsim.py): below the gateway, subscribers reach the
provider's hosts and nothing else, their broadcasts reach the provider's
side only, and no switch below the gateway looks at a destination a
subscriber wrote."""
import pytest

from controller.openflow import dataplane, macprefix
from enforcement.domain import pipeline
from tests.netsim import build, tree_view, with_provider
from tests.unit.test_topology import ring

BROADCAST = "ff:ff:ff:ff:ff:ff"


def frame(src, dst_mac):
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ipv4_src": src.ip,
            "ipv4_dst": "10.255.0.1"}


def network(shape="tree"):
    view = with_provider(tree_view(3, 2, 3) if shape == "tree" else ring(5), 3)
    net = build(view, roots={1}, isolated=True)
    # Hosts on the gateway's own ports are the provider's side.
    provider = [h for h in view.hosts if h.dpid == 1]
    subscribers = [h for h in view.hosts if h.dpid != 1]
    return net, provider, subscribers


@pytest.mark.parametrize("shape", ["tree", "ring"])
def test_subscribers_reach_the_provider_and_the_provider_reaches_them(shape):
    net, provider, subscribers = network(shape)
    for sub in subscribers:
        for side in provider:
            assert net.hosts_at(net.send(sub, frame(sub, side.mac))) == {side.mac: 1}
            assert net.hosts_at(net.send(side, frame(side, sub.mac))) == {sub.mac: 1}


@pytest.mark.parametrize("shape", ["tree", "ring"])
def test_a_subscriber_reaches_no_other_subscriber_on_its_switch_or_elsewhere(shape):
    net, _, subscribers = network(shape)
    for sub in subscribers:
        for other in subscribers:
            if other is not sub:
                assert net.hosts_at(net.send(sub, frame(sub, other.mac))) == {}
        assert net.hosts_at(net.send(sub, frame(sub, "12:34:56:78:9a:bc"))) == {}


@pytest.mark.parametrize("shape", ["tree", "ring"])
def test_a_subscribers_broadcast_reaches_the_provider_side_only(shape):
    net, provider, subscribers = network(shape)
    for sub in subscribers:
        arp = {**frame(sub, BROADCAST), "eth_type": 0x0806, "arp_spa": sub.ip,
               "arp_tpa": subscribers[0].ip}
        assert net.hosts_at(net.send(sub, arp)) == {h.mac: 1 for h in provider}


def test_the_providers_broadcast_reaches_every_subscriber_once():
    net, provider, subscribers = network()
    reached = net.hosts_at(net.send(provider[0], frame(provider[0], BROADCAST)))
    assert reached == {h.mac: 1 for h in [*provider[1:], *subscribers]}


def test_below_the_gateway_no_rule_reads_a_destination_from_a_subscriber():
    """What a subscriber varies (its destination MAC) decides nothing below
    the gateway: every forwarding rule there that reads eth_dst reads it
    only on what comes down from above, or reads its group bit alone (to
    meter broadcast)."""
    net, _, _ = network()
    for dpid, rules in net.rules.items():
        up = net.tree.up.get(dpid)
        if up is None:
            continue
        for rule in rules:
            match = dict(rule.match)
            if rule.table_id == pipeline.TABLE_FORWARD and "eth_dst" in match:
                assert match.get("in_port") == up or match["eth_dst"] == dataplane.GROUP, rule


def test_the_gateway_drops_unknown_destinations_by_prefix():
    """At the gateway, unicast from below to no provider MAC is dropped by
    a rule whose mask is the prefix where it parts from them all: a random
    destination is decided on its first bits."""
    net, provider, subscribers = network()
    from tests.flowsim import simulate
    down = next(p for p in net.tree.down[1].values())
    verdict = simulate(net.rules[1], 1, {**frame(subscribers[0], "80:12:34:56:78:9a"),
                                         "in_port": down})
    assert verdict.outcome == "dropped"
    assert dict(verdict.rule.match)["eth_dst"] == ("80:00:00:00:00:00", "80:00:00:00:00:00")
    cover = macprefix.complement(h.mac for h in provider)
    assert len(cover) <= 48 * len(provider)


def test_the_cover_leaves_out_exactly_the_listed_addresses():
    import random
    listed = ["02:00:00:00:00:00", "02:00:00:00:00:01", "00:16:3e:11:22:33"]
    cover = macprefix.complement(listed)
    rng = random.Random(7)
    probes = [*listed, *(macprefix.text(rng.getrandbits(48)) for _ in range(2000)),
              "02:00:00:00:00:02", "00:16:3e:11:22:32"]

    def covered(mac):
        number = int(mac.replace(":", ""), 16)
        return sum(1 for value, mask, _ in cover
                   if number & int(mask.replace(":", ""), 16)
                   == int(value.replace(":", ""), 16))

    for mac in probes:
        assert covered(mac) == (0 if mac in listed else 1), mac
    assert macprefix.complement([]) == [("00:00:00:00:00:00", "00:00:00:00:00:00", 0)]


def test_an_access_switch_cut_off_from_the_gateway_forwards_nothing_between_subscribers():
    view = tree_view(2, 2, 2)  # no provider at all, and the gateway named elsewhere
    net = build(view, roots={99}, isolated=True)
    a, b = [h for h in view.hosts if h.dpid == view.hosts[0].dpid][:2]
    assert net.hosts_at(net.send(a, frame(a, b.mac))) == {}


def test_isolation_costs_an_access_switch_nothing_more():
    """A port's broadcast goes up through its storm meter in table 3
    instead of flooding through it in table 4; the two rules toward the
    root stay two."""
    plain = build(tree_view(3, 2, 3))
    isolated = build(with_provider(tree_view(3, 2, 3), 3), roots={1}, isolated=True)
    leaf = max(plain.rules)
    assert isolated.flows(leaf) == plain.flows(leaf)
