"""The planner over IPv6 and for dual-stack and IPv6-only subscribers,
through test_planner's simulated switch (tests/planning.py): source validation and RA guard,
quarantine with a walled garden reachable over IPv6, destinations of either
family, and every rule a switch would accept."""
import dataclasses
import ipaddress

import pytest

from controller.openflow import compiler
from enforcement.domain import pipeline
from enforcement.domain.flows import VLAN_PRESENT
from enforcement.domain.model import ActionKind, Violation
from enforcement.domain.planner import Context, Target, plan
from enforcement.domain.policy import ActionSpec
from enforcement.domain.routing import route
from tests.flowsim import simulate
from tests.planning import H1, MACS, POLICY, UPLINK, VIEW, arp_packet, fate, ip_packet, step, switch

# h1 (port 1): its link-local and global addresses in the access /64 it
# shares with h2, and a delegated /56 of its own.
H1_V6 = ("fe80::1", "2001:db8::1", "2001:db8:100::/56")
ADDRESSES = {"10.0.0.1": "2001:db8::1", "10.0.0.2": "2001:db8::2", "10.0.0.3": "2001:db8::3",
             "10.0.0.250": "2001:db8::35", "10.0.0.252": "2001:db8::fc"}
DNS6 = "2001:db8::35"  # the DNS server's IPv6 address, on s2 port 1 with 10.0.0.250


def target(ip: str | None = "10.0.0.1", ipv6=H1_V6):
    return Target(H1, ipaddress.IPv4Address(ip) if ip else None,
                  ipaddress.IPv4Network(ip) if ip else None,
                  tuple(ipaddress.IPv6Network(a) for a in ipv6))


ASSETS6 = dataclasses.replace(POLICY.assets, dns=(
    *POLICY.assets.dns, ipaddress.IPv6Network(DNS6)))
VIEW6 = dataclasses.replace(VIEW, hosts=(
    dataclasses.replace(VIEW.hosts[0], ipv6=("fe80::fa", DNS6)), *VIEW.hosts[1:]))
CONTEXT6 = Context(ASSETS6, POLICY.quarantine_vlan,
                   {a: route(VIEW6, 1, a) for a in ("10.0.0.250", "10.0.0.251", DNS6)})


def planned(spec, t=None, serial=7, context=CONTEXT6):
    return plan(spec, t or target(), context, pipeline.enforcement_cookie(serial), serial)


def v6(host, src=None, dst="10.0.0.3", proto="tcp", dport=80, sport=40000, kind=None,
       **fields):
    """An IPv6 packet from the host of IPv4 address `host` (its port and MAC)
    with source src (its global address by default) toward the host of dst."""
    mac, port = MACS.get(host, ("00:00:00:00:00:99", UPLINK))
    packet = {"in_port": port, "eth_src": mac, "eth_dst": MACS[dst][0], "eth_type": 0x86DD,
              "ipv6_src": src or ADDRESSES[host], "ipv6_dst": ADDRESSES[dst],
              "ip_proto": {"tcp": 6, "udp": 17, "icmpv6": 58}[proto]}
    if proto == "icmpv6":
        packet["icmpv6_type"] = kind
    else:
        packet.update({f"{proto}_dst": dport, f"{proto}_src": sport})
    return {**packet, **fields}


def advert(src, target_address, host="10.0.0.1"):
    return v6(host, src, "10.0.0.2", "icmpv6", kind=136, ipv6_nd_target=target_address)


# ---- anti-spoofing (RFC 7039 source validation, RFC 6105 RA guard) --------------

def test_anti_spoofing_lets_only_its_own_ipv6_sources_out():
    rules = switch(planned(step(Violation.SPOOFING)))
    for genuine in ("2001:db8::1", "fe80::1", "2001:db8:100::1", "2001:db8:100:ff::9"):
        assert fate(rules, v6("10.0.0.1", genuine)) == "passes", genuine
    # A neighbour's address, a random one in the shared /64, one outside.
    for forged in ("2001:db8::2", "2001:db8::beef", "2001:db9::1", "fe80::2", "2001:db8:101::1"):
        assert fate(rules, v6("10.0.0.1", forged)) == "dropped", forged
    # Its own source from another MAC on its port is not its own.
    assert fate(rules, v6("10.0.0.1", eth_src="00:00:00:00:00:09")) == "dropped"
    # Its neighbours are untouched, whatever they send.
    assert fate(rules, v6("10.0.0.2")) == "passes"
    assert fate(rules, v6("10.0.0.2", "fe80::2", "10.0.0.3", "icmpv6", kind=134)) == "passes"


