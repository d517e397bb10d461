"""The data plane through a simulated switch: switches forward and flood on
their own, copy to the controller only what it must learn from, and keep
closed ports closed at egress."""
import pytest

from controller.openflow.dataplane import (
    Budgets,
    Ports,
    egress_closures,
    host_rules,
    hosts_from_rules,
    learn_meter,
    legacy_rules,
    meter_port,
    storm_meter,
    switch_rules,
)
from enforcement.domain import pipeline
from enforcement.domain.model import HostView
from tests.flowsim import simulate

BROADCAST = "ff:ff:ff:ff:ff:ff"
H1 = HostView("00:00:00:00:00:01", "10.0.0.1", 1, 1)
H2 = HostView("00:00:00:00:00:02", "10.0.0.2", 1, 2)
H3 = HostView("00:00:00:00:00:03", "10.0.0.3", 2, 1)  # behind the uplink, port 4
UPLINK, OFF_TREE, SETTLING = 4, 5, 6
PORTS = Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK}))


def switch(ports=PORTS, hosts=(H1, H2, H3), extra=()):
    rules, meters = switch_rules(1, ports, Budgets())
    for host in hosts:
        out = host.port if host.dpid == 1 else UPLINK
        rules += host_rules(1, host, out, host.dpid == 1 and host.port in ports.access,
                            port_open=host.port not in ports.closed_learning)
    return [*rules, *extra], meters


def frame(in_port, src, dst, **fields):
    packet = {"in_port": in_port, "eth_src": src, "eth_dst": dst, "eth_type": 0x0800}
    return {**packet, **fields}


def arp(in_port, src, spa, tpa, dst=BROADCAST):
    return {"in_port": in_port, "eth_src": src, "eth_dst": dst, "eth_type": 0x0806,
            "arp_spa": spa, "arp_tpa": tpa}


def test_known_hosts_are_forwarded_without_the_controller():
    rules, _ = switch()
    verdict = simulate(rules, 1, frame(1, H1.mac, H2.mac, ipv4_src=H1.ip))
    assert (verdict.ports, verdict.copied) == ((2,), False)
    toward_remote = simulate(rules, 1, frame(1, H1.mac, H3.mac, ipv4_src=H1.ip))
    assert (toward_remote.ports, toward_remote.copied) == ((UPLINK,), False)
    arriving = simulate(rules, 1, frame(UPLINK, H3.mac, H1.mac, ipv4_src=H3.ip))
    assert (arriving.ports, arriving.copied) == ((1,), False)


def test_broadcast_is_flooded_by_the_switch_along_the_tree_and_storm_metered():
    rules, _ = switch(Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK})))
    verdict = simulate(rules, 1, arp(1, H1.mac, H1.ip, H2.ip))
    assert verdict.ports == (2, 3, UPLINK) and not verdict.copied
    assert verdict.meters == (storm_meter(1),)
    from_tree = simulate(rules, 1, arp(UPLINK, H3.mac, H3.ip, H1.ip))
    assert from_tree.ports == (1, 2, 3) and from_tree.meters == ()


def test_unknown_unicast_floods_like_broadcast_and_never_reaches_the_controller():
    rules, _ = switch()
    verdict = simulate(rules, 1, frame(1, H1.mac, "02:aa:bb:cc:dd:ee", ipv4_src=H1.ip))
    assert verdict.ports == (2, 3, UPLINK) and not verdict.copied
    assert storm_meter(1) in verdict.meters


def test_off_tree_links_and_settling_ports_neither_flood_nor_receive_floods():
    ports = Ports(access=frozenset({1, 2}), tree=frozenset({UPLINK}))
    rules, _ = switch(ports, hosts=(H1, H2))
    for port in (OFF_TREE, SETTLING):
        assert simulate(rules, 1, arp(port, "00:00:00:00:00:99", "10.0.0.9",
                                      H1.ip)).outcome == "dropped"
    assert simulate(rules, 1, arp(1, H1.mac, H1.ip, "10.0.0.9")).ports == (2, UPLINK)
    # known unicast still crosses them: a computed path cannot loop
    assert simulate(rules, 1, frame(OFF_TREE, H3.mac, H1.mac,
                                    ipv4_src=H3.ip)).ports == (1,)


def test_only_what_must_be_learned_is_copied_through_the_ports_learning_meter():
    rules, _ = switch()
    # A claim (an ARP naming its sender) is held: copied, not flooded, until
    # the controller accepts it (and sends it on) or refuses it.
    stranger = simulate(rules, 1, arp(3, "00:00:00:00:00:77", "10.0.0.7", H1.ip))
    assert stranger.copied and learn_meter(3) in stranger.meters
    assert stranger.ports == ()
    new_address = simulate(rules, 1, arp(1, H1.mac, "10.0.0.99", H2.ip))
    assert new_address.copied and learn_meter(1) in new_address.meters
    assert new_address.ports == ()
    # what claims nothing goes on: a stranger's other traffic (copied, to
    # learn its MAC), ARP probes from anyone
    other = simulate(rules, 1, frame(3, "00:00:00:00:00:77", BROADCAST, ipv4_src="0.0.0.0"))
    assert other.copied and other.ports == (1, 2, UPLINK)
    for in_port, source in ((3, "00:00:00:00:00:77"), (1, H1.mac)):
        probe = simulate(rules, 1, arp(in_port, source, "0.0.0.0", H2.ip))
        assert probe.ports == tuple(p for p in (1, 2, 3, UPLINK) if p != in_port), source
    known = simulate(rules, 1, arp(1, H1.mac, H1.ip, H2.ip))
    assert not known.copied
    # nothing is learned on an uplink
    assert not simulate(rules, 1, arp(UPLINK, "00:00:00:00:00:66", "10.0.0.6",
                                      H1.ip)).copied


