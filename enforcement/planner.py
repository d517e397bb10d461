"""Turns one action and the subscriber's location into the narrowest rules.

Pure: no switch, no clock, no store. Every rule sits on the subscriber's
access switch, and matches the subscriber's port or address, so no other
subscriber is touched; each action matches only the traffic it is about. The
one exception is a quarantine, whose tagged traffic also needs the switches on
its path to the walled garden (and nothing else there).

Both address families: a subscriber identified by its IPv4 address is, over
IPv6, its access port and MAC (which cover every IPv6 address it uses,
privacy addresses included), so a block or a meter is not sidestepped by
changing family. Cutoff and quarantine match the port and the MAC, every
ethertype. Anti-spoofing validates IPv4 sources and still drops all of the
subscriber's IPv6 (its IPv6 addresses are not known here, so its sources
cannot be validated, and letting them all through would make spoofing free).
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping

from enforcement import pipeline
from enforcement.flows import (
    VLAN_PRESENT,
    ApplyMeter,
    FlowRule,
    GotoTable,
    MeterSpec,
    Output,
    PopVlan,
    PushVlan,
)
from enforcement.model import ActionKind, Location
from enforcement.policy import ActionSpec, Assets
from enforcement.routing import Hop

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
IP_PROTO = {"tcp": 6, "udp": 17, "icmp": 1}
ICMPV6 = 58
# What "icmp" means over IPv6: echo request and reply only. Neighbour
# discovery is ICMPv6 too, and blocking it would cut all of the
# subscriber's IPv6.
ICMPV6_ECHO = (128, 129)
DNS_PORT = 53


@dataclasses.dataclass(frozen=True)
class Target:
    """Who is enforced against: where it is attached, its addresses."""
    location: Location
    ip: ipaddress.IPv4Address
    scope: ipaddress.IPv4Network  # the subscriber's /32 unless a wider scope was allowed

    @property
    def ip_match(self):
        if self.scope.prefixlen == 32:
            return str(self.scope.network_address)
        return (str(self.scope.network_address), str(self.scope.netmask))


@dataclasses.dataclass(frozen=True)
class PlannedRules:
    rules: tuple[FlowRule, ...]
    meters: tuple[MeterSpec, ...]


@dataclasses.dataclass(frozen=True)
class Context:
    """What some actions need beyond the subscriber: the policy's assets, the
    quarantine VLAN, and the hops from the access switch to each walled-garden
    server (keyed by its address), as routing.route computes them."""
    assets: Assets
    quarantine_vlan: int = 3999
    routes: Mapping[str, tuple[Hop, ...]] = dataclasses.field(default_factory=dict)


def plan(spec: ActionSpec, target: Target, context: Context, cookie: int,
         meter_id: int) -> PlannedRules:
    builder = {
        ActionKind.BLOCK: _block,
        ActionKind.RATE_LIMIT: _rate_limit,
        ActionKind.QUARANTINE: _quarantine,
        ActionKind.CUTOFF: _cutoff,
        ActionKind.ANTI_SPOOFING: _anti_spoofing,
    }[spec.kind]
    rules, meters = builder(spec, target, context, _Rules(target.location.dpid, cookie),
                            meter_id)
    return PlannedRules(tuple(dict.fromkeys(rules)), tuple(meters))


class _Rules:
    def __init__(self, dpid: int, cookie: int):
        self.dpid, self.cookie = dpid, cookie

    def drop(self, priority: int, *match, dpid: int | None = None) -> FlowRule:
        return FlowRule(dpid or self.dpid, pipeline.TABLE_ENFORCE, priority, self.cookie, match)

    def send(self, dpid: int, priority: int, match: tuple, actions: tuple) -> FlowRule:
        return FlowRule(dpid, pipeline.TABLE_ENFORCE, priority, self.cookie, match, actions)

    def allow(self, priority: int, *match) -> FlowRule:
        return FlowRule(self.dpid, pipeline.TABLE_ENFORCE, priority, self.cookie, match,
                        (GotoTable(pipeline.TABLE_METER),))

    def meter(self, priority: int, meter_id: int, *match) -> FlowRule:
        return FlowRule(self.dpid, pipeline.TABLE_METER, priority, self.cookie, match,
                        (ApplyMeter(meter_id), GotoTable(pipeline.TABLE_LEARN)))


def _l4(protocol: str, port: int | None, side: str = "dst") -> tuple:
    if protocol == "any":
        return ()
    fields: tuple[tuple[str, int], ...] = (("ip_proto", IP_PROTO[protocol]),)
    if port is not None:
        fields += ((f"{protocol}_{side}", port),)
    return fields


def _l4_v6(protocol: str, port: int | None, side: str = "dst") -> list[tuple]:
    """_l4 over IPv6: one match per alternative."""
    if protocol == "icmp":
        return [(("ip_proto", ICMPV6), ("icmpv6_type", kind)) for kind in ICMPV6_ECHO]
    return [_l4(protocol, port, side)]


def _ip(field: str, network: ipaddress.IPv4Network):
    if network.prefixlen == 32:
        return (field, str(network.network_address))
    return (field, (str(network.network_address), str(network.netmask)))


def _block(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    rules = []
    ports = spec.ports or (None,)
    dests = spec.to or (None,)
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    if spec.direction in ("from_subscriber", "both"):
        base = (("in_port", t.location.port), ipv4, ("ipv4_src", t.ip_match))
        for port in ports:
            for dest in dests:
                rules.append(r.drop(pipeline.PRIORITY_BLOCK, *base,
                                    *((_ip("ipv4_dst", dest),) if dest else ()),
                                    *_l4(spec.protocol, port)))
            for exception in spec.except_to:
                rules.append(r.allow(pipeline.PRIORITY_BLOCK_EXCEPTION, *base,
                                     _ip("ipv4_dst", exception), *_l4(spec.protocol, port)))
    if spec.direction in ("to_subscriber", "both"):
        for port in ports:
            for dest in dests:
                rules.append(r.drop(pipeline.PRIORITY_BLOCK, ipv4, ("ipv4_dst", t.ip_match),
                                    *((_ip("ipv4_src", dest),) if dest else ()),
                                    *_l4(spec.protocol, port)))
    return rules + _block_v6(spec, t, r), []


def _block_v6(spec: ActionSpec, t: Target, r: _Rules) -> list[FlowRule]:
    """The same block over IPv6, by port and MAC. Destinations and
    exceptions are IPv4 addresses (the policy's): a block only toward some
    of them has no IPv6 part, and an exception does not carry over (the
    block holds toward every IPv6 destination)."""
    if spec.to:
        return []
    ipv6 = ("eth_type", ETH_TYPE_IPV6)
    rules = []
    for port in spec.ports or (None,):
        for l4 in _l4_v6(spec.protocol, port):
            if spec.direction in ("from_subscriber", "both"):
                rules.append(r.drop(pipeline.PRIORITY_BLOCK, ("in_port", t.location.port),
                                    ("eth_src", t.location.mac), ipv6, *l4))
            if spec.direction in ("to_subscriber", "both"):
                rules.append(r.drop(pipeline.PRIORITY_BLOCK, ("eth_dst", t.location.mac),
                                    ipv6, *l4))
    return rules


def _rate_limit(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    meter = MeterSpec(t.location.dpid, meter_id, spec.unit, spec.rate, spec.burst)
    in_port = ("in_port", t.location.port)
    if spec.protocol == "any" and not spec.to:
        # Everything the subscriber sends, ARP and all, shares one budget.
        return [r.meter(pipeline.PRIORITY_METER_ALL, meter_id, in_port)], [meter]
    base = (in_port, ("eth_type", ETH_TYPE_IPV4), ("ipv4_src", t.ip_match))
    rules = [r.meter(pipeline.PRIORITY_METER_NARROW, meter_id, *base,
                     *((_ip("ipv4_dst", dest),) if dest else ()),
                     *_l4(spec.protocol, port))
             for port in (spec.ports or (None,)) for dest in (spec.to or (None,))]
    if not spec.to:  # the same budget over IPv6 (destinations are IPv4 only)
        v6 = (in_port, ("eth_src", t.location.mac), ("eth_type", ETH_TYPE_IPV6))
        rules += [r.meter(pipeline.PRIORITY_METER_NARROW, meter_id, *v6, *l4)
                  for port in (spec.ports or (None,)) for l4 in _l4_v6(spec.protocol, port)]
    return rules, [meter]


def _quarantine(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    assets = context.assets
    port = ("in_port", t.location.port)
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    mine = ("ipv4_src", t.ip_match)
    to_me = ("ipv4_dst", t.ip_match)
    allow = pipeline.PRIORITY_QUARANTINE_ALLOW
    deny = pipeline.PRIORITY_QUARANTINE_DENY
    tagged = ("vlan_vid", VLAN_PRESENT | context.quarantine_vlan)
    rules = [r.allow(allow, port, ("eth_type", ETH_TYPE_ARP), ("arp_spa", t.ip_match))]
    services = [(dns, proto, DNS_PORT) for dns in assets.dns for proto in ("udp", "tcp")]
    services += [(portal, "tcp", p) for portal in assets.listed(spec.portal)
                 for p in assets.portal_ports]
    for server, proto, service_port in services:
        address = str(server.network_address)
        hops = context.routes[address]
        first, *rest = hops
        to_server = ("ipv4_dst", address)
        # At the access switch the request is tagged and sent toward the
        # walled garden along the computed path, not through forwarding.
        rules.append(r.send(first.dpid, allow, (port, ipv4, mine, to_server,
                                                *_l4(proto, service_port)),
                            (PushVlan(context.quarantine_vlan), Output(first.out_port))
                            if rest else (Output(first.out_port),)))
        for i, hop in enumerate(rest):
            last = i == len(rest) - 1
            rules.append(r.send(hop.dpid, allow, (("in_port", hop.in_port), tagged, ipv4,
                                                  to_server),
                                (PopVlan(), Output(hop.out_port)) if last
                                else (Output(hop.out_port),)))
            # Tagged traffic goes nowhere but the walled garden.
            rules.append(r.drop(deny, tagged, dpid=hop.dpid))
        # The answers come back through ordinary forwarding; nothing else
        # reaches the subscriber.
        rules.append(r.allow(allow, ipv4, _ip("ipv4_src", server), to_me,
                             *_l4(proto, service_port, side="src")))
    # At egress too: toward the subscriber only those answers and ARP pass
    # (the flood set leaves its port out but for ARP asking for it:
    # controller/dataplane.py).
    mac = ("eth_dst", t.location.mac)
    rules += [r.allow(allow, mac, ("eth_type", ETH_TYPE_ARP)),
              r.drop(deny, port), r.drop(deny, ipv4, to_me), r.drop(deny, mac)]
    return rules, []


def _cutoff(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    p = pipeline.PRIORITY_CUTOFF
    return [r.drop(p, ("in_port", t.location.port)),
            r.drop(p, ("eth_dst", t.location.mac)),
            r.drop(p, ("eth_type", ETH_TYPE_IPV4), ("ipv4_dst", t.ip_match)),
            r.drop(p, ("eth_type", ETH_TYPE_ARP), ("arp_tpa", t.ip_match))], []


def _anti_spoofing(spec: ActionSpec, t: Target, context: Context, r: _Rules,
                   meter_id: int):
    port = ("in_port", t.location.port)
    mac = ("eth_src", t.location.mac)
    allow = pipeline.PRIORITY_ANTISPOOF_ALLOW
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    return [r.allow(allow, port, mac, ipv4, ("ipv4_src", t.ip_match)),
            r.allow(allow, port, mac, ("eth_type", ETH_TYPE_ARP), ("arp_spa", t.ip_match)),
            # A DHCP client asks before it has an address (source 0.0.0.0).
            r.allow(allow, port, mac, ipv4, ("ipv4_src", "0.0.0.0"), ("ip_proto", IP_PROTO["udp"]),
                    ("udp_src", 68), ("udp_dst", 67)),
            # Everything else from the port, IPv6 included: its IPv6 sources
            # cannot be validated until its addresses are known, and
            # letting them all through would make spoofing over IPv6 free.
            r.drop(pipeline.PRIORITY_ANTISPOOF_DENY, port)], []
