"""A tiny OpenFlow 1.3 table simulator for unit tests: packet in, verdict out.

Enough of the pipeline semantics for the rules this project writes: highest
priority match per table, goto_table, output, controller, and an empty
instruction list meaning drop. A packet is a dict of OXM field -> value; a rule
field the packet lacks (tcp_dst on an ICMP packet, say) does not match.
"""
from __future__ import annotations

import dataclasses
import ipaddress

from enforcement.domain.flows import (
    IN_PORT,
    VLAN_PRESENT,
    ApplyMeter,
    FlowRule,
    GotoTable,
    Output,
    PopVlan,
    PushVlan,
    ToController,
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str  # "dropped", "output", "controller"
    port: int | None = None  # the first port it leaves on
    rule: FlowRule | None = None
    meters: tuple[int, ...] = ()  # meters the packet went through
    vlan: int | None = None  # the VLAN id the packet leaves with
    ports: tuple[int, ...] = ()  # every port it leaves on (a flood), in_port excluded
    copied: bool = False  # a copy went to the controller on the way

    @property
    def forwarded(self) -> bool:
        return self.outcome == "output"

    @property
    def enforcement_meters(self) -> tuple[int, ...]:
        from enforcement.domain.pipeline import is_enforcement_meter
        return tuple(m for m in self.meters if is_enforcement_meter(m))


def _field_matches(field: str, value, wanted) -> bool:
    if isinstance(wanted, tuple) and field.startswith("eth_"):  # (MAC, mask)
        value_, address, mask = (int(str(x).replace(":", ""), 16) for x in (value, *wanted))
        return value_ & mask == address & mask
    if isinstance(wanted, tuple):  # (address, mask) for address fields, either family
        address, mask = (ipaddress.ip_address(x) for x in wanted)
        return int(ipaddress.ip_address(value)) & int(mask) == int(address)
    if field.startswith("ipv6_"):
        return ipaddress.ip_address(value) == ipaddress.ip_address(wanted)  # IPv6 text forms
    return value == wanted


def _matches(rule: FlowRule, packet: dict) -> bool:
    return all(field in packet and _field_matches(field, packet[field], value)
               for field, value in rule.match)


def simulate(rules, dpid: int, packet: dict) -> Verdict:
    """A packet with "vlan_vid" set (to VLAN_PRESENT | id) arrives tagged.
    Actions of every table run in turn (a copy to the controller goes on to
    the next table); outputs to the in_port are skipped, as Open vSwitch
    does, unless sent to IN_PORT."""
    packet = dict(packet)
    table = 0
    meters: list[int] = []
    ports: list[int] = []
    copied = False
    last = None

    def ending(rule):
        vlan = packet["vlan_vid"] & ~VLAN_PRESENT if "vlan_vid" in packet else None
        if ports:
            return Verdict("output", ports[0], rule, tuple(meters), vlan, tuple(ports), copied)
        if copied:
            return Verdict("controller", None, rule, tuple(meters), vlan, (), True)
        return Verdict("dropped", None, rule, tuple(meters))

    for _ in range(255):
        candidates = [r for r in rules if r.dpid == dpid and r.table_id == table
                      and _matches(r, packet)]
        if not candidates:
            # OpenFlow 1.3 table miss without a flow
            return ending(last)
        best = max(candidates, key=lambda r: r.priority)
        # Equal-priority overlaps are undefined in OpenFlow unless they agree.
        ties = [r for r in candidates if r.priority == best.priority
                and r.instructions != best.instructions]
        assert not ties, f"ambiguous overlap in table {table}: {best} vs {ties}"
        last = best
        goto = next((i for i in best.instructions if isinstance(i, GotoTable)), None)
        meters += [i.meter_id for i in best.instructions if isinstance(i, ApplyMeter)]
        for item in best.instructions:
            if isinstance(item, PushVlan):
                packet["vlan_vid"] = VLAN_PRESENT | item.vid
            elif isinstance(item, PopVlan):
                packet.pop("vlan_vid", None)
            elif isinstance(item, Output) and item.port == IN_PORT:
                ports.append(packet["in_port"])
            elif isinstance(item, Output) and item.port != packet.get("in_port"):
                ports.append(item.port)
            elif isinstance(item, ToController):
                copied = True
        if goto is None:
            return ending(best)
        assert goto.table_id > table, "goto_table must move forward"
        table = goto.table_id
    raise AssertionError("pipeline loop")


def hosts_reached(view, start: int, host_port: int) -> dict[int, int]:
    """Follows one broadcast from the host on `start` (every host on its
    switch's port host_port) the way the controller floods it
    (controller/topology/graph.py); returns the copies each host got. Fails on a
    storm."""
    from controller.topology.graph import accepts_broadcast, flood_ports, spanning_tree
    from enforcement.domain.routing import switch_graph
    tree = spanning_tree(switch_graph(view))
    peer = {(link.src_dpid, link.src_port): (link.dst_dpid, link.dst_port)
            for link in view.links}
    ports = {s.dpid: {p for p, _ in s.ports} for s in view.switches}
    copies: dict[int, int] = {}
    queue, steps = [(start, host_port)], 0
    while queue:
        steps += 1
        assert steps < 10_000, "broadcast storm"
        dpid, in_port = queue.pop()
        if not accepts_broadcast(view, dpid, in_port, tree):
            continue
        for port in flood_ports(view, dpid, ports[dpid], tree) - {in_port}:
            if (dpid, port) in peer:
                queue.append(peer[(dpid, port)])
            elif port == host_port:
                copies[dpid] = copies.get(dpid, 0) + 1
    return copies
