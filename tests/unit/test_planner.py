"""Every violation, every action and their compositions, through a simulated
switch: packet in, verdict out (dropped, metered, forwarded)."""
import ipaddress

import pytest

from enforcement.domain import pipeline
from enforcement.domain.desired import SwitchState, diff
from enforcement.domain.flows import VLAN_PRESENT
from enforcement.domain.model import (
    ActionKind,
    Location,
    Violation,
)
from enforcement.domain.planner import Context, Target, plan
from enforcement.domain.policy import ActionSpec
from enforcement.domain.routing import route
from tests.flowsim import simulate
from tests.planning import H1, MACS, POLICY, UPLINK, VIEW, arp_packet, fate, ip_packet, step, switch

CONTEXT = Context(POLICY.assets, POLICY.quarantine_vlan,
                  {ip: route(VIEW, 1, ip) for ip in ("10.0.0.250", "10.0.0.251")})


def target(ip="10.0.0.1", scope=None):
    return Target(H1, ipaddress.IPv4Address(ip), ipaddress.IPv4Network(scope or ip))


def planned(spec, serial=7, t=None):
    return plan(spec, t or target(), CONTEXT, pipeline.enforcement_cookie(serial), serial)


def ip6_packet(src, dst, proto="tcp", dport=None, sport=40000, in_port=None, eth_src=None,
               icmpv6_type=None):
    """An IPv6 packet between the hosts of the IPv4 addresses src and dst
    (their MACs and ports); its IPv6 addresses do not matter to the rules."""
    packet = {"in_port": in_port or MACS.get(src, (None, UPLINK))[1],
              "eth_src": eth_src or MACS.get(src, ("00:00:00:00:00:99",))[0],
              "eth_dst": MACS[dst][0], "eth_type": 0x86DD,
              "ipv6_src": "2001:db8::1", "ipv6_dst": "2001:db8::3",
              "ip_proto": {"tcp": 6, "udp": 17, "icmpv6": 58}[proto]}
    if proto == "icmpv6":
        packet["icmpv6_type"] = icmpv6_type
    else:
        packet[f"{proto}_dst"] = dport
        packet[f"{proto}_src"] = sport
    return packet


# ---- every violation, every step: narrow scope and placement ---------------

@pytest.mark.parametrize("violation, n", [
    (v, n) for v in Violation for n in range(1, len(POLICY.rung(v).ladder) + 1)])
def test_every_step_of_every_ladder_plans_narrow_rules(violation, n):
    result = planned(step(violation, n))
    assert result.rules
    cookie = pipeline.enforcement_cookie(7)
    for rule in result.rules:
        assert rule.cookie == cookie
        assert rule.table_id in (pipeline.TABLE_ENFORCE, pipeline.TABLE_METER)
        match = dict(rule.match)
        if rule.dpid != 1:
            # Beyond the access switch: only a quarantine's tagged traffic.
            assert match["vlan_vid"] == VLAN_PRESENT | POLICY.quarantine_vlan, rule
            continue
        # Every rule is about the subscriber: its port, or its own addresses.
        assert (match.get("in_port") == 1 or match.get("ipv4_dst") == "10.0.0.1"
                or match.get("eth_dst") == H1.mac or match.get("arp_tpa") == "10.0.0.1"), rule
    # And no rule of it touches another subscriber's traffic.
    for packet in (ip_packet("10.0.0.2", "10.0.0.3", "tcp", 25),
                   ip_packet("10.0.0.3", "10.0.0.2", "tcp", 80),
                   ip_packet("10.0.0.2", "10.0.0.3", "icmp")):
        assert fate(switch(result), packet) == "passes"


# ---- block ------------------------------------------------------------------

SPAM_WITH_SMARTHOST = ActionSpec(ActionKind.BLOCK, "tcp", (25,),
                                 except_to=POLICY.assets.smarthosts)


def test_spam_blocks_only_smtp_from_the_subscriber():
    result = planned(step(Violation.SPAM))
    assert len(result.rules) == 2 and result.meters == ()
    # In both families the subscriber is its port and MAC: every address it uses.
    assert dict(result.rules[0].match) == {"in_port": 1, "eth_src": H1.mac, "eth_type": 0x0800,
                                           "ip_proto": 6, "tcp_dst": 25}
    assert dict(result.rules[1].match) == {"in_port": 1, "eth_src": H1.mac, "eth_type": 0x86DD,
                                           "ip_proto": 6, "tcp_dst": 25}
    rules = switch(result)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.2", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 25)) == "dropped"
    for port in (587, 465, 80):
        assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", port)) == "passes"
    # mail *to* the subscriber is not what spam enforcement stops
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 25)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "udp", 25)) == "passes"