def test_neighbour_advertisements_only_for_its_own_addresses():
    rules = switch(planned(step(Violation.SPOOFING)))
    for source, own in (("2001:db8::1", "2001:db8::1"), ("fe80::1", "2001:db8::1"),
                        ("fe80::1", "fe80::1"), ("2001:db8::1", "2001:db8:100::7")):
        assert fate(rules, advert(source, own)) == "passes", (source, own)
    # Claiming a neighbour's address (or any other) takes its traffic: dropped,
    # whatever the source.
    for source in ("2001:db8::1", "fe80::1", "2001:db8::2", "::"):
        for other in ("2001:db8::2", "fe80::2", "2001:db8::beef"):
            assert fate(rules, advert(source, other)) == "dropped", (source, other)
    assert fate(rules, advert("2001:db8::2", "2001:db8::1")) == "dropped"


def test_router_advertisements_redirects_and_dhcpv6_servers_are_guarded():
    rules = switch(planned(step(Violation.SPOOFING)))
    for kind in (134, 137):  # router advertisement, redirect
        assert fate(rules, v6("10.0.0.1", "fe80::1", proto="icmpv6", kind=kind)) == "dropped"
    server = v6("10.0.0.1", "fe80::1", proto="udp", dport=546, sport=547)
    assert fate(rules, server) == "dropped"
    assert fate(rules, {**server, "udp_dst": 547}) == "dropped"  # relay reply
    # As a client it asks, and solicits routers and neighbours from its own
    # addresses.
    assert fate(rules, v6("10.0.0.1", "fe80::1", proto="udp", dport=547, sport=546)) == "passes"
    for kind in (133, 135):
        assert fate(rules, v6("10.0.0.1", "fe80::1", proto="icmpv6", kind=kind)) == "passes"
        assert fate(rules, v6("10.0.0.1", "fe80::2", proto="icmpv6", kind=kind)) == "dropped"


def test_duplicate_address_detection_from_the_unspecified_address():
    rules = switch(planned(step(Violation.SPOOFING)))
    for kind in (135, 143):  # the solicitation, the MLDv2 report
        assert fate(rules, v6("10.0.0.1", "::", proto="icmpv6", kind=kind)) == "passes"
    assert fate(rules, v6("10.0.0.1", "::", proto="icmpv6", kind=134)) == "dropped"
    assert fate(rules, v6("10.0.0.1", "::", proto="udp", dport=547, sport=546)) == "dropped"
    assert fate(rules, v6("10.0.0.1", "::")) == "dropped"


def test_ipv4_anti_spoofing_is_unchanged_beside_it():
    rules = switch(planned(step(Violation.SPOOFING)))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "passes"
    assert fate(rules, ip_packet("10.0.0.9", "10.0.0.3", "tcp", 80, in_port=1)) == "dropped"
    dhcp = {**ip_packet("10.0.0.1", "10.0.0.3", "udp", 67, sport=68), "ipv4_src": "0.0.0.0"}
    assert fate(rules, dhcp) == "passes"
    assert fate(rules, arp_packet("10.0.0.1", "10.0.0.3")) == "passes"


def test_anti_spoofing_priorities_keep_their_order_below_blocks():
    order = [pipeline.PRIORITY_BLOCK, pipeline.PRIORITY_ANTISPOOF_ND_ALLOW,
             pipeline.PRIORITY_ANTISPOOF_GUARD, pipeline.PRIORITY_ANTISPOOF_ALLOW,
             pipeline.PRIORITY_ANTISPOOF_DENY]
    assert order == sorted(order, reverse=True) and len(set(order)) == len(order)


def test_a_block_still_holds_over_a_genuine_ipv6_source():
    rules = switch(planned(step(Violation.SPAM)), planned(step(Violation.SPOOFING), serial=8))
    assert fate(rules, v6("10.0.0.1", dport=25)) == "dropped"
    assert fate(rules, v6("10.0.0.1", dport=587)) == "passes"
    assert fate(rules, v6("10.0.0.1", "2001:db8::2", dport=587)) == "dropped"


def test_quarantine_does_not_reopen_what_anti_spoofing_closes():
    rules = switch(planned(step(Violation.SPOOFING)),
                   planned(step(Violation.SPOOFING, 2), serial=8))
    assert fate(rules, advert("fe80::1", "2001:db8::2")) == "dropped"
    assert fate(rules, v6("10.0.0.1", "2001:db8::2", "10.0.0.250", "udp", 53)) == "dropped"
    assert fate(rules, v6("10.0.0.1", "fe80::2", proto="icmpv6", kind=135)) == "dropped"
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.250", "udp", 53)) == "passes"