def lldp(in_port, src):
    return {"in_port": in_port, "eth_src": src, "eth_dst": "01:80:c2:00:00:0e",
            "eth_type": 0x88CC}


def test_lldp_reaches_the_controller_from_every_port_and_is_never_forwarded():
    ports = Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK}),
                  closed_learning=frozenset({3}))
    rules, _ = switch(ports)
    # from an access port, a known host or not, banned from learning or
    # not: a copy through the port's learning meter (its copy budget), and
    # nothing leaves the switch
    for port, src in ((1, H1.mac), (2, "02:00:00:00:00:77"), (3, "02:00:00:00:00:78")):
        verdict = simulate(rules, 1, lldp(port, src))
        assert (verdict.outcome, verdict.ports, verdict.meters) == (
            "controller", (), (learn_meter(port),)), port
    # from a link, off-tree link or settling port: to the controller,
    # whose meter caps the switch
    for port in (UPLINK, OFF_TREE, SETTLING):
        verdict = simulate(rules, 1, lldp(port, "02:00:00:00:00:99"))
        assert (verdict.outcome, verdict.ports, verdict.meters) == ("controller", (), ()), port
    # after enforcement (table 0) and its meters (table 1)
    assert all(r.table_id == pipeline.TABLE_LEARN for r in rules
               if dict(r.match).get("eth_type") == 0x88CC)


def test_os_kens_old_lldp_rule_is_named_for_removal():
    (legacy,) = legacy_rules(1)
    assert (legacy.table_id, legacy.priority, legacy.cookie) == (0, 0xFFFF, 0)
    assert dict(legacy.match)["eth_type"] == 0x88CC


def test_a_port_closed_for_learning_drops_unknown_sources_and_keeps_known_hosts():
    ports = Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK}),
                  closed_learning=frozenset({1}))
    rules, _ = switch(ports)
    assert simulate(rules, 1, arp(1, "00:00:00:00:00:77", "10.0.0.7",
                                  H2.ip)).outcome == "dropped"
    assert simulate(rules, 1, frame(1, H1.mac, H2.mac, ipv4_src=H1.ip)).ports == (2,)
    assert simulate(rules, 1, arp(2, "00:00:00:00:00:78", "10.0.0.8", H1.ip)).copied


def test_a_cut_off_port_receives_no_flood_and_a_quarantined_one_only_arp_for_itself():
    ports = Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK}),
                  egress={1: (), 2: (H2.ip,)})
    rules, _ = switch(ports)
    broadcast = simulate(rules, 1, arp(UPLINK, H3.mac, H3.ip, "10.0.0.3"))
    assert broadcast.ports == (3,)
    for_h2 = simulate(rules, 1, arp(UPLINK, H3.mac, H3.ip, H2.ip))
    assert for_h2.ports == (2, 3)
    for_h1 = simulate(rules, 1, arp(UPLINK, H3.mac, H3.ip, H1.ip))
    assert 1 not in for_h1.ports


def test_a_quarantined_port_is_still_solicited_for_its_own_ipv6_addresses():
    ports = Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK}),
                  egress={2: (H2.ip, "2001:db8::2")})
    rules, _ = switch(ports)
    assert 2 in simulate(rules, 1, nd(UPLINK, H3.mac, 135, "2001:db8::3",
                                      "2001:db8::2")).ports
    assert 2 not in simulate(rules, 1, nd(UPLINK, H3.mac, 135, "2001:db8::3",
                                          "2001:db8::5")).ports
    assert 2 not in simulate(rules, 1, nd(UPLINK, H3.mac, 136, "2001:db8::3",
                                          "2001:db8::2")).ports


