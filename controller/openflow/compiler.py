"""FlowRule (plain data) -> OpenFlow 1.3 messages.

Messages are built with datapath=None and bound to a switch only when sent, so
this module is pure and testable without a switch.
"""
from __future__ import annotations

import functools
import struct

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from enforcement.domain.flows import (
    ApplyMeter,
    FlowRule,
    GotoTable,
    MeterSpec,
    Output,
    PopVlan,
    PushVlan,
    ToController,
)
from enforcement.domain.pipeline import COOKIE_NAMESPACE_MASK, COOKIE_NAMESPACE_SHIFT

_ERROR_CODE_PREFIX = {
    ofp.OFPET_HELLO_FAILED: "OFPHFC_",
    ofp.OFPET_BAD_REQUEST: "OFPBRC_",
    ofp.OFPET_BAD_ACTION: "OFPBAC_",
    ofp.OFPET_BAD_INSTRUCTION: "OFPBIC_",
    ofp.OFPET_BAD_MATCH: "OFPBMC_",
    ofp.OFPET_FLOW_MOD_FAILED: "OFPFMFC_",
    ofp.OFPET_GROUP_MOD_FAILED: "OFPGMFC_",
    ofp.OFPET_PORT_MOD_FAILED: "OFPPMFC_",
    ofp.OFPET_TABLE_MOD_FAILED: "OFPTMFC_",
    ofp.OFPET_QUEUE_OP_FAILED: "OFPQOFC_",
    ofp.OFPET_SWITCH_CONFIG_FAILED: "OFPSCFC_",
    ofp.OFPET_ROLE_REQUEST_FAILED: "OFPRRFC_",
    ofp.OFPET_METER_MOD_FAILED: "OFPMMFC_",
    ofp.OFPET_TABLE_FEATURES_FAILED: "OFPTFFC_",
}


def _constant_name(prefix: str, value: int) -> str | None:
    for name in dir(ofp):
        if name.startswith(prefix) and getattr(ofp, name) == value:
            return name
    return None


def describe_error(err_type: int, code: int) -> str:
    """'OFPET_BAD_MATCH/OFPBMC_BAD_PREREQ' style text for an OpenFlow error."""
    type_name = _constant_name("OFPET_", err_type) or f"type {err_type}"
    prefix = _ERROR_CODE_PREFIX.get(err_type)
    code_name = (_constant_name(prefix, code) if prefix else None) or f"code {code}"
    return f"{type_name}/{code_name}"


def _instructions(rule: FlowRule) -> list:
    return _instructions_of(rule.instructions)


def _instructions_of(items) -> list:
    actions, instructions = [], []
    for item in items:
        if isinstance(item, Output):
            actions.append(parser.OFPActionOutput(item.port))
        elif isinstance(item, ToController):
            actions.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER,
                                                  ofp.OFPCML_NO_BUFFER))
        elif isinstance(item, PushVlan):
            actions += [parser.OFPActionPushVlan(0x8100),
                        parser.OFPActionSetField(vlan_vid=ofp.OFPVID_PRESENT | item.vid)]
        elif isinstance(item, PopVlan):
            actions.append(parser.OFPActionPopVlan())
        elif isinstance(item, GotoTable):
            instructions.append(parser.OFPInstructionGotoTable(item.table_id))
        elif isinstance(item, ApplyMeter):
            instructions.append(parser.OFPInstructionMeter(item.meter_id))
        else:
            raise TypeError(f"cannot compile instruction {item!r}")
    if actions:
        instructions.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, actions))
    # OpenFlow 1.3 executes instructions in a fixed order (meter, apply,
    # ..., goto); OVS also wants them listed in that order.
    order = {parser.OFPInstructionMeter: 0, parser.OFPInstructionActions: 1,
             parser.OFPInstructionGotoTable: 2}
    return sorted(instructions, key=lambda i: order[type(i)])


