"""Acknowledged means durable, refused means undone at once: a store that
refuses a write (a statement made to fail by a trigger in the real
database, SQLite and PostgreSQL) leaves nothing on the switch, in memory or
in the store, and the caller is told so; where the switch cannot be put
back, the caller is told the outcome is unknown and how to learn it."""
import contextlib
import pathlib
import shutil
import tempfile
import threading
import time

import grpc
import pytest
import sqlalchemy as sa

from enforcement.api.servicer import create_server
from enforcement.domain import policy
from enforcement.domain.errors import NotLeader, SwitchUnreachable
from enforcement.domain.model import Location
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from tests.cases import spam
from tests.doubles import RecordingNetwork, served

_SQLITE_REFUSE = """
CREATE TRIGGER refuse_marked BEFORE INSERT ON enforcements
WHEN NEW.request_id LIKE 'refused-%'
BEGIN SELECT RAISE(ABORT, 'injected fault'); END
"""
_POSTGRES_REFUSE = ["""
CREATE FUNCTION refuse_marked() RETURNS trigger AS $$
BEGIN
  IF NEW.request_id LIKE 'refused-%' THEN RAISE EXCEPTION 'injected fault'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql
""", """
CREATE TRIGGER refuse_marked BEFORE INSERT OR UPDATE ON enforcements
FOR EACH ROW EXECUTE FUNCTION refuse_marked()
"""]