def test_a_block_can_spare_the_providers_smarthost():
    rules = switch(planned(SPAM_WITH_SMARTHOST))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 25)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"


def test_open_relay_blocks_smtp_both_ways():
    rules = switch(planned(step(Violation.OPEN_RELAY)))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.1", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "passes"


def test_pop_polling_block_only_toward_the_mail_server():
    rules = switch(planned(step(Violation.MAIL_POLLING, 2)))
    for port in (110, 995):
        assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", port)) == "dropped"
        assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", port)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 25)) == "passes"


# ---- rate limit ---------------------------------------------------------------

def test_pop_polling_meter_covers_only_pop_to_the_mail_server():
    result = planned(step(Violation.MAIL_POLLING))
    assert [(m.unit, m.rate, m.burst) for m in result.meters] == [("kbps", 64, 32)]
    rules = switch(result)
    assert simulate(rules, 1, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 995)).meters == (7,)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 110)) == "metered"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 110)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 80)) == "passes"


def test_ping_flood_meters_icmp_only_in_packets_per_second():
    result = planned(step(Violation.PING_FLOOD))
    assert result.meters[0].unit == "pktps"
    rules = switch(result)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "icmp")) == "metered"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "passes"


def test_denial_of_service_meters_everything_the_subscriber_sends():
    rules = switch(planned(step(Violation.DENIAL_OF_SERVICE)))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "udp", 9)) == "metered"
    assert fate(rules, arp_packet("10.0.0.1", "10.0.0.3")) == "metered"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "passes"


# ---- quarantine -----------------------------------------------------------------

def test_quarantine_reaches_dns_and_portal_only_and_only_their_answers_come_back():
    rules = switch(planned(step(Violation.MALWARE)))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "udp", 53)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "tcp", 53)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.251", "tcp", 80)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.251", "tcp", 443)) == "passes"
    assert fate(rules, arp_packet("10.0.0.1", "10.0.0.250")) == "passes"
    assert fate(rules, ip_packet("10.0.0.250", "10.0.0.1", "udp", 40000, sport=53)) == "passes"
    assert fate(rules, ip_packet("10.0.0.251", "10.0.0.1", "tcp", 40000, sport=80)) == "passes"
    # nothing else, either way
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.2", "icmp")) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.251", "tcp", 22)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.1", "icmp")) == "dropped"
    assert fate(rules, ip_packet("10.0.0.250", "10.0.0.1", "tcp", 22, sport=40000)) == "dropped"
    # a forged source cannot use the allow-list
    assert fate(rules, ip_packet("10.0.0.9", "10.0.0.250", "udp", 53, in_port=1)) == "dropped"


def test_quarantined_requests_are_tagged_and_steered_to_the_walled_garden():
    result = planned(step(Violation.MALWARE))
    vlan = POLICY.quarantine_vlan
    at_access = simulate(switch(result), 1, ip_packet("10.0.0.1", "10.0.0.251", "tcp", 443))
    assert (at_access.outcome, at_access.port, at_access.vlan) == ("output", UPLINK, vlan)
    s2 = [r for r in result.rules if r.dpid == 2]
    assert {r.dpid for r in result.rules} == {1, 2}
    arriving = {**ip_packet("10.0.0.1", "10.0.0.251", "tcp", 443), "in_port": 3,
                "vlan_vid": VLAN_PRESENT | vlan}
    at_garden = simulate(s2, 2, arriving)
    assert (at_garden.outcome, at_garden.port, at_garden.vlan) == ("output", 2, None)
    to_dns = simulate(s2, 2, {**arriving, "ipv4_dst": "10.0.0.250"})
    assert (to_dns.outcome, to_dns.port) == ("output", 1)
    # tagged traffic for anywhere else dies at the garden's switch
    assert simulate(s2, 2, {**arriving, "ipv4_dst": "10.0.0.3"}).outcome == "dropped"


def test_non_payment_quarantine_points_to_the_billing_portal():
    spec = step(Violation.NON_PAYMENT)
    assert spec.kind is ActionKind.QUARANTINE and spec.portal == "billing_portal"
    rules = switch(planned(spec))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.251", "tcp", 443)) == "passes"


def test_two_quarantined_subscribers_cannot_reach_each_other():
    h2 = Target(Location(1, 2, "00:00:00:00:00:02"), ipaddress.IPv4Address("10.0.0.2"),
                ipaddress.IPv4Network("10.0.0.2/32"))
    rules = switch(planned(step(Violation.MALWARE)),
                   planned(step(Violation.PHISHING), serial=8, t=h2))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.2", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.1", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.250", "udp", 53)) == "passes"


