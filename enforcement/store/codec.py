"""Enforcement records <-> plain JSON-able dicts, for the store.

Pure and total: every field of the typed records round-trips, so what the
store gives back after a restart is the very record that was acknowledged.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from enforcement.domain.flows import (
    ApplyMeter,
    FlowRule,
    GotoTable,
    Instruction,
    MeterSpec,
    Output,
    PopVlan,
    PushVlan,
    ToController,
)
from enforcement.domain.model import (
    Action,
    ActionKind,
    ActionSpec,
    Decision,
    Enforcement,
    Escalation,
    Location,
    State,
    Subscriber,
    Violation,
)

_INSTRUCTIONS: dict[type, tuple[str, Callable[[Any], int], Callable[[int], Instruction]]] = {
    GotoTable: ("goto", lambda i: i.table_id, GotoTable),
    Output: ("output", lambda i: i.port, Output),
    ToController: ("controller", lambda i: 1, lambda _: ToController()),
    ApplyMeter: ("meter", lambda i: i.meter_id, ApplyMeter),
    PushVlan: ("push_vlan", lambda i: i.vid, PushVlan),
    PopVlan: ("pop_vlan", lambda i: 1, lambda _: PopVlan()),
}
_BY_NAME = {name: build for name, _, build in _INSTRUCTIONS.values()}


def rule_to_dict(rule: FlowRule) -> dict:
    return {"dpid": rule.dpid, "table": rule.table_id, "priority": rule.priority,
            "cookie": rule.cookie,
            "match": [[k, list(v) if isinstance(v, tuple) else v] for k, v in rule.match],
            "instructions": [[_INSTRUCTIONS[type(i)][0], _INSTRUCTIONS[type(i)][1](i)]
                             for i in rule.instructions]}


def rule_from_dict(d: dict) -> FlowRule:
    return FlowRule(d["dpid"], d["table"], d["priority"], d["cookie"],
                    tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in d["match"]),
                    tuple(_BY_NAME[name](value) for name, value in d["instructions"]))


def _spec_to_dict(spec: ActionSpec | None) -> dict | None:
    if spec is None:
        return None
    return {"kind": spec.kind.value, "protocol": spec.protocol, "ports": list(spec.ports),
            "direction": spec.direction, "to": [str(n) for n in spec.to],
            "except_to": [str(n) for n in spec.except_to], "rate": spec.rate,
            "unit": spec.unit, "burst": spec.burst, "portal": spec.portal}


def _spec_from_dict(d: dict | None) -> ActionSpec | None:
    if d is None:
        return None
    return ActionSpec(kind=ActionKind(d["kind"]), protocol=d["protocol"],
                      ports=tuple(d["ports"]), direction=d["direction"],
                      to=tuple(ipaddress.ip_network(n) for n in d["to"]),
                      except_to=tuple(ipaddress.ip_network(n) for n in d["except_to"]),
                      rate=d["rate"], unit=d["unit"], burst=d["burst"], portal=d["portal"])


def to_dict(e: Enforcement) -> dict:
    d = e.decision
    return {
        "id": e.id,
        "decision": {"request_id": d.request_id, "case_id": d.case_id,
                     "ip": str(d.subscriber.ip), "mac": d.subscriber.mac,
                     "violation": d.violation.value, "reason": d.reason,
                     "scope": str(d.scope) if d.scope else None,
                     "requested_action": _spec_to_dict(d.requested_action),
                     "duration": d.duration, "until": d.until},
        "action": {"kind": e.action.kind.value, "description": e.action.description},
        "location": {"dpid": e.location.dpid, "port": e.location.port, "mac": e.location.mac},
        "escalation": {"step": e.escalation.step, "of_steps": e.escalation.of_steps,
                       "reason": e.escalation.reason, "clause": e.escalation.clause,
                       "next_action": e.escalation.next_action},
        "cookie": e.cookie,
        "rules": [rule_to_dict(r) for r in e.rules],
        "meters": [{"dpid": m.dpid, "id": m.meter_id, "unit": m.unit, "rate": m.rate,
                    "burst": m.burst} for m in e.meters],
        "state": e.state.value, "state_reason": e.state_reason,
        "created_at": e.created_at, "updated_at": e.updated_at, "expires_at": e.expires_at,
        "addresses": list(e.addresses),
        "policy_version": e.policy_version,
        "spec": _spec_to_dict(e.spec),
    }


def from_dict(x: dict) -> Enforcement:
    d = x["decision"]
    decision = Decision(
        request_id=d["request_id"], case_id=d["case_id"],
        subscriber=Subscriber(ipaddress.ip_address(d["ip"]), d["mac"]),
        violation=Violation(d["violation"]), reason=d["reason"],
        scope=ipaddress.IPv4Network(d["scope"]) if d["scope"] else None,
        requested_action=_spec_from_dict(d["requested_action"]),
        duration=d["duration"], until=d["until"])
    return Enforcement(
        id=x["id"], decision=decision,
        action=Action(ActionKind(x["action"]["kind"]), x["action"]["description"]),
        location=Location(x["location"]["dpid"], x["location"]["port"], x["location"]["mac"]),
        escalation=Escalation(**x["escalation"]),
        cookie=x["cookie"],
        rules=tuple(rule_from_dict(r) for r in x["rules"]),
        meters=tuple(MeterSpec(m["dpid"], m["id"], m["unit"], m["rate"], m["burst"])
                     for m in x["meters"]),
        state=State(x["state"]), state_reason=x["state_reason"],
        created_at=x["created_at"], updated_at=x["updated_at"], expires_at=x["expires_at"],
        # Records written before dual stack have none.
        addresses=tuple(x.get("addresses", ())),
        # Records written before policy reloads have none.
        policy_version=x.get("policy_version", ""),
        spec=_spec_from_dict(x.get("spec")))
