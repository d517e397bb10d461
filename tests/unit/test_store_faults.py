"""Acknowledged means durable, refused means undone at once: a store that
refuses a write (a statement made to fail by a trigger in the real
database, SQLite and PostgreSQL) leaves nothing on the switch, in memory or
in the store, and the caller is told so; where the switch cannot be put
back, the caller is told the outcome is unknown and how to learn it."""
import grpc
import pytest
import sqlalchemy as sa

from enforcement.api.servicer import create_server
from enforcement.domain import policy
from enforcement.domain.errors import SwitchUnreachable
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from tests.cases import spam
from tests.doubles import RecordingNetwork

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
    server, port = create_server("127.0.0.1:0", service)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield network, service, store, pb_grpc.EnforcementServiceStub(channel)
    server.stop(None)


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
