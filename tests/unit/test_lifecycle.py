"""The lifecycle against a real SQLite file and a real PostgreSQL server:
durability across restarts, idempotency, expiry, pending decisions, drift
repair, events and audit. The switch side is a recording double; the Mininet
fault tests use real ones."""
import dataclasses
import ipaddress
import json

import pytest

from enforcement.domain.desired import SwitchState
from enforcement.domain.errors import AlreadyExists, FailedPrecondition
from enforcement.domain.model import (
    State,
    Violation,
)
from enforcement.lifecycle.service import EnforcementService
from enforcement.store import codec
from enforcement.store.database import Store
from tests.cases import POLICY, decision
from tests.doubles import Clock, Switches


@pytest.fixture
def world(database_url):
    switches, clock, url = Switches(), Clock(), database_url

    def start():
        return EnforcementService(switches, POLICY, Store(url), clock=clock)
    return switches, clock, start


def test_records_survive_a_restart_exactly(world):
    _, _, start = world
    first = start()
    applied = first.apply(decision(violation=Violation.MALWARE, duration=60.0), actor="me")
    again = start()
    assert again.get(applied.id) == applied
    # the idempotency key survives too, and the next serial does not collide
    assert again.apply(decision(violation=Violation.MALWARE, duration=60.0)) == applied
    other = again.apply(decision("r2", ip="10.0.0.2"))
    assert other.cookie != applied.cookie


def test_codec_round_trips_every_action(world):
    _, _, start = world
    service = start()
    for i, violation in enumerate(Violation):
        record = service.apply(decision(f"r{i}", violation=violation))
        assert codec.from_dict(json.loads(json.dumps(codec.to_dict(record)))) == record


def test_same_request_id_with_other_content_is_refused(world):
    _, _, start = world
    service = start()
    service.apply(decision())
    with pytest.raises(AlreadyExists):
        service.apply(decision(ip="10.0.0.2"))


def test_expiry_lifts_the_rules_and_says_so_also_after_a_restart(world):
    switches, clock, start = world
    service = start()
    short = service.apply(decision(duration=5.0))
    assert short.expires_at == clock.now + 5
    assert all(r.hard_timeout == 5 + 30 for r in short.rules)  # the backstop
    clock.now += 4
    assert service.expire_due() == []
    restarted = start()  # the controller went down in between
    clock.now += 2
    [expired] = restarted.expire_due()
    assert expired.state is State.EXPIRED and switches.rules() == []
    kinds = [e.kind for e in restarted.watch(still_wanted=iter([True, False]).__next__)]
    assert kinds == ["applied", "expired"]


def test_pending_while_the_switch_is_down_then_applied_when_it_connects(world):
    switches, _, start = world
    service = start()
    switches.connected.discard(1)
    pending = service.apply(decision())
    assert pending.state is State.PENDING and switches.rules() == []
    switches.connected.add(1)
    service.resync(1)
    assert service.get(pending.id).state is State.ACTIVE and len(switches.rules()) == 2


def test_lift_while_disconnected_is_stored_and_reconciled_on_reconnect(world):
    switches, _, start = world
    service = start()
    active = service.apply(decision())
    switches.connected.discard(1)
    lifted = service.lift(active.id, "case closed")
    assert lifted.state is State.LIFTED
    assert len(switches.rules()) == 2  # the switch still holds it, unreachable
    switches.connected.add(1)
    service.resync(1)
    assert switches.rules() == []


def test_drift_is_repaired_and_reported(world):
    switches, _, start = world
    service = start()
    active = service.apply(decision())
    switches.held[1] = SwitchState.empty()  # someone ran ovs-ofctl del-flows
    assert service.repair_drift() == 1
    assert switches.rules() == list(active.rules)
    events = list(service.watch(still_wanted=iter([True, False]).__next__))
    assert events[-1].kind == "drift_repaired" and events[-1].enforcement_id == active.id
    assert service.repair_drift() == 0


def test_an_unanswered_switch_is_retried(world):
    switches, _, start = world
    service = start()
    switches.unreachable_once = True
    assert service.apply(decision()).state is State.ACTIVE


def test_watch_resumes_after_a_sequence_and_filters(world):
    _, _, start = world
    service = start()
    a = service.apply(decision("r1", ip="10.0.0.1"))
    service.apply(decision("r2", ip="10.0.0.2"))
    service.lift(a.id, "done")
    once = iter([True, False]).__next__
    everything = list(service.watch(still_wanted=once))
    assert [e.kind for e in everything] == ["applied", "applied", "lifted"]
    later = list(service.watch(after=everything[0].sequence,
                               still_wanted=iter([True, False]).__next__))
    assert [e.sequence for e in later] == [e.sequence for e in everything[1:]]
    mine = list(service.watch(subscriber_ip="10.0.0.1",
                              still_wanted=iter([True, False]).__next__))
    assert [e.kind for e in mine] == ["applied", "lifted"]


