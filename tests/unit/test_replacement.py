"""Re-placement: an enforcement follows its subscriber to another port, and
a quarantine's path follows the links (service level, recording switches)."""
import ipaddress
import time

from enforcement.domain import policy
from enforcement.domain.model import LinkView, Location, State, TopologyView, Violation
from enforcement.domain.validation import validate_apply
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.doubles import RecordingNetwork


def service_with(network, tmp_path):
    return EnforcementService(network, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"))


def decide(service, violation, request_id="r1"):
    return service.apply(validate_apply(request_id=request_id, case_id="C", ip="10.0.0.1",
                                        mac="", violation=violation, reason=""))


def test_a_moved_subscriber_takes_its_rules_along(tmp_path):
    network = RecordingNetwork()
    service = service_with(network, tmp_path)
    record = decide(service, Violation.SPAM)
    assert {dict(r.match)["in_port"] for r in network.flows} == {1}
    network.hosts["10.0.0.1"] = Location(2, 7, "00:00:00:00:00:01")
    service.host_moved("00:00:00:00:00:01")
    moved = service.get(record.id)
    assert (moved.location.dpid, moved.location.port) == (2, 7)
    assert moved.cookie == record.cookie and moved.escalation == record.escalation
    assert {(r.dpid, dict(r.match)["in_port"]) for r in network.flows} == {(2, 7)}
    assert [e.kind for e in service._store.events_after(0)][-1] == "moved"


def test_only_live_enforcements_of_the_moved_subscriber_follow(tmp_path):
    """is_enforced answers the OpenFlow thread without a lock; host_moved
    looks at the moved subscriber's live enforcements only (by MAC)."""
    network = RecordingNetwork()
    network.hosts["10.0.0.2"] = Location(1, 2, "00:00:00:00:00:02")
    service = service_with(network, tmp_path)
    first_mac, other_mac = "00:00:00:00:00:01", "00:00:00:00:00:02"
    assert not service.is_enforced(first_mac)
    first = decide(service, Violation.SPAM, "r1")
    other = service.apply(validate_apply(request_id="r2", case_id="C", ip="10.0.0.2", mac="",
                                         violation=Violation.SPAM, reason=""))
    lifted = decide(service, Violation.PORT_SCAN, "r3")
    service.lift(lifted.id, reason="done")
    assert service.is_enforced(first_mac) and service.is_enforced(other_mac)
    network.hosts["10.0.0.1"] = Location(2, 7, first_mac)
    network.hosts["10.0.0.2"] = Location(2, 8, other_mac)
    service.host_moved(first_mac)
    assert service.get(first.id).location.port == 7
    assert service.get(lifted.id).location.port == 1  # ended: left where it was
    assert service.get(other.id).location.port == 2   # another subscriber: not this move
    service.lift(first.id, reason="done")
    assert not service.is_enforced(first_mac) and service.is_enforced(other_mac)


def test_an_address_handed_to_another_subscriber_takes_no_enforcement_along(tmp_path):
    """The subscriber under a block takes a new address; its old one is
    given to a neighbour. The block stays on the subscriber (its port and
    MAC), re-planned for its new address; the neighbour gets nothing."""
    network = RecordingNetwork()
    offender, heir = "00:00:00:00:00:01", "00:00:00:00:00:02"
    service = service_with(network, tmp_path)
    record = service.apply(validate_apply(request_id="r1", case_id="C", ip="10.0.0.1",
                                          mac="", violation=Violation.SPOOFING, reason=""))
    network.hosts["10.0.0.9"] = network.hosts.pop("10.0.0.1")   # a new lease
    network.hosts["10.0.0.1"] = Location(1, 2, heir)             # the old one, handed on
    service.host_moved((offender, heir))
    now = service.get(record.id)
    assert (now.location.port, now.location.mac, now.state) == (1, offender, State.ACTIVE)
    assert now.addresses == ("10.0.0.9",)
    text = " ".join(r.text() for r in network.flows)
    assert "ipv4_src=10.0.0.9" in text and "10.0.0.1," not in text + ","
    assert not any(dict(r.match).get("in_port") == 2 or heir in repr(r.match)
                   for r in network.flows)
    assert not service.is_enforced(heir)


def test_a_quarantine_path_follows_the_links(tmp_path):
    network = RecordingNetwork()
    service = service_with(network, tmp_path)
    record = decide(service, Violation.MALWARE)  # step 1: quarantine
    assert record.action.kind.value == "quarantine"
    uplinks = {a.port for r in network.flows if r.dpid == 1
               for a in r.instructions if hasattr(a, "port")}
    assert 3 in uplinks
    view = network.topology()
    # The s1-s2 link now uses port 4 on s1.
    network.topology = lambda: TopologyView(view.switches, (LinkView(1, 4, 2, 3),
                                                            LinkView(2, 3, 1, 4)), view.hosts)
    service.links_changed()
    uplinks = {a.port for r in network.flows if r.dpid == 1
               for a in r.instructions if hasattr(a, "port")}
    assert 4 in uplinks and 3 not in uplinks
    assert [e.kind for e in service._store.events_after(0)][-1] == "reapplied"
    service.links_changed()  # nothing changed since: nothing re-placed
    assert [e.kind for e in service._store.events_after(0)].count("reapplied") == 1


def test_many_enforcements_follow_in_groups_and_decisions_go_between(tmp_path, monkeypatch):
    """A subscriber with 600 live enforcements moves: they follow in groups
    of FOLLOW_GROUP (one push each, committed before the next), a decision
    that arrived meanwhile goes between two groups rather than after all of
    them, and one lifted meanwhile stays lifted."""
    import sys
    import threading

    from enforcement.domain.model import ActionKind, Decision, Subscriber
    from enforcement.domain.policy import ActionSpec
    from enforcement.lifecycle import reconcile

    monkeypatch.setattr(reconcile, "FOLLOW_GROUP", 200)
    network = RecordingNetwork()
    service = service_with(network, tmp_path)

    def block(n):  # distinct ports: no two share a rule
        return Decision(f"r{n}", "C", Subscriber(ipaddress.ip_address("10.0.0.1")),
                        Violation.SPAM, "", requested_action=ActionSpec(
                            ActionKind.BLOCK, "tcp", (1000 + n,)))
    records = service.apply_many([block(n) for n in range(600)])
    last = records[-1]
    pushes, lifted, other = [], [], threading.Thread(target=lambda: lifted.append(
        service.lift(last.id, "done while the others move")))
    sync_part = network.sync_part

    def recorded(dpid, rules, meters, timeout, meanwhile=None):
        moving = threading.current_thread() is mover
        pushes.append("follow" if moving else "lift")
        if moving and len(pushes) == 1:
            # The lift arrives while the first group holds the lock: wait
            # until it is queued on it (its batch running, its thread in
            # the unit of work's lock).
            other.start()
            while not (service._commits.busy and "changing" in _frames(other)):
                time.sleep(0.001)
        return sync_part(dpid, rules, meters, timeout, meanwhile)

    def _frames(thread):
        frame, names = sys._current_frames().get(thread.ident), []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        return names

    network.sync_part = recorded
    network.hosts["10.0.0.1"] = Location(2, 7, "00:00:00:00:00:01")
    mover = threading.Thread(target=service.host_moved, args=("00:00:00:00:00:01",))
    mover.start()
    mover.join(30)
    other.join(30)
    # Switch 1 loses the rules, switch 2 gains them: one push per switch, per group.
    assert pushes == ["follow"] * 2 + ["lift"] + ["follow"] * 4, pushes
    assert lifted and service.get(last.id).state is State.LIFTED
    moved = [service.get(r.id) for r in records[:-1]]
    assert {(r.location.dpid, r.location.port) for r in moved} == {(2, 7)}
    assert {(r.dpid, dict(r.match)["in_port"]) for r in network.flows} == {(2, 7)}
    assert not any(r.cookie == last.cookie for r in network.flows)
    kinds = [e.kind for e in service._store.events_after(0, limit=2000)]
    assert kinds.count("moved") == 599 and kinds.count("lifted") == 1
