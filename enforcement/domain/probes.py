"""Probe packets that show an enforcement bites in the switch's own pipeline.

A barrier says the switch took the rules, not that its data plane applies
them, and a higher-priority rule someone else installs shadows ours while our
flow sits untouched in the table. So the controller sends packets through
the pipeline as if the subscriber had sent them (a packet-out to the first
table, with the subscriber's port as in_port) and watches what becomes of
them. From an enforcement's own rules:

- every rule that stops traffic gets a packet it must stop (TCP 25 from the
  subscriber for a port-25 block; anything from its port for a cutoff), and
  that rule's counter must move;
- every rule that lets traffic on (a rate limit's meter, an allow-list) gets
  a packet that must pass, and that rule's counter must move;
- a rule that stops one port gets a packet of the subscriber's other traffic
  (the same, to another port) that must pass: the enforcement is narrow.

Each probe is marked, PROBE_MAC as its destination (as its source for
traffic toward the subscriber), and the data plane catches a marked packet
that got past table 1 and returns it to the controller instead of
forwarding it (controller/openflow/dataplane.py): no probe reaches a host.

Pure: fields in, fields out. controller/openflow/probeframes.py builds the
frames; controller/openflow/prover.py sends them and judges.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from enforcement.domain import pipeline
from enforcement.domain.flows import ApplyMeter, FlowRule, MatchValue, Output

PROBE_MAC = "0e:5d:b0:00:00:01"   # locally administered unicast: no NIC's
STOP, PASS = "stop", "pass"

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
# Documentation ranges (RFC 5737, RFC 3849): nobody's address.
FAR_V4, FORGED_V4 = "203.0.113.1", "198.51.100.77"
FAR_V6, FORGED_V6 = "2001:db8:ffff::1", "2001:db8:eeee::77"
OTHER_PORTS = (80, 443, 8080, 8443)
SOURCE_PORT = 40000


@dataclasses.dataclass(frozen=True)
class Subject:
    """Whom the enforcement names, on one switch."""
    mac: str
    port: int
    ipv4: str | None = None
    ipv6: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Probe:
    dpid: int
    in_port: int | None          # None: sent as from the controller (toward the subject)
    fields: tuple[tuple[str, MatchValue], ...]  # concrete values, OpenFlow field names
    expect: str                  # STOP or PASS
    rule: FlowRule | None        # whose counter must move (None: a narrowness probe)
    why: str

    def field(self, name: str, default=None):
        return dict(self.fields).get(name, default)


def probes_for(rules: Iterable[FlowRule], subject: Subject) -> tuple[Probe, ...]:
    """The probes for one enforcement's rules on one switch. A rule whose
    match cannot be written as a packet here (a VLAN tag, a rule toward a
    host elsewhere) gets none."""
    rules = tuple(rules)
    out: list[Probe] = []
    for rule in rules:
        kind = _kind(rule)
        if kind is None:
            continue
        fields = _packet(rule, subject, rules)
        if fields is None:
            continue
        in_port = fields.pop("in_port", None)
        probe = Probe(rule.dpid, in_port, tuple(sorted(fields.items())), kind, rule,
                      describe(fields, in_port, subject))
        out.append(probe)
        if kind == STOP and in_port is not None:
            other = _other_traffic(probe, rules)
            if other is not None:
                out.append(other)
    return tuple(out)


def _kind(rule: FlowRule) -> str | None:
    if any(isinstance(i, Output) for i in rule.instructions):
        return None   # it forwards from here (a quarantine's garden): a probe would arrive
    if rule.table_id == pipeline.TABLE_ENFORCE:
        return STOP if not rule.instructions else PASS
    if rule.table_id == pipeline.TABLE_METER and any(
            isinstance(i, ApplyMeter) for i in rule.instructions):
        return PASS
    return None


def _packet(rule: FlowRule, subject: Subject, rules) -> dict | None:
    match = dict(rule.match)
    if set(match) - _KNOWN:
        return None
    toward = "in_port" not in match and match.get("eth_dst") == subject.mac
    if "in_port" in match and match["in_port"] != subject.port:
        return None
    if "in_port" not in match and not toward:
        return None
    eth_type = match.get("eth_type") or (ETH_IPV6 if any(k.startswith("ipv6") for k in match)
                                         else ETH_IPV4)
    fields: dict = {"eth_type": eth_type}
    if toward:
        fields.update(eth_src=PROBE_MAC, eth_dst=subject.mac)
    else:
        fields.update(in_port=subject.port, eth_src=subject.mac, eth_dst=PROBE_MAC)
    if eth_type == ETH_ARP:
        fields.update(arp_op=1, arp_spa=subject.ipv4 or FORGED_V4, arp_tpa=FAR_V4)
    elif eth_type in (ETH_IPV4, ETH_IPV6):
        v6 = eth_type == ETH_IPV6
        # Rules that name no address (a block by port and MAC) take any: a
        # subscriber not known by an address of this family still gets one.
        mine = (_global(subject.ipv6) if v6 else subject.ipv4) or (
            FORGED_V6 if v6 else FORGED_V4)
        far = FAR_V6 if v6 else FAR_V4
        src, dst = (far, mine) if toward else (mine, far)
        family = "ipv6" if v6 else "ipv4"
        fields.update({f"{family}_src": src, f"{family}_dst": dst})
        proto = match.get("ip_proto", TCP)
        fields["ip_proto"] = proto
        if proto in (TCP, UDP):
            name = "tcp" if proto == TCP else "udp"
            fields.update({f"{name}_src": SOURCE_PORT, f"{name}_dst": 80 if proto == TCP else 53})
        elif proto == ICMP:
            fields.update(icmpv4_type=8, icmpv4_code=0)
        elif proto == ICMPV6:
            fields.update(icmpv6_type=128, icmpv6_code=0)
    for name, value in match.items():
        fields[name] = _one_value(value)
    if not toward and _taken_above(rule, fields, rules):
        # An allow-list of the same enforcement takes the subject's own
        # source first (anti-spoofing, a quarantine): what the deny below it
        # stops is a forged one.
        family = "ipv6" if fields["eth_type"] == ETH_IPV6 else "ipv4"
        if f"{family}_src" in fields and f"{family}_src" not in match:
            fields[f"{family}_src"] = FORGED_V6 if family == "ipv6" else FORGED_V4
        if _taken_above(rule, fields, rules):
            return None
    return fields


def _other_traffic(probe: Probe, rules) -> Probe | None:
    """The same packet to another port, where no rule of the enforcement
    stops it: it must pass."""
    for name in ("tcp_dst", "udp_dst"):
        if probe.field(name) is None or probe.rule is None or name not in dict(probe.rule.match):
            continue
        for port in OTHER_PORTS:
            fields = {**dict(probe.fields), name: port}
            packet = {**fields, "in_port": probe.in_port}
            if not any(covers(r.match, packet) for r in rules
                       if r.table_id == pipeline.TABLE_ENFORCE and not r.instructions):
                return Probe(probe.dpid, probe.in_port, tuple(sorted(fields.items())), PASS,
                             None, "its other traffic: " + describe(fields, probe.in_port,
                                                                    None))
    return None


def _taken_above(rule: FlowRule, fields: dict, rules) -> bool:
    return any(other.table_id == rule.table_id and other.priority > rule.priority
               and covers(other.match, fields) for other in rules)


def _global(addresses: tuple[str, ...]) -> str | None:
    plain = [a for a in addresses if "/" not in a]
    return next((a for a in plain if not ipaddress.IPv6Address(a).is_link_local),
                plain[0] if plain else None)


def _one_value(value: MatchValue) -> MatchValue:
    """A masked match's own value stands for all it covers."""
    return value[0] if isinstance(value, tuple) else value


