"""The data plane every managed switch holds, as FlowRules and meters.

Pure: a switch's ports as the controller classifies them, the located hosts
and the budgets in; the rules out. The invariant it keeps: **a switch
forwards and floods on its own**. Nothing a host sends waits for the
controller: known hosts are forwarded by flows installed ahead of traffic
(no timeouts, so they outlive a dead controller), broadcast and unknown
unicast are flooded by the switch along the spanning tree, and the
controller only gets *copies* of what it must learn from, through a meter
per access port and a switch-wide cap. One subscriber can therefore fill
only its own budgets.

Tables (enforcement/domain/pipeline.py):

  2 learn      LLDP, from any port: to the controller and no further
               (link discovery: controller/topology/lldp/discovery.py), from an access port
               through its learning meter. Here, not in table 0, so that
               what a cutoff or quarantine drops never reaches discovery,
               and a subscriber's LLDP costs only its port's copy budget.
               (port, MAC) known: on. A source never seen on the port: a
               copy to the controller through the port's learning meter,
               and on. A claim (ARP naming a sender address, a neighbour
               advertisement, a solicitation from an IPv6 source) that is
               not the known host's own is **held**: copied to the
               controller and not forwarded, until the controller judges it
               (controller/topology/claims.py). Accepted, its flows are installed
               and the frame sent on (a packet-out through the pipeline,
               controller/openflow/fabric.py); refused, it went nowhere: a
               subscriber cannot poison a neighbour's ARP or neighbour
               cache with an address someone else holds. ARP probes
               (sender 0.0.0.0) and duplicate address detection (from ::)
               claim nothing and go on at once.
               Addresses are learned from ARP and neighbour discovery only:
               an IP source address is whatever the sender writes (a
               spoofer would move its victim's address, and its
               enforcements, onto itself). A port under a learning ban or
               at its host limit drops unknown sources instead (known hosts
               keep working). DHCP server replies: copied from the trusted
               ports, dropped on every other access port (dhcpguard.py).
  3 forward    eth_dst of a located host below this switch on the tree
               (its own, or its subtree's: controller/topology/graph.py):
               out of the port toward it. Any other unicast from below
               goes up, toward the root, by one rule; from above, it is
               flooded down. So a switch holds a flow per host under it,
               never one per host of the network.
  4 flood      who may flood: settled access ports, through their
               storm-control meter; links on the spanning tree. Nothing
               else floods (off-tree links, ports still settling). At the
               root, unknown unicast from a link is also sent back down
               the link it came from: it climbed because no switch below
               knew it, and its owner may sit in that very branch.
  5 flood out  the flood set, less the ports an enforcement closes at egress
               (a cutoff: everything; a quarantine: all but ARP asking for
               the subscriber's own IPv4 address and neighbour
               solicitations for its own IPv6 addresses, so the walled
               garden can find it in both families).

Open vSwitch never sends a packet back out of its in_port with a plain
output action, so one flood list serves every in_port.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping

from controller.openflow import dhcpguard, macprefix
from enforcement.domain import pipeline
from enforcement.domain.flows import (
    IN_PORT,
    ApplyMeter,
    FlowRule,
    GotoTable,
    MatchValue,
    MeterSpec,
    Output,
    ToController,
)
from enforcement.domain.model import HostView
from enforcement.domain.probes import PROBE_MAC

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ETH_TYPE_LLDP = 0x88CC
ICMPV6 = 58
ND_SOLICIT, ND_ADVERT = 135, 136
# eth_dst with the group bit clear: unicast; set: broadcast and multicast.
UNICAST = ("00:00:00:00:00:00", "01:00:00:00:00:00")
GROUP = ("01:00:00:00:00:00", "01:00:00:00:00:00")

# Table 2 (learn)
PRIORITY_PROBE_CATCH = 4000   # a probe past the enforcement tables: back, no further
PROBE_PPS = 100               # the catch rules' switch-wide meter
PRIORITY_LLDP_ACCESS = 410    # LLDP from an access port: metered copy, no further
PRIORITY_LLDP = 400           # LLDP from any other port: to the controller, no further
PRIORITY_HOST_KNOWN = 300     # ARP or ND from a known port, MAC and address
# Between a known host's own addresses and the rest of its traffic, one set
# per port serves every source on it, known or not (a few flows per port,
# not per host); a port closed for learning drops unknown sources, so there
# each known host has its own.
PRIORITY_PORT_PROBE = 250     # ARP probe, duplicate address detection: copy, and on
PRIORITY_PORT_HOLD = 200      # ARP or ND claiming another address: held
PRIORITY_HOST_PROBE = 250     # the same, per known host on a closed port
PRIORITY_HOST_NEW_IP = 200
PRIORITY_HOST_OTHER = 100     # anything else from a known port and MAC
PRIORITY_PORT_LEARN = 20      # an unknown source on an access port
# Table 3 (forward), subscriber isolation: above everything else there
PRIORITY_ISOLATION_GROUP = 3000   # broadcast and multicast from below: up, or to the provider
PRIORITY_ISOLATION_COVER = 2000   # at the gateway: unicast from below to no provider host
# Table 3 (forward): under the located hosts (pipeline.PRIORITY_LEARNED)
PRIORITY_FROM_ABOVE = 5       # from the root's side: what no entry took floods down
PRIORITY_UP = 4               # any other unicast: toward the root
# Table 4 (flood)
PRIORITY_FLOOD_BACK = 21      # the root: unknown unicast from a link, back down it too
PRIORITY_FLOOD_IN = 20
# Table 5 (flood out)
PRIORITY_FLOOD_ARP_EXCEPTION = 100
PRIORITY_FLOOD_ALL = 10


# What claims an address (held until judged), and what claims nothing
# although it looks alike (an ARP probe, duplicate address detection).
_ND = (("eth_type", ETH_TYPE_IPV6), ("ip_proto", ICMPV6))
_CLAIMS: tuple[tuple[tuple[str, MatchValue], ...], ...] = (
    (("eth_type", ETH_TYPE_ARP),),
    (*_ND, ("icmpv6_type", ND_SOLICIT)),
    (*_ND, ("icmpv6_type", ND_ADVERT)))
_PROBES: tuple[tuple[tuple[str, MatchValue], ...], ...] = (
    (("eth_type", ETH_TYPE_ARP), ("arp_spa", "0.0.0.0")),
    (("eth_type", ETH_TYPE_IPV6), ("ipv6_src", "::"), ("ip_proto", ICMPV6),
     ("icmpv6_type", ND_SOLICIT)))


def is_held(is_arp: bool, arp_sender: str | None, nd_type: int | None,
            nd_source: str | None) -> bool:
    """Whether the switch held a copied frame until its claim is judged
    (the rules above): ARP naming a unicast sender address (arp_sender:
    None for 0.0.0.0 and other non-unicast ones), any neighbour
    advertisement, a neighbour solicitation from an address."""
    if is_arp:
        return arp_sender is not None
    if nd_type == ND_ADVERT:
        return True
    return nd_type == ND_SOLICIT and nd_source not in (None, "::")


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Packets per second (and bursts, in packets) a port or a switch may
    cost the control plane, and the learning limits. The defaults sit far
    above what ARP, DHCP and a household's devices need, and far below what
    one host with a raw socket can send."""
    learn_pps: int = 50
    learn_burst: int = 50
    storm_pps: int = 200
    storm_burst: int = 200
    controller_pps: int = 1000
    controller_burst: int = 1000
    max_hosts: int = 32          # per access port
    churn_macs: int = 10         # new MACs on a port within churn_seconds ...
    churn_seconds: float = 10.0
    ban_seconds: float = 30.0    # ... ban learning there this long

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"{field.name} must be positive")


