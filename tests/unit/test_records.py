"""An enforcement record is the proposal it carried out plus its own fields,
and its stored form is the one rows were always written in: a row written
before must load, and a record must be written back byte for byte as before."""
import dataclasses
import ipaddress
import json

from enforcement.domain import policy
from enforcement.domain.model import Decision, Enforcement, Proposal, State, Subscriber, Violation
from enforcement.lifecycle.service import EnforcementService
from enforcement.store import codec
from enforcement.store.database import Store
from tests.doubles import RecordingNetwork

# A row as the store held it before Enforcement was made a Proposal carried out.
ROW = (
    '{"id": "enf-b5e41cbc0d88f9a3", "decision": {"request_id": "r1", "case_id": "CASE-1", '
    '"ip": "10.0.0.1", "mac": "00:00:00:00:00:01", "violation": "spam", "reason": '
    '"bulk mail", "scope": null, "requested_action": null, "duration": 60.0, "until": null}, '
    '"action": {"kind": "block", "description": "drop TCP to port 25 from 10.0.0.1"}, '
    '"location": {"dpid": 1, "port": 1, "mac": "00:00:00:00:00:01"}, "escalation": '
    '{"step": 1, "of_steps": 3, "reason": "1st spam violation by 10.0.0.1 within 90 days: '
    'step 1 of 3", "clause": "Courriels ou messages non sollicit\\u00e9s (pourriel, envois '
    'de masse de 100 destinataires et plus)", "next_action": "quarantine 10.0.0.1: only DNS '
    'and the portal answer"}, "cookie": 6764406640310484993, "rules": [{"dpid": 1, "table": '
    '0, "priority": 3000, "cookie": 6764406640310484993, "match": [["eth_src", '
    '"00:00:00:00:00:01"], ["eth_type", 2048], ["in_port", 1], ["ip_proto", 6], ["tcp_dst", '
    '25]], "instructions": []}, {"dpid": 1, "table": 0, "priority": 3000, "cookie": '
    '6764406640310484993, "match": [["eth_src", "00:00:00:00:00:01"], ["eth_type", 34525], '
    '["in_port", 1], ["ip_proto", 6], ["tcp_dst", 25]], "instructions": []}], "meters": [], '
    '"state": "active", "state_reason": "confirmed by the switch", "created_at": '
    '1800000000.0, "updated_at": 1800000000.0, "expires_at": 1800000060.0, "addresses": '
    '["10.0.0.1"], "policy_version": "639268d96bc559e8", "spec": {"kind": "block", '
    '"protocol": "tcp", "ports": [25], "direction": "from_subscriber", "to": [], '
    '"except_to": [], "rate": 0, "unit": "kbps", "burst": 0, "portal": "portal"}}')


def test_a_row_written_before_loads_and_is_written_back_the_same():
    record = codec.from_dict(json.loads(ROW))
    assert isinstance(record, Enforcement)
    assert (record.id, record.state, record.expires_at) == (
        "enf-b5e41cbc0d88f9a3", State.ACTIVE, 1800000060.0)
    assert record.spec is not None and record.spec.ports == (25,)
    assert json.dumps(codec.to_dict(record)) == ROW


def test_a_row_from_before_dual_stack_and_reloads_still_loads():
    row = json.loads(ROW)
    for name in ("addresses", "policy_version", "spec"):
        del row[name]
    record = codec.from_dict(row)
    assert (record.addresses, record.policy_version, record.spec) == ((), "", None)


def test_an_enforcement_carries_out_its_proposal_field_for_field(tmp_path):
    service = EnforcementService(RecordingNetwork(), policy.load(),
                                 Store(f"sqlite:///{tmp_path}/state.db"))
    decision = Decision("r1", "CASE-1", Subscriber(ipaddress.ip_address("10.0.0.1")),
                        Violation.SPAM, "bulk mail")
    proposal = service.plan(decision)
    record = service.apply(decision)
    for field in dataclasses.fields(Proposal):
        assert getattr(record, field.name) == getattr(proposal, field.name), field.name
    assert (record.decision, record.state) == (decision, State.ACTIVE)
    carried = Enforcement.carrying_out(
        proposal, id="enf-1", decision=decision, state=State.PENDING, state_reason="",
        created_at=1.0, updated_at=1.0, rules=())
    assert (carried.rules, carried.cookie, carried.expires_at) == ((), proposal.cookie, None)
