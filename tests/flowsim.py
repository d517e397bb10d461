"""A tiny OpenFlow 1.3 table simulator for unit tests: packet in, verdict out.

Enough of the pipeline semantics for the rules this project writes: highest
priority match per table, goto_table, output, controller, and an empty
instruction list meaning drop. A packet is a dict of OXM field -> value; a rule
field the packet lacks (tcp_dst on an ICMP packet, say) does not match.
"""
from __future__ import annotations

import dataclasses

from enforcement.flows import FlowRule, GotoTable, Output, ToController


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str  # "dropped", "output", "controller"
    port: int | None = None
    rule: FlowRule | None = None


def _matches(rule: FlowRule, packet: dict) -> bool:
    return all(field in packet and packet[field] == value
               for field, value in rule.match)


def simulate(rules, dpid: int, packet: dict) -> Verdict:
    table = 0
    for _ in range(255):
        candidates = [r for r in rules if r.dpid == dpid and r.table_id == table
                      and _matches(r, packet)]
        if not candidates:
            return Verdict("dropped")  # OpenFlow 1.3 table miss without a flow
        best = max(candidates, key=lambda r: r.priority)
        ties = [r for r in candidates if r.priority == best.priority and r != best]
        assert not ties, f"ambiguous overlap in table {table}: {best} vs {ties}"
        goto = next((i for i in best.instructions if isinstance(i, GotoTable)), None)
        for item in best.instructions:
            if isinstance(item, Output):
                return Verdict("output", item.port, best)
            if isinstance(item, ToController):
                return Verdict("controller", None, best)
        if goto is None:
            return Verdict("dropped", None, best)
        assert goto.table_id > table, "goto_table must move forward"
        table = goto.table_id
    raise AssertionError("pipeline loop")