# ---- quarantine with a walled garden over IPv6 ----------------------------------

def test_dns_over_ipv6_reaches_the_garden_along_the_path():
    result = planned(step(Violation.MALWARE))
    rules = switch(result)
    vlan = POLICY.quarantine_vlan
    for proto in ("udp", "tcp"):
        request = v6("10.0.0.1", None, "10.0.0.250", proto, 53)
        at_access = simulate(rules, 1, request)
        assert (at_access.outcome, at_access.port, at_access.vlan) == ("output", UPLINK, vlan)
        at_garden = simulate([r for r in result.rules if r.dpid == 2], 2,
                             {**request, "in_port": 3, "vlan_vid": VLAN_PRESENT | vlan})
        assert (at_garden.outcome, at_garden.port, at_garden.vlan) == ("output", 1, None)
    # Tagged IPv6 for anywhere else dies at the garden's switch.
    stray = {**v6("10.0.0.1", None, "10.0.0.3"), "in_port": 3, "vlan_vid": VLAN_PRESENT | vlan}
    assert simulate([r for r in result.rules if r.dpid == 2], 2, stray).outcome == "dropped"


def test_quarantine_over_ipv6_lets_nothing_else_through():
    rules = switch(planned(step(Violation.MALWARE)))
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.250", "tcp", 22)) == "dropped"
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.3", "udp", 53)) == "dropped"
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.2", "tcp", 80)) == "dropped"
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.3", "icmpv6", kind=128)) == "dropped"
    # A forged source cannot use the allow-list (no reflection off the DNS).
    assert fate(rules, v6("10.0.0.1", "2001:db8::2", "10.0.0.250", "udp", 53)) == "dropped"
    # Toward it: only the server's answers and neighbour discovery.
    answer = v6("10.0.0.250", DNS6, "10.0.0.1", "udp", 40000, sport=53)
    assert fate(rules, answer) == "passes"
    assert fate(rules, {**answer, "udp_src": 54}) == "dropped"
    assert fate(rules, {**answer, "ipv6_src": "2001:db8::3"}) == "dropped"
    assert fate(rules, v6("10.0.0.3", None, "10.0.0.1", "tcp", 80)) == "dropped"
    assert fate(rules, v6("10.0.0.2", None, "10.0.0.1", "icmpv6", kind=128)) == "dropped"
    for kind in (134, 135, 136):
        assert fate(rules, v6("10.0.0.3", "fe80::3", "10.0.0.1", "icmpv6", kind=kind,
                              ipv6_nd_target="fe80::3")) == "passes"
    # IPv4 DNS keeps working beside it; the neighbours are untouched.
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "udp", 53)) == "passes"
    assert fate(rules, v6("10.0.0.2", None, "10.0.0.3", "tcp", 80)) == "passes"


def test_a_quarantined_subscriber_resolves_its_next_hop_for_its_own_addresses_only():
    rules = switch(planned(step(Violation.MALWARE)))
    for source in ("fe80::1", "2001:db8::1", "::"):
        for kind in (133, 135):
            assert fate(rules, v6("10.0.0.1", source, proto="icmpv6", kind=kind)) == "passes"
    assert fate(rules, v6("10.0.0.1", "fe80::2", proto="icmpv6", kind=135)) == "dropped"
    assert fate(rules, advert("fe80::1", "2001:db8::1")) == "passes"
    assert fate(rules, advert("fe80::1", "2001:db8::2")) == "dropped"
    assert fate(rules, v6("10.0.0.1", "fe80::1", proto="icmpv6", kind=134)) == "dropped"


def test_without_known_ipv6_sources_quarantine_goes_by_port_and_mac():
    rules = switch(planned(step(Violation.MALWARE), t=target(ipv6=())))
    assert fate(rules, v6("10.0.0.1", "2001:db8::77", "10.0.0.250", "udp", 53)) == "passes"
    assert fate(rules, v6("10.0.0.1", "2001:db8::77", proto="icmpv6", kind=135)) == "passes"
    assert fate(rules, v6("10.0.0.1", "2001:db8::77", "10.0.0.250", "tcp", 22)) == "dropped"
    assert fate(rules, v6("10.0.0.1", eth_src="00:00:00:00:00:09", dst="10.0.0.250",
                          proto="udp", dport=53)) == "dropped"


# ---- an IPv6-only subscriber ----------------------------------------------------