def test_egress_closures_are_read_from_cutoff_and_quarantine_rules():
    from controller.openflow.dataplane import is_closing_rule
    from enforcement.domain.flows import FlowRule, GotoTable
    cookie = pipeline.enforcement_cookie(1)
    cutoff = FlowRule(1, 0, pipeline.PRIORITY_CUTOFF, cookie, (("in_port", 1),))
    deny = FlowRule(1, 0, pipeline.PRIORITY_QUARANTINE_DENY, cookie, (("in_port", 2),))
    arp_ok = FlowRule(1, 0, pipeline.PRIORITY_QUARANTINE_ALLOW, cookie,
                      (("in_port", 2), ("eth_type", 0x0806), ("arp_spa", H2.ip)),
                      (GotoTable(1),))
    block = FlowRule(1, 0, pipeline.PRIORITY_BLOCK, cookie, (("in_port", 3),))
    assert egress_closures([cutoff, deny, arp_ok, block]) == {1: (), 2: (H2.ip,)}
    assert egress_closures([deny]) == {2: ()}  # no ARP allowance: nothing at all
    own_na = FlowRule(1, 0, pipeline.PRIORITY_QUARANTINE_ALLOW, cookie,
                      (("in_port", 2), ("eth_type", 0x86DD), ("ip_proto", 58),
                       ("icmpv6_type", 136), ("ipv6_nd_target", "2001:db8::2")),
                      (GotoTable(1),))
    assert egress_closures([deny, arp_ok, own_na]) == {2: ("10.0.0.2", "2001:db8::2")}
    # cut off and quarantined at once: the cutoff wins
    both = FlowRule(1, 0, pipeline.PRIORITY_CUTOFF, cookie, (("in_port", 2),))
    assert egress_closures([deny, arp_ok, both]) == {2: ()}
    assert all(map(is_closing_rule, (cutoff, deny, arp_ok))) and not is_closing_rule(block)


def test_a_switchs_host_table_is_read_back_from_its_flows():
    rules, _ = switch()
    unknown_ip = HostView("00:00:00:00:00:05", None, 1, 3)
    rules += host_rules(1, unknown_ip, 3, True)
    assert hosts_from_rules(1, rules) == [H1, H2, unknown_ip]


def test_meters_per_access_port_and_the_switch_wide_cap():
    budgets = Budgets(learn_pps=7, storm_pps=9, controller_pps=11)
    _, meters = switch_rules(1, PORTS, budgets)
    by_id = {m.meter_id: (m.unit, m.rate) for m in meters}
    assert by_id[pipeline.METER_CONTROLLER] == ("pktps", 11)
    assert by_id[learn_meter(2)] == ("pktps", 7) and by_id[storm_meter(2)] == ("pktps", 9)
    assert learn_meter(UPLINK) not in by_id
    assert meter_port(learn_meter(3)) == ("learn", 3)
    assert meter_port(storm_meter(3)) == ("storm", 3)
    assert meter_port(pipeline.METER_CONTROLLER) is None and meter_port(7) is None
    assert all(not pipeline.is_enforcement_meter(i) for i in by_id)


def test_budgets_refuse_nonsense():
    with pytest.raises(ValueError, match="learn_pps"):
        Budgets(learn_pps=0)


# ---- IPv6: addresses learned from neighbour discovery --------------------------

DUAL = HostView("00:00:00:00:00:06", "10.0.0.6", 1, 3,
                ipv6=("2001:db8::6", "fe80::200:ff:fe00:6"))


def nd(in_port, src, kind, ipv6_src, target, dst="33:33:ff:00:00:09"):
    return {"in_port": in_port, "eth_src": src, "eth_dst": dst, "eth_type": 0x86DD,
            "ip_proto": 58, "icmpv6_type": kind, "ipv6_src": ipv6_src,
            "ipv6_nd_target": target}


def test_neighbour_discovery_of_a_known_address_is_not_copied_a_new_one_is():
    rules, _ = switch(hosts=(H1, H2, H3, DUAL))
    for kind, src, target in ((135, "2001:db8::6", "2001:db8::9"),
                              (136, "2001:db8::6", "2001:db8::6"),
                              (135, "fe80::200:ff:fe00:6", "fe80::1")):
        verdict = simulate(rules, 1, nd(3, DUAL.mac, kind, src, target))
        assert verdict.forwarded and not verdict.copied, (kind, src)
    for kind, src, target in ((135, "2001:db8::77", "2001:db8::9"),   # a new source
                              (136, "2001:db8::6", "2001:db8::2")):   # claims another
        verdict = simulate(rules, 1, nd(3, DUAL.mac, kind, src, target))
        assert verdict.copied and not verdict.forwarded, (kind, src, target)  # held
        assert verdict.meters == (learn_meter(3),)
    # duplicate address detection claims nothing yet: on, and copied
    verdict = simulate(rules, 1, nd(3, DUAL.mac, 135, "::", "2001:db8::6"))
    assert verdict.forwarded and verdict.copied
    assert verdict.meters == (learn_meter(3), storm_meter(3))
    # Other IPv6 from a known host is never copied.
    plain = {**frame(3, DUAL.mac, H1.mac), "eth_type": 0x86DD, "ipv6_src": "2001:db8::66"}
    assert not simulate(rules, 1, plain).copied


def test_a_hosts_ipv6_addresses_are_read_back_from_its_flows():
    rules, _ = switch(hosts=(H1, H2, H3, DUAL))
    found = {h.mac: h for h in hosts_from_rules(1, rules)}
    assert found[DUAL.mac].ipv6 == tuple(sorted(DUAL.ipv6))
    assert found[H1.mac] == H1