@dataclasses.dataclass(frozen=True)
class Ports:
    """A switch's ports as the data plane treats them.

    access:  settled ports with no switch behind them: they learn, flood
             through storm control and receive floods;
    tree:    ports of links on the spanning tree: they flood and receive
             floods; every other port (an off-tree link, a port still
             settling, an old uplink whose link is not seen now) neither;
    up:      the tree port toward the root; None at a root;
    isolated: subscriber isolation (split horizon) is on: what comes from
             below goes up by its port alone, never to another subscriber;
    gateway: this switch is the configured gateway (the root, where the
             provider's side attaches: its access ports are that side);
    provider: at the gateway, the MACs located on the provider's side.
    closed_learning: access ports under a learning ban or at their host
             limit: unknown sources there are dropped, not copied;
    egress:  access ports an enforcement closes, each with the addresses
             that may still be asked for on it (a quarantine: ARP for its
             IPv4 address, solicitations for its IPv6 ones); none for
             nothing at all (a cutoff).
    """
    access: frozenset[int] = frozenset()
    tree: frozenset[int] = frozenset()
    closed_learning: frozenset[int] = frozenset()
    egress: Mapping[int, tuple[MatchValue, ...]] = dataclasses.field(default_factory=dict)
    up: int | None = None
    isolated: bool = False
    gateway: bool = False
    provider: frozenset[str] = frozenset()

    def key(self) -> tuple:
        return (self.access, self.tree, self.closed_learning, self.up, self.isolated,
                self.gateway, self.provider,
                tuple(sorted(self.egress.items(), key=lambda kv: kv[0])))