V6_ONLY = target(ip=None)


def test_an_ipv6_only_subscribers_block_covers_both_families_and_nothing_else():
    result = planned(step(Violation.SPAM), t=V6_ONLY)
    for rule in result.rules:
        match = dict(rule.match)
        assert match["in_port"] == 1 and match["eth_src"] == H1.mac, rule
        assert not {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"} & set(match), rule
    rules = switch(result)
    # Over IPv4 it is its port and MAC, whatever source it writes.
    for source in ("10.0.0.1", "10.0.0.77"):
        assert fate(rules, {**ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25),
                            "ipv4_src": source}) == "dropped"
    assert fate(rules, v6("10.0.0.1", dport=25)) == "dropped"
    for port in (587, 465, 80):
        assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", port)) == "passes"
        assert fate(rules, v6("10.0.0.1", dport=port)) == "passes"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 25)) == "passes"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.3", "tcp", 25)) == "passes"
    assert fate(rules, v6("10.0.0.2", dport=25)) == "passes"


def test_an_ipv6_only_subscriber_both_ways_and_metered():
    rules = switch(planned(step(Violation.OPEN_RELAY), t=V6_ONLY),
                   planned(ActionSpec(ActionKind.RATE_LIMIT, "tcp", (443,), rate=500,
                                      unit="kbps", burst=250), t=V6_ONLY, serial=8))
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 25)) == "dropped"
    assert fate(rules, v6("10.0.0.3", None, "10.0.0.1", dport=25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.2", "tcp", 25)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 443)) == "metered"
    assert fate(rules, v6("10.0.0.1", dport=443)) == "metered"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.3", "tcp", 443)) == "passes"


def test_an_ipv6_only_subscriber_cut_off_and_validated():
    cutoff = planned(step(Violation.ILLEGAL_USE), t=V6_ONLY)
    assert {tuple(dict(r.match)) for r in cutoff.rules} == {("in_port",), ("eth_dst",)}
    rules = switch(planned(step(Violation.SPOOFING), t=V6_ONLY))
    assert fate(rules, v6("10.0.0.1")) == "passes"
    assert fate(rules, v6("10.0.0.1", "2001:db8::2")) == "dropped"
    # Over IPv4 it has no address to send from: only a DHCP client's ask.
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "dropped"
    assert fate(rules, arp_packet("10.0.0.1", "10.0.0.3")) == "dropped"
    dhcp = {**ip_packet("10.0.0.1", "10.0.0.3", "udp", 67, sport=68), "ipv4_src": "0.0.0.0"}
    assert fate(rules, dhcp) == "passes"


def test_an_ipv6_only_subscriber_in_quarantine():
    rules = switch(planned(step(Violation.MALWARE), t=V6_ONLY))
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.250", "udp", 53)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "udp", 53)) == "passes"
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.3", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.250", "10.0.0.1", "udp", 40000, sport=53)) == "passes"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "dropped"


def test_a_target_has_a_scope_exactly_when_it_has_an_ipv4_address():
    with pytest.raises(ValueError, match="scope"):
        Target(H1, None, ipaddress.IPv4Network("10.0.0.1/32"))
    with pytest.raises(ValueError, match="scope"):
        Target(H1, ipaddress.IPv4Address("10.0.0.1"), None)


# ---- destinations of either family ------------------------------------------------

def test_ipv6_destinations_go_into_ipv6_rules_only():
    spec = ActionSpec(ActionKind.BLOCK, "tcp", (25,),
                      to=(ipaddress.IPv6Network("2001:db8::3/128"),
                          ipaddress.IPv6Network("2001:db8:5::/48")))
    result = planned(spec)
    assert all(dict(r.match)["eth_type"] == 0x86DD for r in result.rules)
    assert ("ipv6_dst", ("2001:db8:5::", "ffff:ffff:ffff::")) in result.rules[1].match
    rules = switch(result)
    assert fate(rules, v6("10.0.0.1", dport=25)) == "dropped"
    assert fate(rules, v6("10.0.0.1", dport=25, ipv6_dst="2001:db8:5:7::1")) == "dropped"
    assert fate(rules, v6("10.0.0.1", dport=25, ipv6_dst="2001:db8:6::1")) == "passes"
    assert fate(rules, v6("10.0.0.1", dport=25, ipv6_dst="2001:db8::2")) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "passes"