# ---- cutoff and anti-spoofing -------------------------------------------------------

def test_cutoff_stops_everything_in_and_out_and_nothing_else():
    cutoff = planned(step(Violation.ILLEGAL_USE))
    rules = switch(cutoff)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "udp", 53)) == "dropped"
    assert fate(rules, arp_packet("10.0.0.1", "10.0.0.3")) == "dropped"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.2", "10.0.0.3", "tcp", 80)) == "passes"
    # Nothing matches its address: a neighbour given that address later
    # (another MAC, another port) is not cut off. (ARP asking for it is kept
    # from the cut port at egress: controller/dataplane.py.)
    assert not any(name in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa")
                   for rule in cutoff.rules for name, _ in rule.match)
    heir = {**ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80), "eth_dst": "00:00:00:00:00:77"}
    assert fate(rules, heir) == "passes"


def test_a_block_follows_the_subscriber_to_any_address_and_spares_its_old_address_s_heir():
    """The subscriber takes a new address (a DHCP renewal): what is dropped
    matches its port and MAC, so the new address is blocked as the old one
    was, before any re-planning; the neighbour later given the old address
    (another port, another MAC) is not."""
    rules = switch(planned(step(Violation.SPAM)), planned(step(Violation.PING_FLOOD), serial=8))
    assert fate(rules, ip_packet("10.0.0.77", "10.0.0.3", "tcp", 25, in_port=1,
                                 eth_src=H1.mac)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.77", "10.0.0.3", "icmp", in_port=1,
                                 eth_src=H1.mac)) == "metered"
    assert fate(rules, ip_packet("10.0.0.77", "10.0.0.3", "tcp", 80, in_port=1,
                                 eth_src=H1.mac)) == "passes"
    heir = ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25, in_port=2,
                     eth_src="00:00:00:00:00:77")
    assert fate(rules, heir) == "passes"
    assert fate(rules, {**heir, "ip_proto": 1, "tcp_dst": None}) == "passes"


def test_a_wider_scope_still_matches_its_addresses():
    result = planned(step(Violation.SPAM), t=target(scope="10.0.0.0/29"))
    assert ("ipv4_src", ("10.0.0.0", "255.255.255.248")) in result.rules[0].match
    rules = switch(planned(ActionSpec(ActionKind.CUTOFF), t=target(scope="10.0.0.0/29")))
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.2", "tcp", 80)) == "dropped"


def test_a_cut_off_or_quarantined_subscribers_lldp_never_reaches_the_controller():
    """LLDP is copied to discovery in table 2, after enforcement: what table
    0 drops never reaches it (OS-Ken's own rule sat above every enforcement)."""
    lldp = {"in_port": 1, "eth_src": MACS["10.0.0.1"][0], "eth_dst": "01:80:c2:00:00:0e",
            "eth_type": 0x88CC}
    assert simulate(switch(), 1, lldp).copied
    for violation in (Violation.ILLEGAL_USE, Violation.MALWARE, Violation.SPOOFING):
        verdict = simulate(switch(planned(step(violation))), 1, lldp)
        assert (verdict.outcome, verdict.copied) == ("dropped", False), violation
    # a neighbour's LLDP still reaches it
    assert simulate(switch(planned(step(Violation.ILLEGAL_USE))), 1,
                    {**lldp, "in_port": 2, "eth_src": MACS["10.0.0.2"][0]}).copied


