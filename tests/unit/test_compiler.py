from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.openflow import compiler
from enforcement.domain import pipeline
from enforcement.domain.flows import ApplyMeter, FlowRule, GotoTable, Output, ToController

RULE = FlowRule(1, 0, 2000, pipeline.enforcement_cookie(3),
                (("in_port", 1), ("eth_type", 0x0800), ("ipv4_src", "10.0.0.1"),
                 ("ip_proto", 6), ("tcp_dst", 25)))


def test_add_carries_table_priority_cookie_and_match_and_drops():
    mod = compiler.flow_add(RULE)
    assert mod.command == ofp.OFPFC_ADD
    assert (mod.table_id, mod.priority, mod.cookie) == (0, 2000, RULE.cookie)
    assert dict(mod.match.items()) == dict(RULE.match)
    assert mod.instructions == []


def test_delete_is_strict_and_pinned_to_the_cookie():
    mod = compiler.flow_delete(RULE)
    assert mod.command == ofp.OFPFC_DELETE_STRICT
    assert mod.cookie_mask == 0xFFFFFFFFFFFFFFFF
    assert (mod.table_id, mod.priority) == (0, 2000)
    assert dict(mod.match.items()) == dict(RULE.match)


def test_instructions_compile_to_apply_actions_then_goto():
    rule = FlowRule(1, 0, 1, 0, (), (Output(3), ToController(), GotoTable(1)))
    kinds = [type(i).__name__ for i in compiler.flow_add(rule).instructions]
    assert kinds == ["OFPInstructionActions", "OFPInstructionGotoTable"]


def test_meter_goes_before_goto():
    rule = FlowRule(1, 1, 1, 0, (), (GotoTable(2), ApplyMeter(9)))
    kinds = [type(i).__name__ for i in compiler.flow_add(rule).instructions]
    assert kinds == ["OFPInstructionMeter", "OFPInstructionGotoTable"]


def test_errors_are_described_in_openflow_terms():
    text = compiler.describe_error(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ)
    assert text == "OFPET_BAD_MATCH/OFPBMC_BAD_PREREQ"
    assert compiler.describe_error(999, 5) == "type 999/code 5"


def test_rule_text_reads_like_ovs_ofctl():
    assert RULE.text() == (
        "dpid=0000000000000001 table=0 priority=2000 cookie=0x5de0000000000003 "
        "in_port=1,eth_type=0x0800,ipv4_src=10.0.0.1,ip_proto=6,tcp_dst=25 actions=drop")


def test_wire_form_is_byte_for_byte_what_os_ken_serializes():
    """The cached wire form of flow_mods (controller/compiler.Wire) against
    os-ken's own serialization, for drops, meters, VLAN pushes and outputs,
    adds and strict deletes, with cookies and timeouts that differ between
    flows of the same shape."""
    from os_ken.ofproto import ofproto_v1_3 as ofp13
    from os_ken.ofproto import ofproto_v1_3_parser as parser13

    from enforcement.domain.flows import (
        ApplyMeter,
        GotoTable,
        Output,
        PopVlan,
        PushVlan,
        ToController,
    )

    class Datapath:
        ofproto = ofp13
        ofproto_parser = parser13

    shapes = [
        ((("in_port", 1), ("eth_type", 0x800), ("ip_proto", 6), ("ipv4_src", "10.0.0.1"),
          ("tcp_dst", 25)), ()),
        ((("in_port", 3),), (ApplyMeter(8), GotoTable(2))),
        ((("eth_src", "00:00:00:00:00:01"), ("vlan_vid", (0x1000, 0x1000))),
         (PushVlan(10), Output(3), PopVlan(), ToController())),
        ((("eth_type", 0x800), ("ipv4_dst", ("10.0.0.0", "255.255.255.0"))), (Output(2),)),
    ]
    for n, (match, instructions) in enumerate(shapes * 2):
        rule = FlowRule(1 + n % 2, n % 3, 3000 + n, 0x5DE0_0000_0000_0000 | (n + 1), match,
                        instructions, hard_timeout=17 * n)
        for wire, message in ((compiler.flow_add_wire(rule), compiler.flow_add(rule)),
                              (compiler.flow_delete_wire(rule), compiler.flow_delete(rule))):
            message.datapath = Datapath()
            message.set_xid(0x8000_0000 + n)
            message.serialize()
            wire.set_xid(0x8000_0000 + n)
            assert wire.bytes() == bytes(message.buf), rule
