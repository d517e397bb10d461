"""Connections the TLS gate refused, on their way to the audit log.

A refused handshake costs its sender almost nothing, so a flood of them
must cost the controller almost nothing either. Noting one is O(1) under a
lock and never touches the store: the gate's event loop, which relays every
accepted client, never waits for the database. A thread of its own writes
the rows. At most `per_second` rows a second are written one by one (over
all sources together: many addresses buy no more rows than one); the rest
are counted per host and reason, and written as one row per host and reason
at the end of each interval, at most `summaries` of them, the remainder as
one row for all other hosts. So the audit table grows by a bounded number of
rows per interval whatever arrives, and every refusal is still accounted for.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from enforcement.api.access import TokenBucket

LOG = logging.getLogger(__name__)

# record(actor, call, case_id, enforcement_id, outcome, detail): the store's audit.
Record = Callable[[str, str, str, str, str, str], None]


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]


class RefusedConnections:
    def __init__(self, record: Record, *, per_second: float = 20.0, burst: int = 100,
                 interval: float = 10.0, summaries: int = 20, max_counted: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self._record = record
        self._bucket = TokenBucket(per_second, burst, clock)
        self._interval = interval
        self._summaries = summaries
        self._max_counted = max_counted
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: collections.deque[tuple[str, str]] = collections.deque(maxlen=burst)
        # (host, reason) -> how many were held back this interval; bounded:
        # beyond max_counted keys, the rest only add to `_others`.
        self._held: dict[tuple[str, str], int] = {}
        self._others = 0
        self._other_hosts: set[str] = set()
        self._writing = 0
        self.noted = 0  # every refusal noted, written one by one or counted
        self._stopped = False
        self._thread: threading.Thread | None = None

    # ---- the gate's side: never blocks on the store ------------------------------

    def note(self, address: str, why: str) -> None:
        with self._lock:
            self.noted += 1
            if self._bucket.take() == 0 and len(self._pending) < (self._pending.maxlen or 0):
                self._pending.append((address, why))
                self._wake.notify_all()
                return
            key = (_host(address), why)
            if key in self._held or len(self._held) < self._max_counted:
                self._held[key] = self._held.get(key, 0) + 1
            else:
                self._others += 1
                if len(self._other_hosts) < self._max_counted:
                    self._other_hosts.add(key[0])

    # ---- life ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="refused-connections",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def flush(self) -> None:
        """Writes what is pending and the counts held back, now (at stop,
        and for a reader who wants the audit log current)."""
        self._write(self._take(summaries=True))

    def settled(self, timeout: float = 5.0) -> bool:
        """Whether every refusal noted so far that gets a row of its own has
        been written (the counts held back wait for the interval's end)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    # ---- the writer's thread --------------------------------------------------------

    def _run(self) -> None:
        next_summary = time.monotonic() + self._interval
        while True:
            with self._lock:
                while not self._pending and not self._stopped:
                    left = next_summary - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                if self._stopped:
                    return
            summaries = time.monotonic() >= next_summary
            if summaries:
                next_summary = time.monotonic() + self._interval
            self._write(self._take(summaries))

    def _take(self, summaries: bool) -> list[tuple[str, str]]:
        """What to write now, as (actor, detail): taken under the lock, written
        outside it."""
        with self._lock:
            rows = [(f"unauthenticated {address}", why) for address, why in self._pending]
            self._pending.clear()
            if summaries and (self._held or self._others):
                ranked = sorted(self._held.items(), key=lambda item: -item[1])
                for (host, why), count in ranked[:self._summaries]:
                    detail = (f"{why} ({count} more refused within {self._interval:g} s, "
                              "counted, not written one by one)")
                    rows.append((f"unauthenticated {host}", detail))
                rest = ranked[self._summaries:]
                others = self._others + sum(count for _, count in rest)
                hosts = len(self._other_hosts | {host for (host, _), _ in rest})
                if others:
                    detail = (f"{others} more connections refused from {hosts} other "
                              f"host(s) within {self._interval:g} s")
                    rows.append(("unauthenticated (many hosts)", detail))
                self._held.clear()
                self._others = 0
                self._other_hosts.clear()
            self._writing += 1
        return rows

    def _write(self, rows: list[tuple[str, str]]) -> None:
        try:
            for actor, why in rows:
                LOG.warning("refused connection from %s: %s", actor.split(" ", 1)[1], why)
                try:
                    self._record(actor, "connect", "", "", "UNAUTHENTICATED", why)
                except Exception:  # the refusal stands even if the store is unwell
                    LOG.exception("could not audit a refused connection")
        finally:
            with self._lock:
                self._writing -= 1
                self._wake.notify_all()
