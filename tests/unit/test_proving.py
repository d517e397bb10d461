"""The proof keeper's bookkeeping, on a real SQLite store and the recording
switch double (the probes themselves run against real Open vSwitch in
tests/e2e/test_proofs.py): a failure is one event however often it is seen
again, it is repaired once and proven again, its return is an event, and a
lifted enforcement's proof is forgotten."""
import pytest

from enforcement.domain.probes import FAILED, PROVEN, UNPROVABLE, Proof
from enforcement.lifecycle.proving import Proofs, combined, subject_of
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.cases import POLICY, decision
from tests.doubles import Clock, Switches


class ProvingSwitches(Switches):
    """The recording double, whose data plane shows what the test says."""

    def __init__(self):
        super().__init__()
        self.outcome = PROVEN
        self.proved: list[int] = []
        self.audited: list[int] = []

    def prove_many(self, dpid, items):
        self.proved.append(dpid)
        return {key: Proof(self.outcome, 1.0, "passed where it must be stopped: TCP 25"
                           if self.outcome == FAILED else "", probes=2, dpid=dpid)
                for key, _, _ in items}

    def audit(self, dpid, timeout):
        self.audited.append(dpid)
        return super().audit(dpid, timeout)


@pytest.fixture
def world(tmp_path):
    switches = ProvingSwitches()
    store = Store(f"sqlite:///{tmp_path}/e.db")
    service = EnforcementService(switches, POLICY, store, clock=Clock())
    service.events_stored = lambda: [e.kind for e in store.events_after(0)]
    return switches, service, Proofs(service, switches)


def kinds(service):
    return service.events_stored()


def test_a_failure_is_one_event_repaired_once_and_its_return_another(world):
    switches, service, proofs = world
    record = service.apply(decision())
    assert proofs.check(record).state == PROVEN
    switches.outcome = FAILED
    assert proofs.check(record).state == FAILED
    assert switches.audited == [record.location.dpid]        # repaired once, then again
    assert proofs.latest(record.id).state == FAILED
    proofs.check(record)                                      # the same failure again
    assert kinds(service).count("proof_failed") == 1
    switches.outcome = PROVEN
    assert proofs.check(record).state == PROVEN
    assert kinds(service).count("proof_restored") == 1


def test_a_lifted_enforcement_is_forgotten_and_only_active_ones_are_proven(world):
    _, service, proofs = world
    record = service.apply(decision())
    proofs.check(record)
    service.lift(record.id, "done")
    assert proofs.latest(record.id) is None
    assert proofs._next(10) == []                             # nothing active to prove
    other = service.apply(decision("r2", ip="10.0.0.2"))
    assert [r.id for r in proofs._next(10)] == [other.id]


def test_one_switchs_proofs_combine_into_the_enforcements():
    proven = Proof(PROVEN, 1.0, probes=2, dpid=1)
    failed = Proof(FAILED, 1.0, "stopped where it must pass: TCP 80", ("table 0 x",), 2, 2)
    assert combined([proven, Proof(UNPROVABLE, 1.0, dpid=3)], 5.0).state == PROVEN
    both = combined([proven, failed], 5.0)
    assert both.state == FAILED and both.probes == 4 and both.shadows == ("table 0 x",)
    assert both.reason == "switch 0000000000000002: stopped where it must pass: TCP 80"
    assert combined([Proof(UNPROVABLE, 1.0)], 5.0).state == UNPROVABLE


def test_the_subject_is_where_and_what_the_enforcement_names(world):
    _, service, _ = world
    record = service.apply(decision())
    subject = subject_of(record)
    assert (subject.mac, subject.port) == (record.location.mac, record.location.port)
    assert subject.ipv4 == "10.0.0.1"