def learn_meter(port: int) -> int:
    return pipeline.METER_LEARN_BASE + port


def storm_meter(port: int) -> int:
    return pipeline.METER_STORM_BASE + port


def meter_port(meter_id: int) -> tuple[str, int] | None:
    """("learn" | "storm", port) for a data-plane port meter, else None."""
    if pipeline.METER_STORM_BASE <= meter_id < pipeline.METER_CONTROLLER:
        return "storm", meter_id - pipeline.METER_STORM_BASE
    if pipeline.METER_LEARN_BASE <= meter_id < pipeline.METER_STORM_BASE \
            and meter_id != pipeline.METER_PROBE:
        return "learn", meter_id - pipeline.METER_LEARN_BASE
    return None


def switch_rules(dpid: int, ports: Ports, budgets: Budgets,
                 dhcp_trusted: frozenset[int] = frozenset(),
                 ) -> tuple[tuple[FlowRule, ...], tuple[MeterSpec, ...]]:
    """Everything on the switch that is not about one host. dhcp_trusted:
    its ports with a DHCP server behind them (controller/openflow/dhcpguard.py)."""
    base = pipeline.COOKIE_BASE
    fwd = pipeline.COOKIE_FORWARD
    miss = pipeline.PRIORITY_TABLE_MISS
    rules = [
        FlowRule(dpid, pipeline.TABLE_ENFORCE, miss, base, (),
                 (GotoTable(pipeline.TABLE_METER),)),
        FlowRule(dpid, pipeline.TABLE_METER, miss, base, (),
                 (GotoTable(pipeline.TABLE_LEARN),)),
        # Links, old uplinks, settling ports: no learning there.
        FlowRule(dpid, pipeline.TABLE_LEARN, miss, fwd, (),
                 (GotoTable(pipeline.TABLE_FORWARD),)),
        # Links and settling ports (the controller meter caps the switch).
        # LLDP is never forwarded: it describes one cable.
        FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_LLDP, fwd,
                 (("eth_type", ETH_TYPE_LLDP),), (ToController(),)),
        FlowRule(dpid, pipeline.TABLE_FORWARD, miss, fwd, (),
                 (GotoTable(pipeline.TABLE_FLOOD),)),
        # Table 4's miss: no flow, so OpenFlow 1.3 drops (nothing goes to
        # the controller packet by packet).
    ]
    # A probe (enforcement/domain/probes.py) that got past the enforcement
    # tables goes back to the controller and nowhere else, whichever port
    # it was sent as from.
    caught = (ApplyMeter(pipeline.METER_PROBE), ToController())
    rules += [FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_PROBE_CATCH, fwd,
                       ((side, PROBE_MAC),), caught) for side in ("eth_dst", "eth_src")]
    meters = [MeterSpec(dpid, pipeline.METER_CONTROLLER, "pktps", budgets.controller_pps,
                        budgets.controller_burst),
              MeterSpec(dpid, pipeline.METER_PROBE, "pktps", PROBE_PPS, PROBE_PPS)]
    for port in sorted(ports.access):
        match = (("in_port", port),)
        # Counted and refused there when forged; never a link on its own.
        rules.append(FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_LLDP_ACCESS, fwd,
                              (*match, ("eth_type", ETH_TYPE_LLDP)),
                              (ApplyMeter(learn_meter(port)), ToController())))
        if port in ports.closed_learning:
            rules.append(FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_PORT_LEARN, fwd, match))
        else:
            copy = (ApplyMeter(learn_meter(port)), ToController())
            on = (*copy, GotoTable(pipeline.TABLE_FORWARD))
            rules.append(FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_PORT_LEARN, fwd, match,
                                  on))
            rules += [FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_PORT_HOLD, fwd,
                               (*match, *claim), copy) for claim in _CLAIMS]
            rules += [FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_PORT_PROBE, fwd,
                               (*match, *probe), on) for probe in _PROBES]
        if not (ports.isolated and not ports.gateway):
            # (Under isolation below the gateway a subscriber floods nothing:
            # table 3 sends all it sends up, broadcast through this meter.)
            rules.append(FlowRule(dpid, pipeline.TABLE_FLOOD, PRIORITY_FLOOD_IN, fwd, match,
                                  (ApplyMeter(storm_meter(port)),
                                   GotoTable(pipeline.TABLE_FLOOD_OUT))))
        meters += [MeterSpec(dpid, learn_meter(port), "pktps", budgets.learn_pps,
                             budgets.learn_burst),
                   MeterSpec(dpid, storm_meter(port), "pktps", budgets.storm_pps,
                             budgets.storm_burst)]
    for port in sorted(ports.tree):
        rules.append(FlowRule(dpid, pipeline.TABLE_FLOOD, PRIORITY_FLOOD_IN, fwd,
                              (("in_port", port),), (GotoTable(pipeline.TABLE_FLOOD_OUT),)))
    rules += _isolation(dpid, ports) if ports.isolated else _toward_root(dpid, ports)
    rules += dhcpguard.dhcp_rules(dpid, ports.access, dhcp_trusted)
    targets = (ports.access | ports.tree) - set(ports.egress)
    rules.append(FlowRule(dpid, pipeline.TABLE_FLOOD_OUT, PRIORITY_FLOOD_ALL, fwd, (),
                          tuple(Output(p) for p in sorted(targets))))
    for port, addresses in sorted(ports.egress.items()):
        if port not in ports.access:
            continue
        for address in addresses:
            text = address[0] if isinstance(address, tuple) else address
            asked = ((("eth_type", ETH_TYPE_IPV6), ("ip_proto", ICMPV6),
                      ("icmpv6_type", ND_SOLICIT), ("ipv6_nd_target", address))
                     if ":" in str(text) else
                     (("eth_type", ETH_TYPE_ARP), ("arp_tpa", address)))
            rules.append(FlowRule(
                dpid, pipeline.TABLE_FLOOD_OUT, PRIORITY_FLOOD_ARP_EXCEPTION, fwd, asked,
                tuple(Output(p) for p in sorted(targets | {port}))))
    return tuple(rules), tuple(meters)


