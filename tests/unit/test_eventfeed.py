"""Watch streams share one reader of the store's events (issue 24: 64 open
streams used to wake 64 queries at every commit, and Apply waited behind
them). Real SQLite store, the service's own watch()."""
import threading
import time

from enforcement.domain.model import Violation
from enforcement.lifecycle.eventfeed import EventFeed
from tests.cases import decision
from tests.doubles import recording_service
from tests.events import once


def _counting(store):
    """The store's event queries, counted."""
    calls = [0]
    real = store.events_after

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)
    store.events_after = counted
    return calls


def test_many_streams_cost_one_query_per_commit_not_one_each(tmp_path):
    service = recording_service(f"sqlite:///{tmp_path}/state.db")
    queries = _counting(service._store)
    streams, seen, stop = 32, [], threading.Event()
    lock = threading.Lock()

    def watch():
        for event in service.watch(still_wanted=lambda: not stop.is_set(), poll=60):
            with lock:
                seen.append(event.sequence)
    threads = [threading.Thread(target=watch, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every stream has read once and waits
    before = queries[0]
    decisions = 10
    for n in range(decisions):
        record = service.apply(decision(f"r{n}"))
        service.lift(record.id, "done")
    deadline = time.monotonic() + 10
    while len(seen) < streams * decisions * 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    service._events.committed()  # wakes the streams to see stop
    for thread in threads:
        thread.join(5)
    # Every stream saw every event (applied, lifted), in order...
    assert len(seen) == streams * decisions * 2
    # ...for about one query per commit (20), where each stream used to ask
    # for itself (640).
    assert queries[0] - before <= 2 * decisions * 2, queries[0] - before


def test_a_stream_behind_the_window_reads_the_store_then_the_window(tmp_path):
    service = recording_service(f"sqlite:///{tmp_path}/state.db")
    service._events = EventFeed(service._store, window=3)
    made = []
    for n in range(8):
        record = service.apply(decision(f"r{n}", violation=Violation.SPAM))
        made.append(record.id)
        service.lift(record.id, "done")
    # The window saw only the last few; a stream from the start gets all 16.
    list(service.watch(after=14, still_wanted=once()))
    stored = list(service.watch(still_wanted=once()))
    assert [e.sequence for e in stored] == list(range(1, 17))
    assert [e.kind for e in stored[:2]] == ["applied", "lifted"]
    # Filters apply the same on both sides of the window's start.
    mine = list(service.watch(case_id="CASE-1", still_wanted=once()))
    assert len(mine) == 16
    assert list(service.watch(case_id="NO-SUCH-CASE", still_wanted=once())) == []
    by_address = list(service.watch(subscriber_ip="10.0.0.1", still_wanted=once()))
    assert [e.sequence for e in by_address] == list(range(1, 17))
    assert list(service.watch(subscriber_ip="10.0.0.3", still_wanted=once())) == []
