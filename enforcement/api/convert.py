"""Domain records to protobuf messages (and the enum numbers both ways), for
the API's answers and the events and audit entries it streams."""
from __future__ import annotations

from enforcement.domain.hostaddresses import AddressIndex
from enforcement.domain.model import Enforcement, Escalation, Location, Proposal, TopologyView
from enforcement.domain.probes import Proof
from enforcement.v1 import enforcement_pb2 as pb


def enum_to_proto(value, prefix: str) -> int:
    number = _NUMBERS.get((prefix, value))
    if number is None:
        number = _NUMBERS[prefix, value] = pb.DESCRIPTOR.enum_types_by_name[
            prefix].values_by_name[_PROTO_PREFIX[prefix] + value.name].number
    return number


_NUMBERS: dict[tuple, int] = {}  # (prefix, member): its number, looked up once


def enum_from_proto(enum_cls, prefix: str, number: int):
    """Domain member for a proto enum number, None for UNSPECIFIED or unknown."""
    proto_value = pb.DESCRIPTOR.enum_types_by_name[prefix].values_by_number.get(number)
    if proto_value is None:
        return None
    return enum_cls.__members__.get(proto_value.name[len(_PROTO_PREFIX[prefix]):])


_PROTO_PREFIX = {"Violation": "VIOLATION_", "ActionKind": "ACTION_KIND_",
                 "State": "STATE_"}


def _location(where: Location) -> pb.Location:
    return pb.Location(datapath_id=where.dpid, port=where.port, mac=where.mac)


def _escalation(e: Escalation) -> pb.Escalation:
    return pb.Escalation(step=e.step, of_steps=e.of_steps, reason=e.reason,
                         clause=e.clause, next_action=e.next_action)


_RULES_CACHE: dict[int, tuple] = {}


def _rules(rules) -> list[pb.Rule]:
    """The same rules tuple travels with every version of a record (Apply's
    answer, then Lift's): its messages are built once."""
    cached = _RULES_CACHE.get(id(rules))
    if cached is not None and cached[0] is rules:
        return cached[1]
    if len(_RULES_CACHE) > 8192:
        _RULES_CACHE.clear()
    built = _build_rules(rules)
    _RULES_CACHE[id(rules)] = (rules, built)
    return built


def _build_rules(rules) -> list[pb.Rule]:
    # Submessages filled in place: passing built ones as arguments copies
    # each again (a third of the time).
    built = []
    for rule in rules:
        message = pb.Rule(datapath_id=rule.dpid, table_id=rule.table_id,
                          priority=rule.priority, cookie=rule.cookie,
                          actions=rule.action_texts(), text=rule.text())
        add = message.match.add
        for field, value in rule.match_text():
            add(field=field, value=value)
        built.append(message)
    return built


def _meters(meters) -> list[pb.Meter]:
    return [pb.Meter(datapath_id=m.dpid, meter_id=m.meter_id, unit=m.unit, rate=m.rate,
                     burst=m.burst, text=m.text()) for m in meters]


def _action(action) -> pb.Action:
    return pb.Action(
        # protoc's .pyi types enum fields as their class; protobuf takes the numbers
        kind=enum_to_proto(action.kind, "ActionKind"),  # type: ignore[arg-type]
        description=action.description)


def proposal_to_proto(proposal: Proposal) -> pb.Plan:
    return pb.Plan(action=_action(proposal.action), location=_location(proposal.location),
                   escalation=_escalation(proposal.escalation),
                   rules=_rules(proposal.rules), meters=_meters(proposal.meters))