def _toward_root(dpid: int, ports: Ports) -> list[FlowRule]:
    """Unicast a switch has no entry for: up, or down again (table 3's docs)."""
    fwd = pipeline.COOKIE_FORWARD
    if ports.up is not None and ports.up in ports.tree:
        return [FlowRule(dpid, pipeline.TABLE_FORWARD, PRIORITY_FROM_ABOVE, fwd,
                         (("in_port", ports.up),), (GotoTable(pipeline.TABLE_FLOOD),)),
                FlowRule(dpid, pipeline.TABLE_FORWARD, PRIORITY_UP, fwd,
                         (("eth_dst", UNICAST),), (Output(ports.up),))]
    if ports.up is None:
        return [FlowRule(dpid, pipeline.TABLE_FLOOD, PRIORITY_FLOOD_BACK, fwd,
                         (("in_port", port), ("eth_dst", UNICAST)),
                         (Output(IN_PORT), GotoTable(pipeline.TABLE_FLOOD_OUT)))
                for port in sorted(ports.tree)]
    return []  # its way up is not live: floods, as before the tree knew it


def _isolation(dpid: int, ports: Ports) -> list[FlowRule]:
    """Split horizon (ISP access): below the gateway, anything from a port
    other than the way up goes up, by its in_port alone (broadcast through
    the port's storm-control meter), so a subscriber reaches no other
    subscriber and no destination it writes decides anything in the switch;
    what comes from above is looked up and delivered. At the gateway, what
    comes from below reaches the provider's hosts only: broadcast to the
    provider's ports, unicast to a provider MAC, the rest dropped by prefix
    (macprefix.py: a cached flow per prefix, not per frame)."""
    fwd, forward = pipeline.COOKIE_FORWARD, pipeline.TABLE_FORWARD
    if ports.gateway:
        rules = []
        provider = tuple(Output(p) for p in sorted(ports.access))
        for port in sorted(ports.tree):
            rules.append(FlowRule(dpid, forward, PRIORITY_ISOLATION_GROUP, fwd,
                                  (("in_port", port), ("eth_dst", GROUP)), provider))
            for value, mask, length in macprefix.complement(ports.provider):
                # Whole fields are written plainly: the switch reads them
                # back so, and the audit compares what it reads.
                dst = (() if length == 0 else (("eth_dst", value),) if length == 48
                       else (("eth_dst", (value, mask)),))
                rules.append(FlowRule(dpid, forward, PRIORITY_ISOLATION_COVER - length, fwd,
                                      (("in_port", port), *dst)))
        return rules
    if ports.up is None or ports.up not in ports.tree:
        return [FlowRule(dpid, forward, PRIORITY_UP, fwd, ())]  # no way up: nowhere
    return [*(FlowRule(dpid, forward, PRIORITY_ISOLATION_GROUP, fwd,
                       (("in_port", port), ("eth_dst", GROUP)),
                       (ApplyMeter(storm_meter(port)), Output(ports.up)))
              for port in sorted(ports.access)),
            FlowRule(dpid, forward, PRIORITY_FROM_ABOVE, fwd,
                     (("in_port", ports.up),), (GotoTable(pipeline.TABLE_FLOOD),)),
            FlowRule(dpid, forward, PRIORITY_UP, fwd, (), (Output(ports.up),))]


