"""Leadership on a real store (PostgreSQL, and SQLite where it applies):
one leader at a time, an epoch that only grows, writes fenced by it, and
followers that serve what the leader wrote, with the same event sequence.
The switches are the double of tests/doubles.py; the fencing by the switches
themselves is tests/e2e/test_fencing.py, the whole under Mininet
tests/e2e/test_high_availability.py."""
import itertools
import os
import threading
import time

import pytest
import sqlalchemy as sa

from enforcement.cluster.leadership import Leadership, Transitions
from enforcement.domain.errors import NotLeader
from enforcement.domain.model import State
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import ENFORCEMENTS, EVENTS, Deposed, Store
from tests.cases import POLICY, decision
from tests.doubles import Switches

LEASE = 0.6


_names = itertools.count()


@pytest.fixture
def pg_url(postgres_server):
    return postgres_server.create_database(f"leadership_{os.getpid()}_{next(_names)}")


def _count(store: Store, table) -> int:
    engine = sa.create_engine(store.url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    finally:
        engine.dispose()


def test_the_lease_goes_to_one_and_the_epoch_only_grows(database_url):
    a, b, c = Store(database_url), Store(database_url), Store(database_url)
    assert a.acquire("a", "A:1", LEASE) == 1
    assert b.acquire("b", "B:1", LEASE) is None  # a's lease runs
    assert a.renew("a", 1, LEASE)
    leader = c.leader()
    assert (leader.holder, leader.address, leader.epoch) == ("a", "A:1", 1)
    assert 0 < leader.expires_in <= LEASE
    time.sleep(LEASE + 0.1)
    assert b.acquire("b", "B:1", LEASE) == 2
    assert not a.renew("a", 1, LEASE)  # taken: a must stop
    b.release("b", 2)
    assert c.acquire("c", "C:1", LEASE) == 3  # at once after a release


def test_a_deposed_epoch_writes_nothing(database_url, tmp_path):
    switches = Switches()
    old, new = Store(database_url), Store(database_url)
    assert old.acquire("old", "", LEASE) == 1
    service = EnforcementService(switches, POLICY, old)
    record = service.apply(decision("r1"))
    before = (_count(old, ENFORCEMENTS), _count(old, EVENTS))
    time.sleep(LEASE + 0.1)
    assert new.acquire("new", "", LEASE) == 2
    with pytest.raises(Deposed):
        old.write([record.moved_to(State.LIFTED, "late", 0.0)],
                  [(0.0, "lifted", record, "late")], [], fence=("old", 1))
    assert (_count(old, ENFORCEMENTS), _count(old, EVENTS)) == before
    assert old.load_all()[0].state is State.ACTIVE
    assert new.write([], [], [], fence=("new", 2)) > 0


def test_instances_started_at_once_on_an_empty_database_all_migrate(pg_url):
    stores, failures = [], []

    def open_store():
        try:
            stores.append(Store(pg_url))
        except Exception as exc:  # what two of three instances died of before
            failures.append(exc)
    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and len(stores) == 4
    with sa.create_engine(pg_url).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() \
            == "0006"


def test_never_two_leaders_and_a_silent_one_is_replaced_within_its_lease(pg_url):
    """Three lease threads; the leader's thread is stopped without a word
    (as if frozen): by its own clock it stops leading before the others
    can take over, and one of them does within about a lease."""
    instances = [Leadership(Store(pg_url), f"i{n}", f"h:{n}", lease=LEASE) for n in range(3)]
    for instance in instances:
        instance.start()
    seen_two, leaders = False, []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not leaders:
        leaders = [i for i in instances if i.leading()]
        time.sleep(0.01)
    assert len(leaders) == 1
    frozen = leaders[0]
    frozen._stop.set()  # its lease thread ends: no renewal, no release
    frozen_at = time.monotonic()
    successor = None
    while time.monotonic() - frozen_at < 3 * LEASE and successor is None:
        now_leading = [i for i in instances if i.leading()]
        seen_two |= len(now_leading) > 1
        successor = next((i for i in now_leading if i is not frozen), None)
        time.sleep(0.005)
    took = time.monotonic() - frozen_at
    assert successor is not None and not seen_two
    assert not frozen.leading()
    assert took < LEASE + 0.5
    assert successor.epoch > frozen.known_epoch - 1 and successor.epoch == 2
    for instance in instances:
        instance.stop()


def test_a_follower_serves_what_the_leader_wrote_and_takes_over_idempotently(pg_url):
    switches = Switches()
    lead_store, follow_store = Store(pg_url), Store(pg_url)
    leading, following = (Leadership(lead_store, "a", "A:1", lease=LEASE),
                          Leadership(follow_store, "b", "B:1", lease=LEASE))
    leader = EnforcementService(switches, POLICY, lead_store, leadership=leading)
    follower = EnforcementService(switches, POLICY, follow_store, leadership=following)
    leading.start(Transitions(elected=leader.take_over))
    _until(leader.leading, "the first instance leads")
    following.start(Transitions(elected=follower.take_over))
    applied = leader.apply(decision("r1"), actor="case-system")
    assert follower.get(applied.id) == applied          # caught up by revision
    assert [r.id for r in follower.list()] == [applied.id]
    with pytest.raises(NotLeader):
        follower.apply(decision("r2", ip="10.0.0.2"))
    # Watch: the same events with the same sequence numbers on both.
    seen = [list(s.watch(still_wanted=_once())) for s in (leader, follower)]
    assert [(e.sequence, e.kind) for e in seen[0]] == [(e.sequence, e.kind) for e in seen[1]]
    assert seen[0] and seen[0][-1].kind == "applied"
    # The leader goes (a clean stop releases the lease); the follower leads
    # and answers a retried request id with the original record.
    leading.stop()
    _until(follower.leading, "the follower takes over", timeout=3 * LEASE)
    assert follower.apply(decision("r1")) == applied
    lifted = follower.lift(applied.id, "case closed")
    assert lifted.state is State.LIFTED and following.epoch == 2
    following.stop()


def _until(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.01)


def _once():
    calls = iter([True, False])
    return lambda: next(calls, False)


def test_the_epoch_is_raised_above_what_the_switches_saw_only_by_its_holder(database_url):
    """A store younger than the switches (a fresh or restored database):
    the leader goes on at an epoch above the switches' generation."""
    store = Store(database_url)
    assert store.acquire("a", "", LEASE) == 1
    assert store.raise_epoch("b", 1, 8) is None      # not its lease
    assert store.raise_epoch("a", 1, 8) == 8         # above the switches' 7
    assert store.raise_epoch("a", 1, 20) is None     # an epoch it no longer holds
    assert store.raise_epoch("a", 8, 3) == 9         # never backwards
    assert store.renew("a", 9, LEASE) and not store.renew("a", 8, LEASE)
    leadership = Leadership(store, "a", "", lease=LEASE)
    leadership._epoch, leadership._valid_until = 9, time.monotonic() + LEASE
    assert leadership.raise_epoch(12) == 12 and leadership.epoch == 12