def test_audit_records_who_did_what_with_the_rules(world):
    _, _, start = world
    service = start()
    record = service.apply(decision(), actor="ipv4:127.0.0.1:5000")
    service.lift(record.id, "closed", actor="ipv4:127.0.0.1:5001")
    service.record_refusal("ipv4:127.0.0.1:5002", "Apply", "CASE-9", "",
                           "INVALID_ARGUMENT", "subscriber.ip is required")
    entries = service.audit_log()
    assert [(e.actor, e.call, e.outcome) for e in entries] == [
        ("ipv4:127.0.0.1:5002", "Apply", "INVALID_ARGUMENT"),
        ("ipv4:127.0.0.1:5001", "Lift", "OK"),
        ("ipv4:127.0.0.1:5000", "Apply", "OK")]
    assert "tcp_dst=25" in entries[2].detail and entries[2].clause.startswith("Courriels")
    assert "removed:" in entries[1].detail


# ---- one subscriber, two families -------------------------------------------------

def test_a_decision_by_either_address_enforces_the_whole_identity(world):
    _, _, start = world
    service = start()
    by_v6 = service.apply(decision("r1", ip="2001:db8::1", violation=Violation.SPOOFING))
    assert by_v6.state is State.ACTIVE and by_v6.location.port == 1
    assert by_v6.addresses == ("2001:db8::1", "10.0.0.1", "fe80::200:ff:fe00:1")
    texts = " ".join(r.text() for r in by_v6.rules)
    assert "ipv4_src=10.0.0.1" in texts and "ipv6_src=2001:db8::1" in texts
    # its record survives a restart with its addresses
    assert start().get(by_v6.id) == by_v6
    # List and Watch find it by its other address; the view files it under each
    assert [r.id for r in service.list(subscriber_ip="10.0.0.1")] == [by_v6.id]
    events = list(service.watch(subscriber_ip="10.0.0.1",
                                still_wanted=iter([True, False]).__next__))
    assert [(e.kind, e.subscriber_ip) for e in events] == [("applied", "2001:db8::1")]
    _, per_ip = service.topology()
    assert per_ip["10.0.0.1"] == per_ip["2001:db8::1"] == [by_v6.id]


def test_a_repeat_by_the_other_family_is_the_same_subscribers_history(world):
    _, _, start = world
    service = start()
    first = service.apply(decision("r1", ip="10.0.0.1", violation=Violation.PORT_SCAN))
    service.lift(first.id, "next")
    second = service.apply(decision("r2", ip="2001:db8::1", violation=Violation.PORT_SCAN))
    assert (first.escalation.step, second.escalation.step) == (1, 2)
    assert first.id in second.escalation.reason
    # another subscriber starts its own ladder
    other = service.apply(decision("r3", ip="10.0.0.2", violation=Violation.PORT_SCAN))
    assert other.escalation.step == 1


def test_a_subscriber_whose_other_address_is_protected_is_refused(world, database_url):
    switches, _, _ = world
    switches.ipv6["00:00:00:00:00:01"] = ("2001:db8::1",)
    policy = dataclasses.replace(POLICY, assets=dataclasses.replace(
        POLICY.assets, protected=(ipaddress.IPv6Network("2001:db8::1/128"),)))
    service = EnforcementService(switches, policy, Store(database_url), clock=Clock())
    with pytest.raises(FailedPrecondition, match="protected asset"):
        service.apply(decision("r1", ip="10.0.0.1"))
    assert switches.rules() == []


def test_source_validation_takes_in_an_address_the_subscriber_newly_holds(world):
    switches, _, start = world
    service = start()
    record = service.apply(decision("r1", ip="10.0.0.1", violation=Violation.SPOOFING))
    assert "2001:db8::1:2" not in " ".join(r.text() for r in record.rules)
    # the host checks a new privacy address (learned by the controller), and
    # the controller hands its addresses to the service
    switches.ipv6["00:00:00:00:00:01"] += ("2001:db8::1:2",)
    service.host_moved("00:00:00:00:00:01")
    now = service.get(record.id)
    assert "2001:db8::1:2" in now.addresses
    assert "ipv6_src=2001:db8::1:2" in " ".join(r.text() for r in switches.rules())
    assert (now.cookie, now.escalation, now.state) == (record.cookie, record.escalation,
                                                      record.state)
    events = list(service.watch(still_wanted=iter([True, False]).__next__))
    assert events[-1].kind == "reapplied" and "2001:db8::1:2" in events[-1].detail
    # nothing new: nothing re-planned
    service.host_moved(("00:00:00:00:00:01",))
    assert service.get(record.id).updated_at == now.updated_at


