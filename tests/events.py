"""Events as the tests see them: reported from a thread of the reporter's
own (as the controller does), read back from Watch, and stored in the
events table, whose columns the migrations add."""
import threading

import grpc
import pytest
import sqlalchemy as sa
from alembic.config import Config

from enforcement.store.database import MIGRATIONS
from enforcement.v1 import enforcement_pb2 as pb


def watched(stub, **request) -> list[pb.Event]:
    """Everything Watch has so far (the stream ends at its deadline)."""
    events = []
    with pytest.raises(grpc.RpcError) as err:
        for event in stub.Watch(pb.WatchRequest(**request), timeout=1.0):
            events.append(event)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return events


def from_a_thread(report, *alarms) -> None:
    """As the controller reports: from a worker thread of its own."""
    failures = []

    def run():
        try:
            for alarm in alarms:
                report(alarm)
        except Exception as exc:  # handed to the test, which fails with it
            failures.append(exc)
    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    if failures:
        raise failures[0]


def once():
    """A still_wanted for watch(): one pass over what is stored, then done."""
    return iter([True, False]).__next__


def migrate(engine, action, revision) -> None:
    """Runs alembic's command action (upgrade, downgrade) to revision on engine."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        action(config, revision)


def event_columns(engine) -> set[str]:
    """The events table's columns, as the migrations so far left it."""
    return {c["name"] for c in sa.inspect(engine).get_columns("events")}


def stands_for(detail: str) -> int:
    """How many reports a stored event stands for: itself and its "more"."""
    if "; and " not in detail:
        return 1
    return 1 + int(detail.split("; and ")[1].split(" more")[0].replace(",", ""))
