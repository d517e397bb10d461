"""Turns one action and the subscriber's identity into the narrowest rules.

Pure: no switch, no clock, no store. Every rule sits on the subscriber's
access switch, and matches the subscriber's port, MAC or addresses, so no
other subscriber is touched; each action matches only the traffic it is
about. The one exception is a quarantine, whose tagged traffic also needs the
switches on its path to the walled garden (and nothing else there).

Both address families, one subscriber (Target): its port and MAC, its IPv4
address (or a wider allowed scope), and its IPv6 addresses and prefixes.

- An enforcement belongs to the subscriber, not to an address: what it
  drops or meters matches the subscriber's port and MAC in both families
  (which cover every address it uses: a new DHCP lease, privacy addresses),
  so it is sidestepped neither by changing address nor by changing family,
  and the neighbour later given its old address is not touched. Only a
  scope wider than the subscriber's own address, which the policy allowed
  and the request asked for, matches IPv4 addresses.
- What an allow-list lets through ahead of anti-spoofing (block exceptions,
  a quarantine's requests, ARP answers) names the subscriber's own current
  addresses, so composing two actions never loosens source validation; a
  subscriber that takes a new address has them planned again. A destination
  (`to`) belongs to its family: a rule toward IPv4 destinations only has no
  IPv6 part, and the other way round; an exception (`except_to`) holds in
  its own family.
- An IPv6-only subscriber (no IPv4 address) is still enforced over IPv4: what
  would match its IPv4 address matches its port and MAC instead.
- Cutoff matches the port and the MAC, every ethertype.
- Quarantine lets DNS and the portal answer in both families, and the
  neighbour discovery that reaching them needs; nothing else.
- Anti-spoofing validates sources in both families (RFC 7039): IPv4 and ARP
  from its address, IPv6 from its own addresses and prefixes; neighbour
  advertisements only for its own addresses; router advertisements,
  redirects and DHCPv6 server messages never leave its port (RA guard, RFC
  6105). An address it is still checking (DAD, from ::) and a DHCP client
  asking for one (0.0.0.0) get out.

Where an allow-list lets IPv6 through ahead of anti-spoofing (block
exceptions, quarantine), it names the subscriber's own IPv6 sources when they
are known, so that composing the two actions never loosens anti-spoofing.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from enforcement.domain import pipeline
from enforcement.domain.flows import (
    VLAN_PRESENT,
    ApplyMeter,
    FlowRule,
    GotoTable,
    MeterSpec,
    Output,
    PopVlan,
    PushVlan,
)
from enforcement.domain.model import ActionKind, ActionSpec, Location, Network
from enforcement.domain.policy import Assets
from enforcement.domain.routing import Hop

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
IP_PROTO = {"tcp": 6, "udp": 17, "icmp": 1}
ICMPV6 = 58
# What "icmp" means over IPv6: echo request and reply only. Neighbour
# discovery is ICMPv6 too, and blocking it would cut all of the
# subscriber's IPv6.
ICMPV6_ECHO = (128, 129)
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
NEIGHBOUR_SOLICITATION = 135
NEIGHBOUR_ADVERTISEMENT = 136
REDIRECT = 137
MLDV2_REPORT = 143
DHCPV6_SERVER_PORT = 547
UNSPECIFIED_V6 = "::"
DNS_PORT = 53


@dataclasses.dataclass(frozen=True)
class Target:
    """Who is enforced against: where it is attached, its addresses.

    ip: its IPv4 address, None for an IPv6-only subscriber.
    scope: the /32, or a wider scope the policy allowed; None when ip is.
    ipv6: its IPv6 addresses as /128 (link-local included) and its prefixes.
    """
    location: Location
    ip: ipaddress.IPv4Address | None
    scope: ipaddress.IPv4Network | None
    ipv6: tuple[ipaddress.IPv6Network, ...] = ()

    def __post_init__(self):
        if (self.ip is None) != (self.scope is None):
            raise ValueError("a target has an IPv4 scope exactly when it has an IPv4 address")


@dataclasses.dataclass(frozen=True)
class PlannedRules:
    rules: tuple[FlowRule, ...]
    meters: tuple[MeterSpec, ...]


@dataclasses.dataclass(frozen=True)
class Context:
    """What some actions need beyond the subscriber: the policy's assets, the
    quarantine VLAN, and the hops from the access switch to each walled-garden
    server (keyed by its address as ipaddress writes it), as routing.route
    computes them."""
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


def _ip(field: str, network: Network) -> tuple:
    if network.prefixlen == network.max_prefixlen:
        return (field, str(network.network_address))
    return (field, (str(network.network_address), str(network.netmask)))


def _toward(field: str, network: Network | None) -> tuple:
    return () if network is None else (_ip(field, network),)


def _wide(t: Target) -> ipaddress.IPv4Network | None:
    """The scope when it is wider than the subscriber's own address (a
    prefix the policy allowed): only then do drops match IPv4 addresses."""
    scope = t.scope
    return scope if scope is not None and scope.prefixlen < scope.max_prefixlen else None


def _v4_from(t: Target) -> tuple:
    """What makes an IPv4 packet from its port the subscriber's, for an
    allow: its address, or its MAC when it has no IPv4 address to match."""
    if t.scope is None:
        return (("eth_src", t.location.mac),)
    return (_ip("ipv4_src", t.scope),)


def _v4_drop_from(t: Target) -> tuple:
    """The same, for what is dropped or metered: its MAC (with the port the
    callers match), whatever address it uses; a wider scope by address."""
    wide = _wide(t)
    return (_ip("ipv4_src", wide),) if wide else (("eth_src", t.location.mac),)


def _v4_to(t: Target) -> tuple:
    """Toward the subscriber: its MAC, or the addresses of a wider scope."""
    wide = _wide(t)
    return (_ip("ipv4_dst", wide),) if wide else (("eth_dst", t.location.mac),)


def _by_family(networks: Sequence[Network]) -> tuple[tuple[Network | None, ...],
                                                     tuple[Network | None, ...]]:
    """A rule's destinations split by family: (None,) in both when it has
    none (every destination), and nothing in a family it names none of."""
    if not networks:
        return (None,), (None,)
    return (tuple(n for n in networks if n.version == 4),
            tuple(n for n in networks if n.version == 6))


def _own_v6(t: Target) -> tuple[ipaddress.IPv6Network, ...]:
    """Its IPv6 addresses and prefixes, less those inside another (its
    global address within its /64): the same sources in fewer rules."""
    own = tuple(dict.fromkeys(t.ipv6))
    return tuple(n for n in own if not any(o != n and n.subnet_of(o) for o in own))


def _v6_sources(t: Target) -> list[tuple]:
    """One match per IPv6 source of the subscriber; while none is known, its
    port and MAC (which callers match) are all there is to go by."""
    return [(_ip("ipv6_src", n),) for n in _own_v6(t)] or [()]


def _own_advertisements(r: _Rules, priority: int, t: Target) -> list[FlowRule]:
    """Neighbour advertisements from one of its addresses for one of its
    addresses: advertising a neighbour's address would take its traffic."""
    own = _own_v6(t)
    icmp = (("in_port", t.location.port), ("eth_src", t.location.mac),
            ("eth_type", ETH_TYPE_IPV6), ("ip_proto", ICMPV6),
            ("icmpv6_type", NEIGHBOUR_ADVERTISEMENT))
    return [r.allow(priority, *icmp, _ip("ipv6_src", source), _ip("ipv6_nd_target", target))
            for source in own for target in own]