_KNOWN = frozenset({
    "in_port", "eth_src", "eth_dst", "eth_type", "ip_proto", "ipv4_src", "ipv4_dst",
    "ipv6_src", "ipv6_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst", "icmpv4_type",
    "icmpv6_type", "arp_spa", "arp_tpa", "ipv6_nd_target"})


def field_matches(field: str, value, wanted: MatchValue) -> bool:
    """Whether a packet's value for field is what a match wants (exact, or
    (value, mask) for addresses of either kind)."""
    if isinstance(wanted, tuple):
        if field.startswith("eth_"):
            have, address, mask = (int(str(x).replace(":", ""), 16)
                                   for x in (value, *wanted))
            return have & mask == address & mask
        network, netmask = (int(ipaddress.ip_address(x)) for x in wanted)
        return int(ipaddress.ip_address(value)) & netmask == network & netmask
    if field.startswith(("ipv4_", "ipv6_", "arp_")):
        return ipaddress.ip_address(value) == ipaddress.ip_address(wanted)
    if field.startswith("eth_") and isinstance(value, str) and isinstance(wanted, str):
        return value.lower() == wanted.lower()
    return value == wanted


def covers(match, packet: dict) -> bool:
    """Whether a rule with this match takes the packet."""
    return all(field in packet and field_matches(field, packet[field], value)
               for field, value in match)


def describe(fields: dict, in_port: int | None, subject: Subject | None) -> str:
    """In words: "TCP 25 from the subscriber", "UDP from port 53 toward
    the subscriber", "ICMPv6 type 135 from the subscriber"."""
    proto = {TCP: "TCP", UDP: "UDP", ICMP: "ICMP", ICMPV6: "ICMPv6"}.get(
        fields.get("ip_proto", -1), "ARP" if fields.get("eth_type") == ETH_ARP else "IP")
    name = "tcp" if proto == "TCP" else "udp"
    toward = in_port is None
    if proto in ("TCP", "UDP") and toward and fields.get(f"{name}_src") != SOURCE_PORT:
        what = f"{proto} from port {fields[f'{name}_src']}"
    elif proto in ("TCP", "UDP"):
        what = f"{proto} {fields[f'{name}_dst']}"
    elif proto == "ICMPv6":
        what = f"ICMPv6 type {fields.get('icmpv6_type', 128)}"
    else:
        what = proto
    family = " over IPv6" if fields.get("eth_type") == ETH_IPV6 else ""
    way = "toward the subscriber" if in_port is None else "from the subscriber"
    return f"{what}{family} {way}"




PROVEN, FAILED, UNPROVABLE = "proven", "failed", "unprovable"


@dataclasses.dataclass(frozen=True)
class Proof:
    """What the probes of one enforcement on one switch showed."""
    state: str                    # PROVEN, FAILED or UNPROVABLE (nothing to probe there)
    at: float                     # wall-clock time
    reason: str = ""
    shadows: tuple[str, ...] = ()  # rules that took a probe ours must have stopped
    probes: int = 0
    dpid: int = 0