def flow_add(rule: FlowRule) -> parser.OFPFlowMod:
    return parser.OFPFlowMod(
        datapath=None, cookie=rule.cookie, table_id=rule.table_id,
        command=ofp.OFPFC_ADD, priority=rule.priority, hard_timeout=rule.hard_timeout,
        # No CHECK_OVERLAP: an identical flow is replaced, so re-installing
        # the same rule is idempotent.
        match=parser.OFPMatch(**dict(rule.match)),
        instructions=_instructions(rule))


class Wire:
    """A flow_mod already in wire form. os-ken serializes what is intricate
    (the OXM match and the instructions) once per distinct flow; the fixed
    part (cookie, command, timeouts...) is packed per message with os-ken's
    own layout. Compiling 100,000 flows for a reconcile then costs a struct
    pack each instead of building and serializing os-ken objects."""
    __slots__ = ("head", "tail", "xid", "command")

    def __init__(self, head: tuple, tail: bytes, command: int):
        self.head = head        # the values of OFP_FLOW_MOD_PACK_STR0, in order
        self.tail = tail        # match and instructions, serialized
        self.command = command
        self.xid = 0

    def set_xid(self, xid: int) -> None:
        self.xid = xid

    def bytes(self) -> bytes:
        length = ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE + len(self.tail)
        return (_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, length, self.xid)
                + _FIXED.pack(*self.head) + self.tail)


_HEADER = struct.Struct(ofp.OFP_HEADER_PACK_STR)
_FIXED = struct.Struct(ofp.OFP_FLOW_MOD_PACK_STR0)


# The match is serialized once per rule, not once per message: a lift's strict
# delete reuses the bytes its apply's add serialized.
@functools.lru_cache(maxsize=1 << 18)
def _match_wire(match: tuple) -> bytes:
    buf = bytearray()
    parser.OFPMatch(**dict(match)).serialize(buf, 0)  # padded to 8 bytes, as sent
    return bytes(buf)


@functools.lru_cache(maxsize=1 << 12)  # few distinct ones: forward, meter, quarantine...
def _instructions_wire(instructions: tuple) -> bytes:
    buf = bytearray()
    for instruction in _instructions_of(instructions):
        instruction.serialize(buf, len(buf))
    return bytes(buf)


def flow_add_wire(rule: FlowRule) -> Wire:
    """flow_add(rule) in wire form (same bytes)."""
    return Wire((rule.cookie, 0, rule.table_id, ofp.OFPFC_ADD, 0, rule.hard_timeout,
                 rule.priority, ofp.OFP_NO_BUFFER, 0, 0, 0),
                _match_wire(rule.match) + _instructions_wire(rule.instructions),
                ofp.OFPFC_ADD)


def flow_delete_wire(rule: FlowRule) -> Wire:
    """flow_delete(rule) in wire form (same bytes)."""
    return Wire((rule.cookie, 0xFFFF_FFFF_FFFF_FFFF, rule.table_id, ofp.OFPFC_DELETE_STRICT,
                 0, 0, rule.priority, ofp.OFP_NO_BUFFER, ofp.OFPP_ANY, ofp.OFPG_ANY, 0),
                _match_wire(rule.match), ofp.OFPFC_DELETE_STRICT)


def flow_delete(rule: FlowRule) -> parser.OFPFlowMod:
    """Deletes exactly this flow: same table, priority, match and cookie."""
    return parser.OFPFlowMod(
        datapath=None, cookie=rule.cookie, cookie_mask=0xFFFFFFFFFFFFFFFF,
        table_id=rule.table_id, command=ofp.OFPFC_DELETE_STRICT,
        priority=rule.priority, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**dict(rule.match)))


def meter_add(spec: MeterSpec, command: int = ofp.OFPMC_ADD) -> parser.OFPMeterMod:
    unit = {"kbps": ofp.OFPMF_KBPS, "pktps": ofp.OFPMF_PKTPS}[spec.unit]
    return parser.OFPMeterMod(
        datapath=None, command=command, flags=unit | ofp.OFPMF_BURST,
        meter_id=spec.meter_id,
        bands=[parser.OFPMeterBandDrop(rate=spec.rate, burst_size=spec.burst)])