def test_anti_spoofing_lets_only_the_genuine_source_leave():
    rules = switch(planned(step(Violation.SPOOFING)))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "passes"
    assert fate(rules, arp_packet("10.0.0.1", "10.0.0.3")) == "passes"
    assert fate(rules, ip_packet("10.0.0.9", "10.0.0.3", "tcp", 80, in_port=1)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80,
                                 eth_src="00:00:00:00:00:09")) == "dropped"
    assert fate(rules, {**arp_packet("10.0.0.1", "10.0.0.3"), "arp_spa": "10.0.0.9"}) == "dropped"
    assert fate(rules, ip_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "passes"


# ---- compositions ---------------------------------------------------------------------

def test_block_and_meter_both_hold():
    rules = switch(planned(step(Violation.SPAM)),
                   planned(step(Violation.DENIAL_OF_SERVICE), serial=8))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "metered"


def test_block_and_anti_spoofing_both_hold():
    rules = switch(planned(step(Violation.SPAM)),
                   planned(step(Violation.SPOOFING), serial=8))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.9", "10.0.0.3", "tcp", 80, in_port=1)) == "dropped"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "passes"


def test_quarantine_overrides_a_block_exception():
    rules = switch(planned(SPAM_WITH_SMARTHOST), planned(step(Violation.MALWARE), serial=8))
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.252", "tcp", 25)) == "dropped"


def test_cutoff_supersedes_quarantine_and_lifting_it_restores_exactly_the_quarantine():
    quarantine = planned(step(Violation.MALWARE))
    cutoff = planned(step(Violation.MALWARE, 2), serial=8)
    before = SwitchState.of(quarantine.rules, quarantine.meters)
    during = SwitchState.of(quarantine.rules + cutoff.rules, ())
    rules = switch(quarantine, cutoff)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "udp", 53)) == "dropped"
    change = diff(during, before)  # lift the cutoff
    assert set(change.rules_to_delete) == set(cutoff.rules) and not change.rules_to_add
    rules = switch(quarantine)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.250", "udp", 53)) == "passes"
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "dropped"


def test_wider_scope_matches_the_prefix():
    result = planned(ActionSpec(ActionKind.BLOCK, "tcp", (25,)),
                     t=target(scope="10.0.0.0/29"))
    assert ("ipv4_src", ("10.0.0.0", "255.255.255.248")) in result.rules[0].match
    rules = switch(result)
    assert fate(rules, ip_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"


def test_enforcement_cookie_is_in_its_own_namespace():
    cookie = pipeline.enforcement_cookie(7)
    assert pipeline.namespace_of(cookie) == pipeline.NS_ENFORCE
    assert pipeline.namespace_of(pipeline.COOKIE_BASE) == pipeline.NS_BASE
    with pytest.raises(ValueError):
        pipeline.enforcement_cookie(0)


# ---- the other address family ------------------------------------------------------

def test_a_block_is_not_sidestepped_over_ipv6_and_touches_nobody_else():
    rules = switch(planned(step(Violation.SPAM)))
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 25)) == "dropped"
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "passes"
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 587)) == "passes"
    assert fate(rules, ip6_packet("10.0.0.2", "10.0.0.3", "tcp", 25)) == "passes"
    assert fate(rules, ip6_packet("10.0.0.3", "10.0.0.1", "tcp", 25)) == "passes"


def test_an_icmp_block_over_ipv6_stops_echo_and_keeps_neighbour_discovery():
    rules = switch(planned(ActionSpec(ActionKind.BLOCK, "icmp")))
    for echo in (128, 129):
        assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "icmpv6",
                                      icmpv6_type=echo)) == "dropped"
    for discovery in (133, 135, 136):
        assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "icmpv6",
                                      icmpv6_type=discovery)) == "passes"


def test_a_narrow_meter_covers_ipv6_too():
    spec = ActionSpec(ActionKind.RATE_LIMIT, "tcp", (443,), rate=1000, unit="kbps", burst=500)
    rules = switch(planned(spec))
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 443)) == "metered"
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "passes"
    assert fate(rules, ip6_packet("10.0.0.2", "10.0.0.3", "tcp", 443)) == "passes"


def test_cutoff_and_quarantine_stop_ipv6_both_ways():
    for spec in (step(Violation.MALWARE), step(Violation.MALWARE, 2)):
        rules = switch(planned(spec))
        assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "dropped"
        assert fate(rules, ip6_packet("10.0.0.3", "10.0.0.1", "tcp", 80)) == "dropped"
        assert fate(rules, ip6_packet("10.0.0.2", "10.0.0.3", "tcp", 80)) == "passes"


def test_anti_spoofing_lets_a_dhcp_client_ask_and_leaves_no_ipv6_way_around():
    rules = switch(planned(step(Violation.SPOOFING)))
    # A DHCP client asks before it has an address; a forged source does not pass.
    dhcp = {**ip_packet("10.0.0.1", "10.0.0.3", "udp", 67, sport=68), "ipv4_src": "0.0.0.0"}
    assert fate(rules, dhcp) == "passes"
    assert fate(rules, {**dhcp, "udp_dst": 53}) == "dropped"
    # Its IPv6 sources cannot be validated yet: none leaves (no spoofing by
    # the other family); its neighbours' IPv6 is untouched.
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "tcp", 80)) == "dropped"
    assert fate(rules, ip6_packet("10.0.0.1", "10.0.0.3", "icmpv6", icmpv6_type=134)) == "dropped"
    assert fate(rules, ip6_packet("10.0.0.2", "10.0.0.3", "tcp", 80)) == "passes"