def test_the_audit_compares_a_switch_whole_only_where_a_push_failed(world):
    from enforcement.domain.errors import SwitchError
    switches, _, start = world
    service = start()
    whole = []
    full = service.reconciler._sync_full
    service.reconciler._sync_full = lambda dpid: whole.append(dpid) or full(dpid)
    service.apply(decision("r1"))
    service.repair_drift()
    assert whole == []  # nothing failed, nothing drifted: no whole comparison
    real = switches.sync_part

    def refusing(*args, **kwargs):
        raise SwitchError("refused")
    switches.sync_part = refusing
    failed = service.apply(decision("r2", ip="10.0.0.2"))
    assert failed.state is State.FAILED
    switches.sync_part = real
    service.repair_drift()
    assert whole == [1]
    service.repair_drift()
    assert whole == [1]


class _Counting(dict):
    """by_id that counts the records read through it."""
    reads = 0

    def __getitem__(self, key):
        _Counting.reads += 1
        return super().__getitem__(key)


def test_a_list_of_what_is_in_force_reads_no_ended_record(world):
    switches, _, start = world
    service = start()
    made = [service.apply(decision(f"r{n}")) for n in range(30)]
    for record in made[:26]:
        service.lift(record.id, "done")
    switches.connected.discard(1)  # the next one waits for its switch
    pending = service.apply(decision("r-pending"))
    assert pending.state is State.PENDING
    live = [r.id for r in made[26:]]
    for run in (service, start()):  # and as loaded afresh from the store
        _Counting.reads = 0
        run.ledger.by_id = _Counting(run.ledger.by_id)
        page, more = run.page(states=[State.ACTIVE], size=2)
        assert [r.id for r in page] == live[:2] and more
        assert _Counting.reads <= 3  # the page's two, and the one that says more follow
        page, more = run.page(states=[State.ACTIVE, State.PENDING], start=3)
        assert [r.id for r in page] == [live[3], pending.id] and not more
        assert [r.id for r in run.page(states=[State.LIFTED], size=1)[0]] == [made[0].id]


class _Unwalkable(dict):
    """by_id that fails the test if anything walks every record."""

    def values(self):
        raise AssertionError("walked every enforcement")

    def items(self):
        raise AssertionError("walked every enforcement")

    def __iter__(self):
        raise AssertionError("walked every enforcement")


def test_a_metrics_scrape_counts_without_walking_the_enforcements(world):
    switches, _, start = world
    service = start()
    first = service.apply(decision("r1"))
    service.apply(decision("r2", ip="10.0.0.2"))
    service.lift(first.id, "done")
    service.apply(decision("r3"))  # a repeat: the next step of the ladder
    switches.connected.discard(1)
    pending = service.apply(decision("r4", ip="10.0.0.2", violation=Violation.PORT_SCAN))
    assert pending.state is State.PENDING  # live too
    for run in (service, start()):  # and as loaded afresh from the store
        truth: dict[str, int] = {}
        for record in run.ledger.by_id.values():
            if record.state in (State.ACTIVE, State.PENDING):
                kind = record.action.kind.value
                truth[kind] = truth.get(kind, 0) + 1
        assert sum(truth.values()) == 3 and len(truth) >= 2
        run.ledger.by_id = _Unwalkable(run.ledger.by_id)
        summary = run.live_summary()
        assert summary.by_action == truth
        assert summary.rules_by_switch


def test_the_store_password_is_never_logged(postgres_server):
    """$ENFORCEMENT_DB may carry a password: the service's start logs the
    store's URL with it hidden (issue 24). The records are taken at the
    service's own logger: other tests configure the process's logging."""
    import logging
    url = postgres_server.create_database("enforcement_password_check")
    secret = "s3cret-Pa55word"
    with_password = url.replace("@/", f":{secret}@/", 1)
    assert secret in with_password
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("enforcement.lifecycle.service")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        EnforcementService(Switches(), POLICY, Store(with_password))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    text = "\n".join(record.getMessage() for record in records)
    assert "store postgresql+psycopg://" in text
    assert secret not in text and "***" in text
