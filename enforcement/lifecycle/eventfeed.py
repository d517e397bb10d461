"""One reader of the store's events for every Watch stream.

Each stream used to ask the store itself, at every commit and every poll:
with 64 streams open, every decision woke 64 queries, and Apply waited
behind them (p99 x33 idle, measured by bench/hostile.py). Now the newest
events are read once, by whichever stream finds them missing first, into a
bounded window in memory that every stream filters for itself. A stream
that starts (or falls) behind the window reads the store directly until it
reaches it, as before. Followers, which hear of no commit, still find new
events by polling: one query per interval for all streams, not one each.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from enforcement.domain.model import IDENTITY_REFUSED
from enforcement.store.database import Event, Store

# Events kept in memory: a stream this far behind reads the store itself.
WINDOW = 4096
# Events one query takes at most (the store's own limit).
BATCH = 500


def matcher(subscriber_ip: str | Iterable[str], case_id: str) -> Callable[[Event], bool]:
    """The store's filter (Store.events_after), in memory: the subscriber's
    events under any of its addresses, and the claims others made on one of
    them; and the case's."""
    wanted = ({subscriber_ip} if subscriber_ip else set()) if isinstance(subscriber_ip, str) \
        else set(subscriber_ip)

    def matches(event: Event) -> bool:
        if wanted and event.subscriber_ip not in wanted and not (
                event.kind == IDENTITY_REFUSED and event.claimed in wanted):
            return False
        return not case_id or event.case_id == case_id
    return matches


class EventFeed:
    def __init__(self, store: Store, *, window: int = WINDOW, poll: float = 0.25,
                 clock: Callable[[], float] = time.monotonic):
        """poll: how often new events are looked for without a commit here
        (a follower's only way to hear of them), for all streams at once."""
        self._store = store
        self._poll = poll
        self._clock = clock
        self._lock = threading.Condition()
        self._window = window
        # In sequence order, and their sequences apart for bisect: a read
        # costs what it returns, not the window's length, times every stream.
        self._recent: list[Event] = []
        self._sequences: list[int] = []
        # Every event after _floor up to _top is in _recent.
        self._floor: int | None = None
        self._top = 0
        self._reading = False
        self._stale = True
        self._read_at = 0.0

    def stream(self, after: int, addresses: Callable[[], str | list[str]], case_id: str,
               still_wanted: Callable[[], bool], poll: float) -> Iterator[Event]:
        """A Watch stream: the matching events after a sequence, then new
        ones as they come. addresses() names the subscriber's addresses as
        known now (asked again at each pass)."""
        last, first = after, True
        while still_wanted():
            who = addresses()
            matches = matcher(who, case_id)
            events, seen = self.read(last, matches, fresh=first)
            first = False
            if events is None:
                # Older than the window: from the store up to its start, then
                # (in the same pass) the window itself.
                events = self._store.events_after(last, subscriber_ip=who, case_id=case_id,
                                                  limit=BATCH, until=seen)
                if len(events) == BATCH:
                    seen = events[-1].sequence
                else:
                    newer, beyond = self.read(seen, matches)
                    if newer is not None:
                        events, seen = events + newer, beyond
            yield from events
            if seen == last and not events:
                self.wait(last, poll)
            last = seen

    def committed(self) -> None:
        """New events were written here: the next reader fetches them at once."""
        with self._lock:
            self._stale = True
            self._lock.notify_all()

    def read(self, sequence: int, matches: Callable[[Event], bool], *,
             fresh: bool = False) -> tuple[list[Event] | None, int]:
        """The matching events after sequence and the sequence the caller has
        now seen; (None, floor) when sequence is older than the window: the
        caller reads the store itself up to floor. fresh: ask the store now
        (a stream's first read sees everything stored when it started)."""
        with self._lock:
            if fresh:
                self._stale = True
            while self._due():
                self._refresh()
            floor = self._floor if self._floor is not None else 0
            if sequence < floor:
                return None, floor
            if self._top <= sequence:
                return [], sequence
            start = bisect.bisect_right(self._sequences, sequence)
            return [e for e in self._recent[start:] if matches(e)], self._top

    def wait(self, sequence: int, timeout: float) -> None:
        """Until events after sequence are known here, a commit, or timeout."""
        deadline = self._clock() + timeout
        with self._lock:
            while self._top <= sequence and not self._stale:
                left = min(deadline, self._read_at + self._poll) - self._clock()
                if left <= 0:
                    return
                self._lock.wait(left)

    def _due(self) -> bool:
        return (self._floor is None or self._stale
                or self._clock() - self._read_at >= self._poll)

    def _refresh(self) -> None:
        """One query for everyone (called with the lock held, released while
        the store answers); when another caller's query is under way, waits
        for it instead."""
        if self._reading:
            self._lock.wait(0.05)
            return
        self._reading = True
        self._stale = False
        self._read_at = self._clock()
        top = self._top
        self._lock.release()
        try:
            if self._floor is None:
                newest: int | None = self._store.last_event_sequence()
                rows: list[Event] = []
            else:
                newest = None
                rows = self._store.events_after(top, limit=BATCH)
        finally:
            self._lock.acquire()
            self._reading = False
            self._lock.notify_all()
        if newest is not None:
            self._floor = self._top = newest
            return
        for event in rows:
            self._recent.append(event)
            self._sequences.append(event.sequence)
            self._top = event.sequence
        if len(self._recent) > 2 * self._window:  # trimmed now and then, not per event
            drop = len(self._recent) - self._window
            self._floor = self._sequences[drop - 1]
            del self._recent[:drop], self._sequences[:drop]
        if len(rows) == BATCH:
            self._stale = True  # more than one query's worth: read on