def _refuse_marked_requests(url: str) -> None:
    """The database itself refuses every enforcement whose request_id starts
    with 'refused-' (the rest of the transaction with it)."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in ([_SQLITE_REFUSE] if url.startswith("sqlite") else _POSTGRES_REFUSE):
            connection.execute(sa.text(statement))
    engine.dispose()


class UndoFails(RecordingNetwork):
    """A switch that takes a change, then stops answering before it can be
    put back."""

    def __init__(self):
        super().__init__()
        self.answers_left: int | None = None

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        if self.answers_left is not None:
            if self.answers_left == 0:
                raise SwitchUnreachable("no answer in time")
            self.answers_left -= 1
        return super().sync_part(dpid, rules, meters, timeout, meanwhile)


@pytest.fixture
def world(database_url):
    network = UndoFails()
    store = Store(database_url)
    service = EnforcementService(network, policy.load(), store)
    _refuse_marked_requests(database_url)
    with served(service) as stub:
        yield network, service, store, stub


def _refusal(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def _stored_ids(store):
    return {record.id for record in store.changed_since(-1)[0]}


def test_a_write_the_store_refuses_is_undone_on_the_switch_before_the_answer(world):
    network, service, store, stub = world
    kept = stub.Apply(spam("kept-1"), timeout=10)
    assert kept.state == pb.STATE_ACTIVE
    flows = set(network.flows)
    assert flows

    code, message = _refusal(lambda: stub.Apply(spam("refused-1", ip="10.0.0.3"), timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "nothing changed" in message and "injected fault" in message
    # Neither on the switch nor in memory nor in the store: the three agree.
    assert network.flows == flows
    assert [e.id for e in stub.List(pb.ListRequest(), timeout=5).enforcements] == [kept.id]
    assert _stored_ids(store) == {kept.id}
    assert set(service.ledger.by_id) == {kept.id}
    assert "refused-1" not in service.ledger.by_request
    # The refusal is on record (the audit table still takes writes).
    audit = stub.ListAudit(pb.ListAuditRequest(limit=10), timeout=5).entries
    assert any(e.call == "Apply" and e.outcome == "UNAVAILABLE" for e in audit)
    # Acknowledged stays durable: a restart finds exactly what was answered.
    assert {r.id for r in EnforcementService(RecordingNetwork(), policy.load(),
                                             Store(store.url)).ledger.by_id.values()} \
        == {kept.id}


def test_a_lease_lost_between_the_switch_and_the_write_is_undone_on_the_switch(world):
    """The fence (this instance's lease) is checked as the write goes out:
    a lease that ran out while the switch confirmed refuses the write, and
    the switch is put back before the answer, as for any other refusal."""
    network, service, store, stub = world
    kept = stub.Apply(spam("kept-1"), timeout=10)
    flows = set(network.flows)
    fence, checks = service.ledger._fence, []

    def lease_runs_out():
        # Held when the decision starts, gone when its write goes out.
        checks.append(1)
        if len(checks) % 2 == 0:
            raise NotLeader("the lease ran out")
        return fence()

    service.ledger._fence = lease_runs_out
    code, message = _refusal(lambda: stub.Apply(spam("late-1", ip="10.0.0.3"), timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "the lease ran out" in message and "nothing changed" in message
    assert network.flows == flows
    assert _stored_ids(store) == {kept.id}
    # A switch that cannot be put back: the outcome is unknown, and said so.
    network.answers_left = 1
    code, message = _refusal(lambda: stub.Apply(spam("late-2", ip="10.0.0.3"), timeout=10))
    assert code == grpc.StatusCode.UNKNOWN and "same request_id" in message


def test_a_batch_the_store_refuses_is_undone_whole(world):
    network, service, store, stub = world
    answer = stub.ApplyBatch(pb.ApplyBatchRequest(requests=[
        spam("fine-1"), spam("refused-2", ip="10.0.0.3")]), timeout=10)
    # One transaction for the batch: refused whole, each item told so.
    assert [r.code for r in answer.results] == [grpc.StatusCode.UNAVAILABLE.value[0]] * 2
    assert all("nothing changed" in r.message for r in answer.results)
    assert network.flows == set()
    assert _stored_ids(store) == set() and service.ledger.by_id == {}
    # Nothing half-done stands in the way of sending it again.
    again = stub.Apply(spam("fine-1"), timeout=10)
    assert again.state == pb.STATE_ACTIVE and network.flows


def test_when_the_switch_cannot_be_put_back_the_outcome_is_unknown_and_resending_settles_it(
        world):
    network, service, store, stub = world
    network.answers_left = 1  # takes the change, then answers no more
    code, message = _refusal(lambda: stub.Apply(spam("refused-3"), timeout=10))
    assert code == grpc.StatusCode.UNKNOWN
    assert "same request again" in message and "request_id" in message
    assert network.flows  # the rules the switch took are still there
    assert _stored_ids(store) == set() and service.ledger.by_id == {}
    # The switch answers again and the store is well: the same request settles it.
    network.answers_left = None
    engine = sa.create_engine(store.url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP TRIGGER refuse_marked" if store.url.startswith(
            "sqlite") else "DROP TRIGGER refuse_marked ON enforcements"))
    engine.dispose()
    settled = stub.Apply(spam("refused-3"), timeout=10)
    assert settled.state == pb.STATE_ACTIVE
    assert _stored_ids(store) == {settled.id}
    assert stub.Apply(spam("refused-3"), timeout=10).id == settled.id  # a replay now


class _ManyHosts(RecordingNetwork):
    """A switch with sixty subscribers of its own."""

    def __init__(self):
        super().__init__()
        self.hosts.update({f"10.0.1.{n}": Location(1, 10 + n, f"00:00:00:00:01:{n:02x}")
                           for n in range(1, 61)})


def test_a_stream_of_decisions_through_dropped_connections_and_a_stopped_server():
    """Eight clients apply while the database's connections are cut
    (pg_terminate_backend) and the server is stopped and started again:
    every acknowledged decision is in the store and on the switch, every
    refused one on neither, and memory, switch and store agree at once."""
    from testbed.pgcluster import PgCluster
    # A home of its own that survives a stop (pytest's tmp_path is closed to
    # the postgres user), so the server starts again on the same data.
    home = pathlib.Path(tempfile.mkdtemp(prefix="sdn-enforcement-pg-faults-"))
    cluster = PgCluster(home=home, durable=False).start()
    try:
        url = cluster.create_database("faults")
        network = _ManyHosts()
        service = EnforcementService(network, policy.load(), Store(url))
        server, port = create_server("127.0.0.1:0", service)
        server.start()
        acknowledged, refused, unknown = {}, {}, []
        stop = threading.Event()

        def client(first):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.EnforcementServiceStub(channel)
                for n in range(first, first + 7):
                    request_id = f"stream-{n}"
                    try:
                        record = stub.Apply(spam(request_id, ip=f"10.0.1.{n}"), timeout=20)
                        acknowledged[request_id] = record.id
                    except grpc.RpcError as exc:
                        (unknown.append(request_id) if exc.code() == grpc.StatusCode.UNKNOWN
                         else refused.__setitem__(request_id, exc.code()))
                    time.sleep(0.15)

        def chaos():
            admin = sa.create_engine(url)
            while not stop.is_set():
                with contextlib.suppress(Exception), admin.begin() as connection:
                    connection.execute(sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                time.sleep(0.03)
            admin.dispose()

        clients = [threading.Thread(target=client, args=(1 + 7 * i,)) for i in range(8)]
        cutter = threading.Thread(target=chaos)
        for thread in (*clients, cutter):
            thread.start()
        time.sleep(0.6)
        stop.set()
        cutter.join()
        cluster.stop()  # the server goes away with calls in flight
        time.sleep(1.0)
        cluster.start()
        for thread in clients:
            thread.join(60)
        server.stop(None)

        assert not unknown  # the switch always answered: every refusal was undone
        assert acknowledged and refused, (len(acknowledged), refused)
        assert set(refused.values()) <= {grpc.StatusCode.UNAVAILABLE}
        stored = {r.decision.request_id: r.id for r in Store(url).changed_since(-1)[0]}
        assert stored == acknowledged
        live = {r.decision.request_id for r in service.ledger.by_id.values()}
        assert live == set(acknowledged)
        on_switch = {rule for record in service.ledger.by_id.values() for rule in record.rules}
        assert network.flows == on_switch
        assert {record.decision.subscriber.ip.exploded for record in service.ledger.by_id.values()
                } == {f"10.0.1.{int(rid.split('-')[1])}" for rid in acknowledged}
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