def meter_modify(spec: MeterSpec) -> parser.OFPMeterMod:
    return meter_add(spec, ofp.OFPMC_MODIFY)


def change_messages(change) -> list:
    """An enforcement.domain.desired.Change as messages, in its order (flow_mods in
    wire form)."""
    return [*map(meter_add, change.meters_to_add),
            *map(meter_modify, change.meters_to_modify),
            *map(flow_delete_wire, change.rules_to_delete),
            *map(flow_add_wire, change.rules_to_add),
            *map(meter_delete, change.meters_to_delete)]


def meter_delete(spec: MeterSpec) -> parser.OFPMeterMod:
    return parser.OFPMeterMod(datapath=None, command=ofp.OFPMC_DELETE,
                              meter_id=spec.meter_id)


def flow_stats_request(namespace: int, part: int = 0,
                       parts: int = 1) -> parser.OFPFlowStatsRequest:
    """Every flow, in every table, whose cookie is in a namespace; with
    parts (a power of two), only those whose cookie is part modulo parts."""
    if parts & (parts - 1) or not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}: parts must be a power of two")
    return parser.OFPFlowStatsRequest(
        datapath=None, table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, cookie=(namespace << COOKIE_NAMESPACE_SHIFT) | part,
        cookie_mask=COOKIE_NAMESPACE_MASK | (parts - 1), match=parser.OFPMatch())


def flow_count_request(namespace: int) -> parser.OFPAggregateStatsRequest:
    """How many flows, in every table, have their cookie in a namespace."""
    return parser.OFPAggregateStatsRequest(
        datapath=None, flags=0, table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, cookie=namespace << COOKIE_NAMESPACE_SHIFT,
        cookie_mask=COOKIE_NAMESPACE_MASK, match=parser.OFPMatch())


def table_stats_request(table_id: int) -> parser.OFPFlowStatsRequest:
    """Every flow of one table, whoever put it there."""
    return parser.OFPFlowStatsRequest(
        datapath=None, table_id=table_id, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        cookie=0, cookie_mask=0, match=parser.OFPMatch())


def cookie_stats_request(cookie: int) -> parser.OFPFlowStatsRequest:
    """The flows, in every table, carrying exactly this cookie."""
    return parser.OFPFlowStatsRequest(
        datapath=None, table_id=ofp.OFPTT_ALL, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, cookie=cookie, cookie_mask=0xFFFF_FFFF_FFFF_FFFF,
        match=parser.OFPMatch())


def meter_config_request() -> parser.OFPMeterConfigStatsRequest:
    return parser.OFPMeterConfigStatsRequest(datapath=None, meter_id=ofp.OFPM_ALL)


def rule_from_stats(dpid: int, stats) -> FlowRule:
    """What a switch reports back (OFPFlowStats), as the FlowRule that would
    have produced it, so desired and actual compare directly."""
    meter, actions, goto = [], [], []
    for instruction in stats.instructions:
        if isinstance(instruction, parser.OFPInstructionMeter):
            meter.append(ApplyMeter(instruction.meter_id))
        elif isinstance(instruction, parser.OFPInstructionGotoTable):
            goto.append(GotoTable(instruction.table_id))
        elif isinstance(instruction, parser.OFPInstructionActions):
            for action in instruction.actions:
                if isinstance(action, parser.OFPActionOutput):
                    actions.append(ToController() if action.port == ofp.OFPP_CONTROLLER
                                   else Output(action.port))
                elif isinstance(action, parser.OFPActionPopVlan):
                    actions.append(PopVlan())
                elif (isinstance(action, parser.OFPActionSetField)
                      and action.key == "vlan_vid"):
                    actions.append(PushVlan(action.value & ~ofp.OFPVID_PRESENT))
                # OFPActionPushVlan itself is implied by the vlan_vid set-field.
    return FlowRule(dpid, stats.table_id, stats.priority, stats.cookie,
                    tuple(stats.match.items()), tuple(meter + actions + goto))