def enforcement_to_proto(record: Enforcement, proof: Proof | None = None) -> pb.Enforcement:
    """Every answer carries one: its submessages are filled in place rather
    than built and then copied in (half the time). proof: its last proof in
    the data plane (enforcement.lifecycle.proving), if one ran."""
    decision = record.decision
    message = pb.Enforcement(
        id=record.id, request_id=decision.request_id, case_id=decision.case_id,
        # protoc's .pyi types enum fields as their class; protobuf takes the numbers
        violation=enum_to_proto(decision.violation, "Violation"),  # type: ignore[arg-type]
        reason=decision.reason,
        state=enum_to_proto(record.state, "State"),  # type: ignore[arg-type]  # as above
        state_reason=record.state_reason, policy_version=record.policy_version)
    subscriber = message.subscriber
    subscriber.ip = str(decision.subscriber.ip)
    subscriber.mac = decision.subscriber.mac or ""
    subscriber.addresses.extend(record.addresses)
    action = message.action
    action.kind = enum_to_proto(record.action.kind, "ActionKind")  # type: ignore[assignment]
    action.description = record.action.description
    location, where = message.location, record.location
    location.datapath_id, location.port, location.mac = where.dpid, where.port, where.mac
    escalation, step = message.escalation, record.escalation
    escalation.step, escalation.of_steps = step.step, step.of_steps
    escalation.reason, escalation.clause = step.reason, step.clause
    escalation.next_action = step.next_action
    message.rules.extend(_rules(record.rules))
    if record.meters:
        message.meters.extend(_meters(record.meters))
    message.created_at.FromNanoseconds(int(record.created_at * 1e9))
    message.updated_at.FromNanoseconds(int(record.updated_at * 1e9))
    if record.expires_at is not None:
        message.expires_at.FromNanoseconds(int(record.expires_at * 1e9))
    if proof is not None:
        shown = message.proof
        shown.state = pb.ProofState.Value("PROOF_STATE_" + proof.state.upper())
        shown.at.FromNanoseconds(int(proof.at * 1e9))
        shown.reason, shown.probes = proof.reason, proof.probes
        shown.shadowing_rules.extend(proof.shadows)
    return message


def event_to_proto(event) -> pb.Event:
    message = pb.Event(
        sequence=event.sequence,
        kind=pb.EventKind.Value("EVENT_KIND_" + event.kind.upper()),
        enforcement_id=event.enforcement_id, case_id=event.case_id,
        subscriber_ip=event.subscriber_ip,
        # A port alarm or an identity event belongs to no enforcement, so it
        # has no state.
        state=(pb.State.Value("STATE_" + event.state.upper()) if event.state
               else pb.STATE_UNSPECIFIED),
        detail=event.detail)
    if event.budget is not None:  # a port alarm: which port, which budget, how far over
        message.datapath_id = event.datapath_id
        message.port = event.port
        message.budget = event.budget
        message.rate = event.rate
        message.limit = event.budget_limit
    if event.identity is not None:  # a refused claim: where from, who, on what, whose
        message.datapath_id = event.datapath_id
        message.port = event.port
        message.identity = event.identity
        message.claimant_mac = event.claimant_mac
        message.claimed = event.claimed
        message.owner = event.owner
    message.at.FromNanoseconds(int(event.at * 1e9))
    return message


def audit_to_proto(entry) -> pb.AuditEntry:
    message = pb.AuditEntry(
        sequence=entry.sequence, actor=entry.actor, call=entry.call,
        outcome=entry.outcome, enforcement_id=entry.enforcement_id,
        case_id=entry.case_id, clause=entry.clause, detail=entry.detail)
    message.at.FromNanoseconds(int(entry.at * 1e9))
    return message


def topology_to_proto(view: TopologyView, enforcements_by_ip: dict[str, list[str]],
                      policy_version: str = "") -> pb.Topology:
    """enforcements_by_ip: active enforcement ids filed by address; a host
    lists those filed under any of its addresses (hostaddresses)."""
    owned = AddressIndex(enforcements_by_ip)
    return pb.Topology(
        switches=[pb.Switch(datapath_id=s.dpid,
                            ports=[pb.Port(number=n, name=name) for n, name in s.ports])
                  for s in view.switches],
        links=[pb.Link(src_datapath_id=link.src_dpid, src_port=link.src_port,
                       dst_datapath_id=link.dst_dpid, dst_port=link.dst_port)
               for link in view.links],
        hosts=[pb.Host(mac=h.mac, ip=h.ip or "", datapath_id=h.dpid, port=h.port,
                       enforcement_ids=owned.of(h.ip, h.ipv6),
                       account=h.account, pinned=h.pinned, ipv6=h.ipv6)
               for h in view.hosts],
        policy_version=policy_version,
    )