def test_ipv4_destinations_leave_ipv6_alone():
    spec = ActionSpec(ActionKind.BLOCK, "tcp", (25,), direction="both",
                      to=(ipaddress.IPv4Network("10.0.0.3/32"),))
    result = planned(spec)
    assert all(dict(r.match)["eth_type"] == 0x0800 for r in result.rules)
    rules = switch(result)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"
    assert fate(rules, v6("10.0.0.1", dport=25)) == "passes"


def test_destinations_of_both_families_toward_the_subscriber():
    spec = ActionSpec(ActionKind.BLOCK, "tcp", (25,), direction="to_subscriber",
                      to=(ipaddress.IPv4Network("10.0.0.3/32"),
                          ipaddress.IPv6Network("2001:db8::3/128")))
    rules = switch(planned(spec))
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 25)) == "dropped"
    assert fate(rules, v6("10.0.0.3", None, "10.0.0.1", dport=25)) == "dropped"
    assert fate(rules, v6("10.0.0.3", "2001:db8::33", "10.0.0.1", dport=25)) == "passes"
    assert fate(rules, v6("10.0.0.1", dport=25)) == "passes"


def test_exceptions_hold_in_their_own_family():
    smarthosts = (ipaddress.IPv4Network("10.0.0.252/32"),
                  ipaddress.IPv6Network("2001:db8::fc/128"))
    both = switch(planned(ActionSpec(ActionKind.BLOCK, "tcp", (25,), except_to=smarthosts)))
    only_v6 = switch(planned(ActionSpec(ActionKind.BLOCK, "tcp", (25,),
                                        except_to=smarthosts[1:])))
    for rules in (both, only_v6):
        assert fate(rules, v6("10.0.0.1", None, "10.0.0.252", dport=25)) == "passes"
        assert fate(rules, v6("10.0.0.1", "fe80::1", "10.0.0.252", dport=25)) == "passes"
        assert fate(rules, v6("10.0.0.1", dport=25)) == "dropped"
        # A forged source gets no exception: it is let through ahead of
        # anti-spoofing.
        assert fate(rules, v6("10.0.0.1", "2001:db8::2", "10.0.0.252", dport=25)) == "dropped"
    assert fate(both, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 25)) == "passes"
    assert fate(only_v6, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 25)) == "dropped"


def test_a_meter_toward_an_ipv6_destination():
    spec = ActionSpec(ActionKind.RATE_LIMIT, "tcp", (110, 995), rate=64, unit="kbps", burst=32,
                      to=(ipaddress.IPv6Network("2001:db8::fc/128"),))
    rules = switch(planned(spec))
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.252", dport=995)) == "metered"
    assert fate(rules, v6("10.0.0.1", None, "10.0.0.3", dport=995)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 995)) == "passes"


# ---- every rule a switch takes ---------------------------------------------------

PREREQUISITES = {
    "ipv4_src": {("eth_type", 0x0800)}, "ipv4_dst": {("eth_type", 0x0800)},
    "arp_spa": {("eth_type", 0x0806)}, "arp_tpa": {("eth_type", 0x0806)},
    "ipv6_src": {("eth_type", 0x86DD)}, "ipv6_dst": {("eth_type", 0x86DD)},
    "ip_proto": {("eth_type", 0x0800), ("eth_type", 0x86DD)},
    "tcp_src": {("ip_proto", 6)}, "tcp_dst": {("ip_proto", 6)},
    "udp_src": {("ip_proto", 17)}, "udp_dst": {("ip_proto", 17)},
    "icmpv6_type": {("ip_proto", 58)},
    "ipv6_nd_target": {("icmpv6_type", 135), ("icmpv6_type", 136)},
}


@pytest.mark.parametrize("ip", ["10.0.0.1", None])
@pytest.mark.parametrize("violation, n", [
    (v, n) for v in Violation for n in range(1, len(POLICY.rung(v).ladder) + 1)])
def test_every_rule_has_its_openflow_prerequisites_and_compiles(violation, n, ip):
    result = planned(step(violation, n), t=target(ip))
    for rule in result.rules:
        match = dict(rule.match)
        for field in match:
            wanted = PREREQUISITES.get(field)
            assert wanted is None or wanted & set(match.items()), (field, rule)
        if match.get("ip_proto") == 58:
            assert match["eth_type"] == 0x86DD, rule
        compiler.flow_add(rule).match.serialize(bytearray(), 0)
        if rule.dpid == 1 and "vlan_vid" not in match:
            # About the subscriber only: its port, MAC or address.
            assert (match.get("in_port") == 1 or match.get("eth_dst") == H1.mac
                    or match.get("ipv4_dst") == "10.0.0.1"
                    or match.get("arp_tpa") == "10.0.0.1"), rule
