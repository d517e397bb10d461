"""The base pipeline and computed forwarding, as FlowRules.

Every switch gets: the ingress and meter tables fall through to the
forwarding table, which sends unknown destinations to the controller, which
installs the path toward a located host (enforcement/topology.py) or floods
along the spanning tree.
ARP always goes to the controller so host locations stay fresh even after
forwarding flows exist; the controller forwards it.
"""
from __future__ import annotations

from enforcement import pipeline
from enforcement.flows import FlowRule, GotoTable, Output, ToController

ETH_TYPE_ARP = 0x0806
PRIORITY_ARP_TO_CONTROLLER = 200


def base_rules(dpid: int) -> tuple[FlowRule, ...]:
    return (
        FlowRule(dpid, pipeline.TABLE_ENFORCE, pipeline.PRIORITY_TABLE_MISS,
                 pipeline.COOKIE_BASE, (), (GotoTable(pipeline.TABLE_METER),)),
        FlowRule(dpid, pipeline.TABLE_METER, pipeline.PRIORITY_TABLE_MISS,
                 pipeline.COOKIE_BASE, (), (GotoTable(pipeline.TABLE_FORWARD),)),
        FlowRule(dpid, pipeline.TABLE_FORWARD, pipeline.PRIORITY_TABLE_MISS,
                 pipeline.COOKIE_BASE, (), (ToController(),)),
        FlowRule(dpid, pipeline.TABLE_FORWARD, PRIORITY_ARP_TO_CONTROLLER,
                 pipeline.COOKIE_BASE, (("eth_type", ETH_TYPE_ARP),),
                 (ToController(),)),
    )


def learned_rule(dpid: int, mac: str, port: int) -> FlowRule:
    """Toward a host: frames for mac leave this switch on port."""
    return FlowRule(dpid, pipeline.TABLE_FORWARD, pipeline.PRIORITY_LEARNED,
                    pipeline.COOKIE_FORWARD, (("eth_dst", mac),), (Output(port),))