def legacy_rules(dpid: int) -> tuple[FlowRule, ...]:
    """Flows earlier versions left on a switch that must go: OS-Ken's LLDP
    rule (table 0, above every enforcement, cookie 0)."""
    return (FlowRule(dpid, pipeline.TABLE_ENFORCE, 0xFFFF, 0,
                     (("eth_type", ETH_TYPE_LLDP), ("eth_dst", "01:80:c2:00:00:0e"))),)


def host_rules(dpid: int, host: HostView, out_port: int | None,
               learns: bool, from_port: int | None = None,
               port_open: bool = True) -> tuple[FlowRule, ...]:
    """A located host's flows on switch dpid: toward it (out_port: the port
    toward it from here, None when unreachable; from_port: only for what
    arrives there, under subscriber isolation the way down), and, on its own
    switch (learns: its port is an access port there, with its learning
    meter), its known-source flows. Their cookie carries its address.
    port_open: its port learns (not closed), so the port's own probe and
    hold rules serve it too."""
    rules = []
    if out_port is not None:
        came = (("in_port", from_port),) if from_port is not None else ()
        rules.append(FlowRule(dpid, pipeline.TABLE_FORWARD, pipeline.PRIORITY_LEARNED,
                              pipeline.COOKIE_FORWARD, (*came, ("eth_dst", host.mac)),
                              (Output(out_port),)))
    if learns and host.dpid == dpid:
        ip = int(ipaddress.IPv4Address(host.ip)) if host.ip else 0
        cookie = pipeline.host_cookie(ip)
        src = (("in_port", host.port), ("eth_src", host.mac))
        on = (GotoTable(pipeline.TABLE_FORWARD),)
        copy = (ApplyMeter(learn_meter(host.port)), ToController(), *on)
        if host.ip:
            rules.append(FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_KNOWN, cookie,
                                  (*src, ("eth_type", ETH_TYPE_ARP), ("arp_spa", host.ip)),
                                  on))
        nd = (*src, ("eth_type", ETH_TYPE_IPV6), ("ip_proto", ICMPV6))
        for address in host.ipv6:
            if "/" in address:
                continue  # an inventory prefix: its addresses are learned one by one
            rules += [
                FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_KNOWN, cookie,
                         (*nd, ("icmpv6_type", ND_SOLICIT), ("ipv6_src", address)), on),
                FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_KNOWN, cookie,
                         (*nd, ("icmpv6_type", ND_ADVERT), ("ipv6_nd_target", address)),
                         on)]
        held = (ApplyMeter(learn_meter(host.port)), ToController())
        if not port_open:
            rules += [
                # Claims nothing: an ARP probe goes on; duplicate address
                # detection goes on, copied (the address it checks is learned
                # first come, first served: controller/topology/state.py).
                FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_PROBE, cookie,
                         (*src, *_PROBES[0]), on),
                FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_PROBE, cookie,
                         (*src, *_PROBES[1]), copy),
                *(FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_NEW_IP, cookie,
                           (*src, *claim), held) for claim in _CLAIMS)]
        rules.append(FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_HOST_OTHER, cookie, src,
                              on))
    return tuple(rules)


