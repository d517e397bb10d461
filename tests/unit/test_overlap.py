"""A decision's bookkeeping is done while the switch confirms: the lifecycle
hands it down the push as `meanwhile` (Reconciler.push -> Network.sync_part
-> SwitchSync -> Sessions.transact), and none of it reaches the store, the
events or the answers before the confirmation, or at all when the switch
refuses. Real SQLite and PostgreSQL stores; the switch is the lifecycle
tests' recording double, which calls meanwhile where controller/openflow/
sessions.py does (between sending and waiting for the answer); the
OpenFlow side's own part is tested against scripted switches."""
import inspect
import struct
import types

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.openflow.sessions import Sessions
from controller.openflow.switchsync import SwitchSync
from enforcement.domain.errors import SwitchError
from enforcement.domain.model import State
from enforcement.lifecycle.network import Network
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.cases import POLICY, decision
from tests.doubles import Clock, Fabric, Switches, rule


class Confirming(Switches):
    """Calls meanwhile where a real session waits for the barrier, `waits`
    times (a retried transaction waits again), then runs `during` (what the
    test looks at while the answer travels), then confirms, or refuses
    while refusals are left."""

    def __init__(self):
        super().__init__()
        self.during = lambda: None
        self.refusals = 0
        self.waits = 1

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        for _ in range(self.waits):
            if meanwhile is not None:
                meanwhile()
        self.during()
        if self.refusals:
            self.refusals -= 1
            raise SwitchError("switch refused: OFPFMFC_TABLE_FULL")
        return super().sync_part(dpid, rules, meters, timeout)


@pytest.fixture
def confirming(database_url):
    switches = Confirming()
    return switches, EnforcementService(switches, POLICY, Store(database_url), clock=Clock())


def stored(service):
    """(events, audit entries, records) the store holds."""
    store = service.ledger.store
    return (store.events_after(0), store.audit(limit=1000),
            {r.id: r for r in store.load_all()})


def test_the_confirmed_record_is_prepared_while_the_switch_confirms(confirming):
    switches, service = confirming
    seen = {}

    def during():
        # The barrier is on its way: the ACTIVE version and its event and
        # audit entry are ready in memory (and encoded for the store), and
        # nothing of them is written or announced.
        work = service.ledger.work
        seen["memory"] = [r.state for r in work.records]
        seen["events"] = [kind for _, kind, _, _ in work.events]
        seen["encoded"] = work.encoded is not None
        seen["stored"] = stored(service)
    switches.during = during
    heard = []
    service.ledger.listeners.append(lambda events: heard.extend(events))
    record = service.apply(decision("r1"))
    assert record.state is State.ACTIVE
    assert seen["memory"] == [State.PENDING, State.ACTIVE]
    assert seen["events"] == ["applied"] and seen["encoded"]
    events, audits, records = seen["stored"]
    assert events == [] and audits == [] and records == {}
    # After the confirmation: written, then announced.
    events, audits, records = stored(service)
    assert [e.kind for e in events] == ["applied"]
    assert [(a.call, a.outcome) for a in audits] == [("Apply", "OK")]
    assert records[record.id].state is State.ACTIVE
    assert [kind for _, kind, _, _ in heard] == ["applied"]


def test_a_refusal_throws_the_prepared_bookkeeping_away(confirming):
    switches, service = confirming
    switches.refusals = 1
    record = service.apply(decision("r1"))
    assert record.state is State.FAILED and "TABLE_FULL" in record.state_reason
    events, audits, records = stored(service)
    assert [e.kind for e in events] == ["failed"]
    assert [(a.call, a.outcome) for a in audits] == [("Apply", "FAILED")]
    assert records[record.id].state is State.FAILED
    assert service.ledger.desired.state(1).rules == {}
    assert service.ledger.live_by_ip == {}
    # The switch holds nothing of it, and the next decision goes through.
    assert switches.rules() == []
    again = service.apply(decision("r2"))
    assert again.state is State.ACTIVE and len(switches.rules()) == len(again.rules)


def test_a_refused_batch_is_run_again_one_by_one_without_its_first_bookkeeping(confirming):
    switches, service = confirming
    switches.refusals = 1  # the batch of two, then each alone goes through
    outcomes = service.apply_many([decision("r1"), decision("r2", ip="10.0.0.2")])
    assert [o.state for o in outcomes] == [State.ACTIVE, State.ACTIVE]
    events, audits, records = stored(service)
    assert sorted((e.kind, e.enforcement_id) for e in events) == sorted(
        ("applied", o.id) for o in outcomes)
    assert [(a.call, a.outcome) for a in audits] == [("Apply", "OK")] * 2
    assert {i: r.state for i, r in records.items()} == {o.id: State.ACTIVE for o in outcomes}