def _block(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    rules = []
    ports = spec.ports or (None,)
    dests, dests_v6 = _by_family(spec.to)
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    # An exception only makes sense where the family has a block to except from.
    exceptions = [e for e in spec.except_to if e.version == 4] if dests else []
    if spec.direction in ("from_subscriber", "both"):
        port_of = ("in_port", t.location.port)
        dropped = (port_of, ipv4, *_v4_drop_from(t))
        allowed = (port_of, ipv4, *_v4_from(t))
        for port in ports:
            for dest in dests:
                rules.append(r.drop(pipeline.PRIORITY_BLOCK, *dropped,
                                    *_toward("ipv4_dst", dest), *_l4(spec.protocol, port)))
            for exception in exceptions:
                rules.append(r.allow(pipeline.PRIORITY_BLOCK_EXCEPTION, *allowed,
                                     _ip("ipv4_dst", exception), *_l4(spec.protocol, port)))
    if spec.direction in ("to_subscriber", "both"):
        for port in ports:
            for dest in dests:
                rules.append(r.drop(pipeline.PRIORITY_BLOCK, ipv4, *_v4_to(t),
                                    *_toward("ipv4_src", dest), *_l4(spec.protocol, port)))
    return rules + _block_v6(spec, t, r, dests_v6), []


def _block_v6(spec: ActionSpec, t: Target, r: _Rules,
              dests: tuple[Network | None, ...]) -> list[FlowRule]:
    """The same block over IPv6, by port and MAC. An exception also names
    the subscriber's own sources, where known: it is let through ahead of
    anti-spoofing."""
    ipv6 = ("eth_type", ETH_TYPE_IPV6)
    mine = (("in_port", t.location.port), ("eth_src", t.location.mac), ipv6)
    exceptions = ([e for e in spec.except_to if e.version == 6]
                  if dests and spec.direction != "to_subscriber" else [])
    rules = []
    for port in spec.ports or (None,):
        for l4 in _l4_v6(spec.protocol, port):
            for dest in dests:
                if spec.direction in ("from_subscriber", "both"):
                    rules.append(r.drop(pipeline.PRIORITY_BLOCK, *mine,
                                        *_toward("ipv6_dst", dest), *l4))
                if spec.direction in ("to_subscriber", "both"):
                    rules.append(r.drop(pipeline.PRIORITY_BLOCK, ("eth_dst", t.location.mac),
                                        ipv6, *_toward("ipv6_src", dest), *l4))
            rules += [r.allow(pipeline.PRIORITY_BLOCK_EXCEPTION, *mine, *source,
                              _ip("ipv6_dst", exception), *l4)
                      for exception in exceptions for source in _v6_sources(t)]
    return rules


def _rate_limit(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    meter = MeterSpec(t.location.dpid, meter_id, spec.unit, spec.rate, spec.burst)
    in_port = ("in_port", t.location.port)
    if spec.protocol == "any" and not spec.to:
        # Everything the subscriber sends, ARP and all, shares one budget.
        return [r.meter(pipeline.PRIORITY_METER_ALL, meter_id, in_port)], [meter]
    ports = spec.ports or (None,)
    dests, dests_v6 = _by_family(spec.to)
    base = (in_port, ("eth_type", ETH_TYPE_IPV4), *_v4_drop_from(t))
    rules = [r.meter(pipeline.PRIORITY_METER_NARROW, meter_id, *base,
                     *_toward("ipv4_dst", dest), *_l4(spec.protocol, port))
             for port in ports for dest in dests]
    # The same budget over IPv6, by port and MAC.
    v6 = (in_port, ("eth_src", t.location.mac), ("eth_type", ETH_TYPE_IPV6))
    rules += [r.meter(pipeline.PRIORITY_METER_NARROW, meter_id, *v6,
                      *_toward("ipv6_dst", dest), *l4)
              for port in ports for dest in dests_v6 for l4 in _l4_v6(spec.protocol, port)]
    return rules, [meter]


def _quarantine(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    assets = context.assets
    port = ("in_port", t.location.port)
    mac = ("eth_dst", t.location.mac)
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    ipv6 = ("eth_type", ETH_TYPE_IPV6)
    allow = pipeline.PRIORITY_QUARANTINE_ALLOW
    deny = pipeline.PRIORITY_QUARANTINE_DENY
    arp_mine = ((_ip("arp_spa", t.scope),) if t.scope is not None
                else (("eth_src", t.location.mac),))
    rules = [r.allow(allow, port, ("eth_type", ETH_TYPE_ARP), *arp_mine)]
    services = [(dns, proto, DNS_PORT) for dns in assets.dns for proto in ("udp", "tcp")]
    services += [(portal, "tcp", p) for portal in assets.listed(spec.portal)
                 for p in assets.portal_ports]
    for server, proto, service_port in services:
        address = str(server.network_address)
        l4 = _l4(proto, service_port)
        if server.version == 4:
            requests = [(port, ipv4, *_v4_from(t), ("ipv4_dst", address), *l4)]
            along = (ipv4, ("ipv4_dst", address))
            answers = (ipv4, _ip("ipv4_src", server), *_v4_to(t))
        else:
            requests = [(port, ("eth_src", t.location.mac), ipv6, *source,
                         ("ipv6_dst", address), *l4) for source in _v6_sources(t)]
            along = (ipv6, ("ipv6_dst", address))
            answers = (mac, ipv6, ("ipv6_src", address))
        rules += _steered(r, context, context.routes[address], requests, along)
        # The answers come back through ordinary forwarding; nothing else
        # reaches the subscriber.
        rules.append(r.allow(allow, *answers, *_l4(proto, service_port, side="src")))
    rules += _quarantine_discovery(t, r)
    # At egress too: toward the subscriber only those answers, ARP and
    # neighbour discovery pass (the flood set leaves its port out but for
    # ARP asking for it: controller/openflow/dataplane.py).
    rules += [r.allow(allow, mac, ("eth_type", ETH_TYPE_ARP)), r.drop(deny, port)]
    if _wide(t):
        rules.append(r.drop(deny, ipv4, *_v4_to(t)))
    return [*rules, r.drop(deny, mac)], []


def _steered(r: _Rules, context: Context, hops: Sequence[Hop], requests: Iterable[tuple],
             along: tuple) -> list[FlowRule]:
    """At the access switch the requests are tagged and sent toward the
    walled garden along the computed path, not through forwarding; each
    further switch passes the tag on, and the last takes it off."""
    allow = pipeline.PRIORITY_QUARANTINE_ALLOW
    tagged = ("vlan_vid", VLAN_PRESENT | context.quarantine_vlan)
    first, *rest = hops
    out = ((PushVlan(context.quarantine_vlan), Output(first.out_port)) if rest
           else (Output(first.out_port),))
    rules = [r.send(first.dpid, allow, request, out) for request in requests]
    for i, hop in enumerate(rest):
        last = i == len(rest) - 1
        rules.append(r.send(hop.dpid, allow, (("in_port", hop.in_port), tagged, *along),
                            (PopVlan(), Output(hop.out_port)) if last
                            else (Output(hop.out_port),)))
        # Tagged traffic goes nowhere but the walled garden.
        rules.append(r.drop(pipeline.PRIORITY_QUARANTINE_DENY, tagged, dpid=hop.dpid))
    return rules


def _quarantine_discovery(t: Target, r: _Rules) -> list[FlowRule]:
    """The neighbour discovery a quarantined subscriber needs to reach the
    garden over IPv6: from its port solicitations from its own sources (or
    from ::, while it checks an address) and advertisements of its own
    addresses; toward its MAC, the router's and neighbours' answers. While
    none of its IPv6 sources is known, its port and MAC are all there is."""
    allow = pipeline.PRIORITY_QUARANTINE_ALLOW
    icmp = (("eth_type", ETH_TYPE_IPV6), ("ip_proto", ICMPV6))
    mine = (("in_port", t.location.port), ("eth_src", t.location.mac), *icmp)
    asks = (ROUTER_SOLICITATION, NEIGHBOUR_SOLICITATION)
    if _own_v6(t):
        sources = [*_v6_sources(t), (("ipv6_src", UNSPECIFIED_V6),)]
        rules = [r.allow(allow, *mine, ("icmpv6_type", kind), *source)
                 for kind in asks for source in sources]
        rules += _own_advertisements(r, allow, t)
    else:
        rules = [r.allow(allow, *mine, ("icmpv6_type", kind))
                 for kind in (*asks, NEIGHBOUR_ADVERTISEMENT)]
    return rules + [r.allow(allow, ("eth_dst", t.location.mac), *icmp, ("icmpv6_type", kind))
                    for kind in (ROUTER_ADVERTISEMENT, NEIGHBOUR_SOLICITATION,
                                 NEIGHBOUR_ADVERTISEMENT)]


def _cutoff(spec: ActionSpec, t: Target, context: Context, r: _Rules, meter_id: int):
    p = pipeline.PRIORITY_CUTOFF
    rules = [r.drop(p, ("in_port", t.location.port)), r.drop(p, ("eth_dst", t.location.mac))]
    if (wide := _wide(t)) is not None:
        rules += [r.drop(p, ("eth_type", ETH_TYPE_IPV4), _ip("ipv4_dst", wide)),
                  r.drop(p, ("eth_type", ETH_TYPE_ARP), _ip("arp_tpa", wide))]
    return rules, []


def _anti_spoofing(spec: ActionSpec, t: Target, context: Context, r: _Rules,
                   meter_id: int):
    port = ("in_port", t.location.port)
    mac = ("eth_src", t.location.mac)
    allow = pipeline.PRIORITY_ANTISPOOF_ALLOW
    ipv4 = ("eth_type", ETH_TYPE_IPV4)
    rules = []
    if t.scope is not None:
        rules += [r.allow(allow, port, mac, ipv4, _ip("ipv4_src", t.scope)),
                  r.allow(allow, port, mac, ("eth_type", ETH_TYPE_ARP), _ip("arp_spa", t.scope))]
    # A DHCP client asks before it has an address (source 0.0.0.0).
    rules.append(r.allow(allow, port, mac, ipv4, ("ipv4_src", "0.0.0.0"),
                         ("ip_proto", IP_PROTO["udp"]), ("udp_src", 68), ("udp_dst", 67)))
    # Everything else from the port is dropped: other sources, other MACs,
    # and all of its IPv6 while none of its IPv6 sources is known.
    return rules + _anti_spoofing_v6(t, r) + [r.drop(pipeline.PRIORITY_ANTISPOOF_DENY, port)], []


def _anti_spoofing_v6(t: Target, r: _Rules) -> list[FlowRule]:
    v6 = (("in_port", t.location.port), ("eth_src", t.location.mac),
          ("eth_type", ETH_TYPE_IPV6))
    icmp = (*v6, ("ip_proto", ICMPV6))
    guard = pipeline.PRIORITY_ANTISPOOF_GUARD
    allow = pipeline.PRIORITY_ANTISPOOF_ALLOW
    # The guard sits above the source allow-list: a genuine source does not
    # make a subscriber a router or a DHCPv6 server, nor entitle it to
    # advertise an address that is not its own.
    rules = _own_advertisements(r, pipeline.PRIORITY_ANTISPOOF_ND_ALLOW, t)
    rules += [r.drop(guard, *icmp, ("icmpv6_type", kind))
              for kind in (ROUTER_ADVERTISEMENT, NEIGHBOUR_ADVERTISEMENT, REDIRECT)]
    rules.append(r.drop(guard, *v6, ("ip_proto", IP_PROTO["udp"]),
                        ("udp_src", DHCPV6_SERVER_PORT)))
    rules += [r.allow(allow, *v6, _ip("ipv6_src", network)) for network in _own_v6(t)]
    # Duplicate address detection comes from :: (RFC 4862): the solicitation
    # and the MLD report joining the address's solicited-node group.
    rules += [r.allow(allow, *icmp, ("ipv6_src", UNSPECIFIED_V6), ("icmpv6_type", kind))
              for kind in (NEIGHBOUR_SOLICITATION, MLDV2_REPORT)]
    return rules