def hosts_from_rules(dpid: int, rules: Iterable[FlowRule]) -> list[HostView]:
    """The hosts a switch's known-source flows describe (what a restarted
    controller reads back): MAC and port from the match, IPv4 address from
    the cookie, IPv6 addresses from the known advertisements' targets."""
    found: dict[str, HostView] = {}
    ipv6: dict[str, list[str]] = {}
    for rule in rules:
        if pipeline.namespace_of(rule.cookie) != pipeline.NS_HOST:
            continue
        match = dict(rule.match)
        if rule.priority == PRIORITY_HOST_KNOWN and "ipv6_nd_target" in match:
            ipv6.setdefault(str(match["eth_src"]), []).append(str(match["ipv6_nd_target"]))
        if rule.priority != PRIORITY_HOST_OTHER:
            continue
        serial = rule.cookie & pipeline.COOKIE_SERIAL_MASK
        ip = str(ipaddress.IPv4Address(serial)) if serial else None
        mac = str(match["eth_src"])
        found[mac] = HostView(mac, ip, dpid, int(match["in_port"]))
    return sorted((dataclasses.replace(h, ipv6=tuple(sorted(ipv6.get(h.mac, ()))))
                   for h in found.values()), key=lambda h: (h.port, h.mac))


def host_of_rule(rule: FlowRule) -> str | None:
    """The MAC a data-plane rule is about (the part it belongs to), if any."""
    for name, value in rule.match:
        if name in ("eth_src", "eth_dst") and isinstance(value, str):
            return value
    return None


def tree_ports_of(rules: Iterable[FlowRule]) -> set[int]:
    """The ports a switch's data-plane flows (switch_rules) treat as tree
    links: they flood without a storm meter, or lead up."""
    found = set()
    for rule in rules:
        match = dict(rule.match)
        if set(match) != {"in_port"}:
            continue
        if (rule.table_id == pipeline.TABLE_FLOOD and rule.priority == PRIORITY_FLOOD_IN
                and rule.instructions == (GotoTable(pipeline.TABLE_FLOOD_OUT),)) or (
                rule.table_id == pipeline.TABLE_FORWARD and rule.priority == PRIORITY_FROM_ABOVE):
            found.add(int(match["in_port"]))
    return found


def egress_closures(rules: Iterable[FlowRule]) -> dict[int, tuple[MatchValue, ...]]:
    """Access ports an enforcement closes at egress, read from its rules
    (enforcement/domain/planner.py): a cutoff's or a quarantine's drop of the whole
    port; a quarantine leaves open the asking for the addresses it lets the
    subscriber answer for (its ARP, its own neighbour advertisements)."""
    cut: set[int] = set()
    quarantined: set[int] = set()
    answers: dict[int, set[MatchValue]] = {}
    for rule in rules:
        if rule.table_id != pipeline.TABLE_ENFORCE:
            continue
        match = dict(rule.match)
        port = int(match.get("in_port", 0))
        if (rule.priority in (pipeline.PRIORITY_CUTOFF, pipeline.PRIORITY_QUARANTINE_DENY)
                and not rule.instructions and set(match) == {"in_port"}):
            (cut if rule.priority == pipeline.PRIORITY_CUTOFF else quarantined).add(port)
        elif rule.priority == pipeline.PRIORITY_QUARANTINE_ALLOW and "in_port" in match:
            if match.get("eth_type") == ETH_TYPE_ARP and isinstance(match.get("arp_spa"), str):
                answers.setdefault(port, set()).add(match["arp_spa"])
            elif match.get("icmpv6_type") == ND_ADVERT and "ipv6_nd_target" in match:
                answers.setdefault(port, set()).add(match["ipv6_nd_target"])
    return {port: () if port in cut else tuple(sorted(answers.get(port, ()), key=str))
            for port in cut | quarantined}


def is_closing_rule(rule: FlowRule) -> bool:
    """Whether a rule can change egress_closures (cheap: checked per change)."""
    return rule.table_id == pipeline.TABLE_ENFORCE and rule.priority in (
        pipeline.PRIORITY_CUTOFF, pipeline.PRIORITY_QUARANTINE_DENY,
        pipeline.PRIORITY_QUARANTINE_ALLOW)