def test_work_runs_once_at_the_first_wait_and_its_error_after_the_push(confirming):
    switches, service = confirming
    record = service.apply(decision("r1"))
    ledger, log = service.ledger, []
    switches.waits = 2  # a retry waits again: nothing more to do
    switches.during = lambda: log.append("answer")

    def push(work, touch=True):
        with ledger.changing():
            if touch:
                ledger.touch(record)
            service.reconciler.push(meanwhile=work)
    push(lambda: log.append("work"))
    assert log == ["work", "answer"]
    # Nothing to send, nothing waited: the push does the work itself.
    push(lambda: log.append("no wait"), touch=False)
    assert log == ["work", "answer", "no wait"]
    # A push without work: the switch is handed none.
    push(None)
    assert log == ["work", "answer", "no wait", "answer"]

    def broken():
        log.append("broken")
        raise RuntimeError("a bug in the bookkeeping")
    with pytest.raises(RuntimeError, match="bookkeeping"):
        push(broken)
    # The wait itself went on: the answer came, and was booked, before the error.
    assert log[-2:] == ["broken", "answer"]
    assert switches.confirmed[1] is switches.held[1]


class Datapath:
    """What Sessions sends through: records the bytes written."""
    ofproto, ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser

    def __init__(self, dpid):
        self.id = dpid
        self.sent: list[bytes] = []

    def send(self, data):
        self.sent.append(data)
        return True


def test_a_transaction_does_the_work_once_sent_and_before_waiting_for_the_answer():
    sessions, dp = Sessions(), Datapath(7)
    sessions.connected(dp)
    seen = []

    def meanwhile():
        # Sent: the barrier closes the write. The answer arrives only now,
        # so a transaction that waited first would time out.
        seen.append(len(dp.sent))
        barrier_xid = struct.unpack("!I", dp.sent[-1][-4:])[0]
        sessions.barrier_reply(types.SimpleNamespace(datapath=dp, xid=barrier_xid))
    assert sessions.transact(7, [], 1.0, meanwhile=meanwhile) == {}
    assert seen == [1]
    # Without work, nothing is called: the answer comes from the switch.
    with pytest.raises(SwitchError, match="did not confirm"):
        sessions.transact(7, [], 0.05)
    assert seen == [1] and len(dp.sent) == 2


def test_the_switch_sync_hands_the_work_to_each_transaction_of_a_push():
    handed = []

    def transact(dpid, messages, timeout, meanwhile=None):
        handed.append(meanwhile)
        if len(handed) == 2:
            raise SwitchError("switch refused: OFPFMFC_TABLE_FULL")
        return {}
    sync = SwitchSync(transact, Fabric())

    def work():
        pass
    sync.sync_part(5, {rule(1).key: rule(1)}, {}, 1.0, meanwhile=work)
    assert handed == [work]
    # Refused: the undo waits as well (the work may not have run yet).
    with pytest.raises(SwitchError):
        sync.sync_part(5, {rule(2).key: rule(2)}, {}, 1.0, meanwhile=work)
    assert handed == [work, work, work]


def test_the_openflow_side_implements_the_switch_port():
    from controller.osken.app import EnforcementApp
    port = {name: member for name, member in vars(Network).items()
            if callable(member) and not name.startswith("_")}
    assert {"sync_part", "sync", "audit", "is_connected", "topology"} <= set(port)
    for name, member in port.items():
        assert (list(inspect.signature(getattr(EnforcementApp, name)).parameters)
                == list(inspect.signature(member).parameters)), name


def test_a_write_after_the_database_dropped_its_connections_gets_a_fresh_one(postgres_server):
    # The store's hot write runs on the driver's own connection: one the
    # database closed must not come back from the pool for the next write.
    # (An SQLite file has no server to drop connections.)
    import sqlalchemy as sa
    database_url = postgres_server.create_database("enforcement_dropped")
    switches = Confirming()
    service = EnforcementService(switches, POLICY, Store(database_url), clock=Clock())
    first = service.apply(decision("r1"))
    killer = sa.create_engine(database_url)
    with killer.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    killer.dispose()
    with pytest.raises(Exception, match="closed the connection"):
        service.lift(first.id, "done")  # the write that finds it dropped
    again = service.apply(decision("r2", ip="10.0.0.2"))
    assert again.state is State.ACTIVE
