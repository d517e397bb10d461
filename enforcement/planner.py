"""Turns a decision and the subscriber's location into the narrowest rules.

Pure: no switch, no clock, no store. Every rule is placed on the subscriber's
access switch only and matches the subscriber's port and address, so no other
subscriber and no other traffic of the same subscriber is touched.
"""
from __future__ import annotations

from collections.abc import Callable

from enforcement import pipeline
from enforcement.errors import Unimplemented
from enforcement.flows import FlowRule
from enforcement.model import Action, ActionKind, Decision, Location, Violation

ETH_TYPE_IPV4 = 0x0800
IP_PROTO_TCP = 6
SMTP_PORT = 25

Plan = tuple[Action, tuple[FlowRule, ...]]


def _block_smtp_from_subscriber(decision: Decision, where: Location,
                                cookie: int) -> Plan:
    ip = str(decision.subscriber.ip)
    rule = FlowRule(
        dpid=where.dpid,
        table_id=pipeline.TABLE_ENFORCE,
        priority=pipeline.PRIORITY_BLOCK,
        cookie=cookie,
        match=(("in_port", where.port), ("eth_type", ETH_TYPE_IPV4),
               ("ipv4_src", ip), ("ip_proto", IP_PROTO_TCP),
               ("tcp_dst", SMTP_PORT)),
    )
    action = Action(
        ActionKind.BLOCK,
        f"drop TCP to port {SMTP_PORT} from {ip} (submission ports 587 and "
        "465 keep working)")
    return action, (rule,)


_PLANNERS: dict[Violation, Callable[[Decision, Location, int], Plan]] = {
    Violation.SPAM: _block_smtp_from_subscriber,
}


def plan(decision: Decision, where: Location, cookie: int) -> Plan:
    planner = _PLANNERS.get(decision.violation)
    if planner is None:
        supported = ", ".join(v.name for v in _PLANNERS)
        raise Unimplemented(
            f"no enforcement action for {decision.violation.name} yet; "
            f"supported so far: {supported}")
    return planner(decision, where, cookie)
