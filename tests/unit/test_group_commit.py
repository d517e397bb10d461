"""Group commit in the service, against a real SQLite file and a switch
double that is slow enough for calls to pile up: decisions that arrive
together are pushed and written together, and a refusal inside a batch is
pinned on the decision that caused it."""
import ipaddress
import threading
import time

from enforcement.domain import policy
from enforcement.domain.desired import SwitchState, apply_change, diff, diff_part
from enforcement.domain.errors import SwitchError
from enforcement.domain.model import (
    Decision,
    HostView,
    Location,
    State,
    Subscriber,
    TopologyView,
    Violation,
)
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store

POISONED = "10.0.0.13"
POISONED_MAC = "00:00:00:00:00:0d"  # its MAC: what its rules match


class SlowSwitch:
    """Takes 50 ms per push; refuses any push holding a rule for POISONED."""

    def __init__(self):
        self.held = SwitchState.empty()
        self.pushes = []

    def locate(self, ip):
        n = int(ip.rsplit(".", 1)[1])
        return Location(1, n, f"00:00:00:00:00:{n:02x}")

    def host(self, ip):
        where = self.locate(ip)
        return None if where is None else HostView(where.mac, ip, where.dpid, where.port)

    def is_connected(self, dpid):
        return True

    def topology(self):
        return TopologyView((), (), ())

    def sync(self, dpid, desired, timeout, verify=False):
        change = diff(self.held, desired)
        self.held = SwitchState(dict(desired.rules), dict(desired.meters))
        return change

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        time.sleep(0.05)
        change = diff_part(self.held, rules, meters)
        if any(f"'{POISONED_MAC}'" in repr(r.match) for r in change.rules_to_add):
            raise SwitchError("OFPET_BAD_MATCH/OFPBMC_BAD_FIELD")
        self.pushes.append(len(change.rules_to_add) + len(change.rules_to_delete))
        apply_change(self.held, change)
        return change


def decision(n):
    return Decision(f"req-{n}", f"CASE-{n}", Subscriber(ipaddress.IPv4Address(f"10.0.0.{n}")),
                    Violation.SPAM, "group commit test")


def apply_all(service, numbers):
    results = {}

    def one(n):
        results[n] = service.apply(decision(n), actor="test")
    threads = [threading.Thread(target=one, args=(n,)) for n in numbers]
    for t in threads:
        t.start()
        time.sleep(0.002)
    for t in threads:
        t.join(10)
    return results


def test_decisions_arriving_together_share_a_push_and_a_commit(tmp_path):
    switch = SlowSwitch()
    service = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    results = apply_all(service, range(14, 44))
    assert {r.state for r in results.values()} == {State.ACTIVE}
    batches, decisions = service.batch_counts
    assert decisions == 30 and batches < 15, f"{batches} batches for 30 decisions"
    assert max(switch.pushes) > 1, "some push carried several decisions"
    # Every rule is on the switch and every record in the store, as answered.
    wanted = {rule for r in results.values() for rule in r.rules}
    assert set(switch.held.rules.values()) == wanted
    reopened = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    assert {r.id: r.state for r in reopened.list()} == {
        r.id: State.ACTIVE for r in results.values()}


def test_a_refusal_in_a_batch_fails_only_the_decision_that_caused_it(tmp_path):
    switch = SlowSwitch()
    service = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    service.apply(decision(1))  # keeps the switch busy while the rest queue up
    results = apply_all(service, range(2, 25))
    poisoned = results[13]
    assert poisoned.state is State.FAILED and "OFPBMC_BAD_FIELD" in poisoned.state_reason
    others = [r for n, r in results.items() if n != 13]
    assert {r.state for r in others} == {State.ACTIVE}
    assert service.batch_counts[0] < 24, "the others were batched"
    # Nothing of the failed decision is on the switch; everything else is.
    held = set(switch.held.rules.values())
    assert not any(rule in held for rule in poisoned.rules)
    assert all(rule in held for r in others for rule in r.rules)
    # The rolled-back batch left no trace: one record per decision, in
    # memory and in the store, and the subscribers' histories hold one each.
    assert len(service.list()) == 24
    reopened = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    assert sorted((r.decision.request_id, r.state) for r in reopened.list()) == sorted(
        (r.decision.request_id, r.state) for r in service.list())
    assert all(len(service.list(subscriber_ip=f"10.0.0.{n}")) == 1 for n in range(1, 25))


def test_lifts_in_a_batch_remove_exactly_their_rules(tmp_path):
    switch = SlowSwitch()
    service = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    records = apply_all(service, range(1, 11))
    threads = [threading.Thread(target=service.lift, args=(records[n].id, "done"))
               for n in range(1, 6)]
    assert 13 not in records
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    held = set(switch.held.rules.values())
    for n in range(1, 11):
        assert all((rule in held) == (n > 5) for rule in records[n].rules), n
    assert {service.get(records[n].id).state for n in range(1, 6)} == {State.LIFTED}


def test_a_bug_while_staging_leaves_nothing_half_done(tmp_path):
    switch = SlowSwitch()
    service = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    real = service.decider.propose

    def propose(decision):
        if str(decision.subscriber.ip) == "10.0.0.9":
            raise RuntimeError("a bug")
        return real(decision)
    service.decider.propose = propose
    outcomes = {}

    def one(n):
        try:
            outcomes[n] = service.apply(decision(n))
        except RuntimeError as exc:
            outcomes[n] = exc
    service.apply(decision(1))
    threads = [threading.Thread(target=one, args=(n,)) for n in range(5, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    applied = [o for o in outcomes.values() if not isinstance(o, Exception)]
    assert isinstance(outcomes[9], RuntimeError)
    # Whatever failed with the bug left no record, no rule and no write.
    assert {r.id for r in service.list()} == {r.id for r in applied} | {
        r.id for r in service.list(subscriber_ip="10.0.0.1")}
    held = set(switch.held.rules.values())
    assert held == {rule for r in service.list() for rule in r.rules}
    reopened = EnforcementService(switch, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))
    assert {r.id for r in reopened.list()} == {r.id for r in service.list()}
