"""Switch-independent description of OpenFlow 1.3 flows.

The planner produces FlowRules and the controller compiles them into flow_mods;
keeping them as frozen plain data lets tests compare, diff and simulate rules
without a switch. Match field names are OpenFlow 1.3 OXM names as OS-Ken spells
them, so the compiler passes them through unchanged.
"""
from __future__ import annotations

import dataclasses

# Field order used when rendering a match, so that text is stable.
_FIELD_ORDER = (
    "in_port", "eth_src", "eth_dst", "eth_type", "vlan_vid", "arp_spa",
    "arp_tpa", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ip_proto", "tcp_src",
    "tcp_dst", "udp_src", "udp_dst", "icmpv4_type", "icmpv6_type", "ipv6_nd_target",
)
_RANK = {name: i for i, name in enumerate(_FIELD_ORDER)}
# Values are kept as OS-Ken takes them: ints, dotted strings, and
# (address, mask) pairs for masked fields.
_HEX_FIELDS = {"eth_type"}
VLAN_PRESENT = 0x1000  # OFPVID_PRESENT: the vlan_vid match bit for "tagged"
# OFPP_IN_PORT: Output(IN_PORT) sends a packet back where it came from, which
# a plain output to that port never does.
IN_PORT = 0xFFFFFFF8


@dataclasses.dataclass(frozen=True)
class GotoTable:
    table_id: int

    def text(self) -> str:
        return f"goto_table:{self.table_id}"


@dataclasses.dataclass(frozen=True)
class Output:
    port: int

    def text(self) -> str:
        return f"output:{self.port}"


@dataclasses.dataclass(frozen=True)
class ToController:
    def text(self) -> str:
        return "CONTROLLER"


@dataclasses.dataclass(frozen=True)
class ApplyMeter:
    meter_id: int

    def text(self) -> str:
        return f"meter:{self.meter_id}"


@dataclasses.dataclass(frozen=True)
class PushVlan:
    """Tag with a VLAN id (push 802.1Q, then set the id)."""
    vid: int

    def text(self) -> str:
        return f"push_vlan:{self.vid}"


@dataclasses.dataclass(frozen=True)
class PopVlan:
    def text(self) -> str:
        return "pop_vlan"


# A match field's value: a number, a text form (addresses), or (value, mask).
MatchValue = int | str | tuple[int | str, ...]

# Actions (PushVlan, PopVlan, Output, ToController) run in the order listed.
Instruction = GotoTable | Output | ToController | ApplyMeter | PushVlan | PopVlan


@dataclasses.dataclass(frozen=True)
class MeterSpec:
    """An OpenFlow meter with one drop band."""
    dpid: int
    meter_id: int
    unit: str  # "kbps" or "pktps"
    rate: int
    burst: int  # kbit or packets, as unit

    def text(self) -> str:
        return (f"dpid={self.dpid:016x} meter={self.meter_id} "
                f"{self.unit} rate={self.rate} burst={self.burst}")


@dataclasses.dataclass(frozen=True)
class FlowRule:
    """One flow on one switch. No instructions means drop.

    Two rules are equal when they would be the same flow on the switch: match
    fields are kept sorted, and hard_timeout (a backstop for expiry) is not
    part of the identity.
    """
    dpid: int
    table_id: int
    priority: int
    cookie: int
    match: tuple[tuple[str, MatchValue], ...]
    instructions: tuple[Instruction, ...] = ()
    hard_timeout: int = dataclasses.field(default=0, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "match", tuple(sorted(self.match)))

    @property
    def key(self) -> tuple:
        """What identifies the flow on the switch (OpenFlow strict match)."""
        return (self.dpid, self.table_id, self.priority, self.match)

    # Texts are rendered for every answer, audit entry and view: once per
    # rule is enough (a rule never changes).
    def match_text(self) -> tuple[tuple[str, str], ...]:
        cached = self.__dict__.get("_match_text")
        if cached is None:
            ordered = sorted(self.match, key=lambda kv: (_RANK.get(kv[0], 99), kv[0]))
            cached = tuple((name, _value_text(name, value)) for name, value in ordered)
            self.__dict__["_match_text"] = cached
        return cached

    def action_texts(self) -> tuple[str, ...]:
        return tuple(i.text() for i in self.instructions)

    def text(self) -> str:
        cached = self.__dict__.get("_text")
        if cached is None:
            match = ",".join(f"{k}={v}" for k, v in self.match_text())
            actions = ",".join(self.action_texts()) or "drop"
            cached = (f"dpid={self.dpid:016x} table={self.table_id} "
                      f"priority={self.priority} cookie=0x{self.cookie:x} "
                      f"{match or '*'} actions={actions}")
            self.__dict__["_text"] = cached
        return cached


def _value_text(name: str, value) -> str:
    if isinstance(value, tuple):
        return "/".join(str(v) for v in value)
    if name in _HEX_FIELDS:
        return f"0x{value:04x}"
    if name == "vlan_vid" and isinstance(value, int):
        return str(value & ~VLAN_PRESENT)
    return str(value)