def meter_from_stats(dpid: int, stats) -> MeterSpec:
    band = stats.bands[0]
    unit = "pktps" if stats.flags & ofp.OFPMF_PKTPS else "kbps"
    return MeterSpec(dpid, stats.meter_id, unit, band.rate, band.burst_size)


def meter_stats_request() -> parser.OFPMeterStatsRequest:
    """Packets in and dropped per meter, for every meter of the switch."""
    return parser.OFPMeterStatsRequest(datapath=None, meter_id=ofp.OFPM_ALL)


def packet_out(in_port: int | None, data: bytes) -> parser.OFPPacketOut:
    """A frame run through the switch's pipeline from table 0 as if it had
    just arrived on in_port (OpenFlow 1.3, 5.12: output to OFPP_TABLE); None:
    as sent by the controller."""
    port = ofp.OFPP_CONTROLLER if in_port is None else in_port
    return parser.OFPPacketOut(datapath=None, buffer_id=ofp.OFP_NO_BUFFER, in_port=port,
                               actions=[parser.OFPActionOutput(ofp.OFPP_TABLE, 0)],
                               data=data)


def barrier() -> parser.OFPBarrierRequest:
    return parser.OFPBarrierRequest(datapath=None)


def role_request(master: bool, generation_id: int) -> parser.OFPRoleRequest:
    """MASTER or SLAVE at a generation id (the leader's epoch): the switch
    refuses an id older than the newest it has seen (OFPRRFC_STALE), and a
    MASTER request demotes every other master of the switch to SLAVE."""
    role = ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE
    return parser.OFPRoleRequest(datapath=None, role=role,
                                 generation_id=generation_id & 0xFFFF_FFFF_FFFF_FFFF)


def role_query() -> parser.OFPRoleRequest:
    """This connection's role, and the newest generation id the switch has
    seen, changing nothing (OFPCR_ROLE_NOCHANGE)."""
    return parser.OFPRoleRequest(datapath=None, role=ofp.OFPCR_ROLE_NOCHANGE, generation_id=0)


def generation_of(reply) -> int:
    """The generation id in a role reply; 0 when the switch has none yet
    (Open vSwitch then says 2^64-1, which is no generation anybody claimed)."""
    return 0 if reply.generation_id == 0xFFFF_FFFF_FFFF_FFFF else reply.generation_id


def async_config() -> parser.OFPSetAsync:
    """What a connection hears in each role: as a master everything; as a
    slave the packet-in copies (to learn hosts and links from the leader's
    LLDP) and port changes, but no flow removals."""
    packet_ins = (1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (1 << ofp.OFPR_INVALID_TTL)
    ports = (1 << ofp.OFPPR_ADD) | (1 << ofp.OFPPR_DELETE) | (1 << ofp.OFPPR_MODIFY)
    removed = ((1 << ofp.OFPRR_IDLE_TIMEOUT) | (1 << ofp.OFPRR_HARD_TIMEOUT)
               | (1 << ofp.OFPRR_DELETE) | (1 << ofp.OFPRR_GROUP_DELETE))
    return parser.OFPSetAsync(datapath=None, packet_in_mask=[packet_ins, packet_ins],
                              port_status_mask=[ports, ports],
                              flow_removed_mask=[removed, 0])


def is_slave_refusal(err_type: int, code: int) -> bool:
    """The switch refused a change because this connection is not its master."""
    return err_type == ofp.OFPET_BAD_REQUEST and code == ofp.OFPBRC_IS_SLAVE


def is_stale_role(err_type: int, code: int) -> bool:
    return err_type == ofp.OFPET_ROLE_REQUEST_FAILED and code == ofp.OFPRRFC_STALE
