"""Identity events: a subscriber's refused claim on who is where, for the
case system.

The controller refuses a claim (an address or a MAC another subscriber
holds, forged LLDP, a DHCP server on an untrusted port) and reports an
IdentityEvent from whichever thread refused it: the packet-in worker, or
OS-Ken's event thread, which also carries the barrier replies every decision
waits for. The event becomes an identity_refused event on Watch, stored like
every event, and what to do about the claimant is the case system's
decision.

A subscriber can forge such frames at line rate, so reporting must cost
neither a database write per frame nor its caller's time:

- Every report is heard at once (the listeners: the metrics count each
  refusal), then throttled: one stored event per claim (kind, switch, port,
  what was claimed) per interval. The refusals held back are counted, and
  the next stored event of that claim says how many ("and 1,234 more since
  ..."): the one that ends the interval, or, when the claimant has gone
  quiet by then, a summary standing for the last of them. Whatever was
  reported is in the events, once each: a stored event stands for itself
  and the "more" its detail names.
- A port that varies what it claims (random addresses, random switches in
  forged LLDP) gets CLAIMS_PER_PORT claims of each kind its own; the rest
  of its claims share one more, "other claims from this port". So the
  events stored per port and interval are bounded, and so is the memory.
- report() never waits: admitted events are queued, and one writer thread
  stores what is queued in one transaction (no lifecycle lock, no switch).
  The leader alone reports (the service's check): the followers see the
  same frames.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from enforcement.domain.model import IDENTITY_REFUSED, IdentityEvent

LOG = logging.getLogger(__name__)

INTERVAL = 10.0
CLAIMS_PER_PORT = 8
# Stored events waiting for the writer. The throttle bounds what arrives;
# this bounds what piles up while the database does not answer.
MAX_QUEUED = 4096

# The key of a port's shared bucket, in place of what was claimed.
_OTHER_CLAIMS = None

Stored = tuple[float, IdentityEvent, str]  # (reported at, event, detail to store)


@dataclasses.dataclass
class _Window:
    stored_at: float  # when the claim's last stored event was reported
    held: int = 0  # refusals reported since, not stored
    newest: tuple[float, IdentityEvent] | None = None  # the last of those


class Throttle:
    """Which reports become stored events (see the module's docstring).
    Plain data, no clock and no lock of its own: the caller passes the time
    and holds the lock."""

    def __init__(self, interval: float = INTERVAL, claims_per_port: int = CLAIMS_PER_PORT):
        if interval <= 0 or claims_per_port < 1:
            raise ValueError("the throttle needs an interval and one claim per port at least")
        self.interval = interval
        self.claims_per_port = claims_per_port
        self._windows: dict[tuple, _Window] = {}
        # Claims with a window of their own, by (kind, dpid, port).
        self._claims: collections.Counter[tuple] = collections.Counter()

    def __len__(self) -> int:
        return len(self._windows)

    def admit(self, at: float, event: IdentityEvent) -> Stored | None:
        """The event to store now, its detail naming what was held back
        since the last one, or None when it is held back."""
        port = (event.kind, event.dpid, event.port)
        key: tuple[str, int, int, str | None] = (*port, event.claimed)
        window = self._windows.get(key)
        if window is None and self._claims[port] >= self.claims_per_port:
            key = (*port, _OTHER_CLAIMS)
            window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(at)
            if key[3] is not _OTHER_CLAIMS:
                self._claims[port] += 1
            return at, event, event.text()
        if at < window.stored_at:  # the clock went back: the interval starts again
            window.stored_at = at
        if at - window.stored_at < self.interval:
            window.held += 1
            window.newest = at, event
            return None
        detail = _with_held(event.text(), window.held, window.stored_at, key[3])
        window.stored_at, window.held, window.newest = at, 0, None
        return at, event, detail

    def due(self, now: float, *, everything: bool = False) -> list[Stored]:
        """The summaries of intervals over (all of them: everything) whose
        claimant went quiet with refusals held back; forgets the claims
        quiet for a whole interval."""
        out: list[Stored] = []
        for key, window in list(self._windows.items()):
            if not everything and now - window.stored_at < self.interval:
                continue
            if window.newest is None:
                del self._windows[key]
                if key[3] is not _OTHER_CLAIMS:
                    self._claims[key[:3]] -= 1
                    if not self._claims[key[:3]]:
                        del self._claims[key[:3]]
                continue
            at, event = window.newest
            # The summary is the newest held-back report itself: the others
            # are its "more".
            out.append((at, event, _with_held(event.text(), window.held - 1,
                                              window.stored_at, key[3])))
            window.stored_at, window.held, window.newest = at, 0, None
        return out

    def next_due(self) -> float | None:
        """When the next summary is due, if one is waiting."""
        waiting = [w.stored_at for w in self._windows.values() if w.held]
        return min(waiting) + self.interval if waiting else None


def _with_held(text: str, held: int, since: float, claimed) -> str:
    if held <= 0:
        return text
    what = " of other claims from this port" if claimed is _OTHER_CLAIMS else ""
    clock = time.strftime("%H:%M:%S", time.gmtime(since))
    return f"{text}; and {held:,} more{what} since {clock} UTC"


class IdentityReports:
    def __init__(self, store, clock: Callable[[], float],
                 announce: Callable[[list[tuple]], None], *,
                 fence: Callable[[], tuple[str, int] | None] = lambda: None,
                 interval: float = INTERVAL, claims_per_port: int = CLAIMS_PER_PORT):
        """announce(events) is called with the events (at, kind, event,
        detail) of each write once committed; fence() as the ledger's
        (enforcement.lifecycle.ledger): only the leader writes."""
        self._store = store
        self._clock = clock
        self._announce = announce
        self._fence = fence
        self._throttle = Throttle(interval, claims_per_port)
        self.listeners: list[Callable[[IdentityEvent], None]] = []
        self._changed = threading.Condition()
        self._queued: collections.deque[Stored] = collections.deque()
        self._writer: threading.Thread | None = None
        self._stopping = False
        self._idle_rounds = 0  # the writer's rounds that found nothing to write
        self.lost = 0  # stored events given up: the queue was full, or the write failed

    def report(self, event: IdentityEvent) -> None:
        """Hears the refusal (listeners) and queues it for storing unless
        the throttle holds it back; returns at once."""
        if not isinstance(event, IdentityEvent):
            raise TypeError(f"an IdentityEvent is needed, not {type(event).__name__}")
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # an observer must never break reporting
                LOG.exception("identity listener failed")
        with self._changed:
            admitted = self._throttle.admit(self._clock(), event)
            if admitted is None or self._stopping:
                return
            if len(self._queued) >= MAX_QUEUED:
                self.lost += 1
                return
            self._queued.append(admitted)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_while_running,
                                                name="identity-events", daemon=True)
                self._writer.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Until what was reported so far and the summaries due by now are
        stored (or given up); whether that happened within timeout."""
        with self._changed:
            if self._writer is None or not self._writer.is_alive():
                return not self._queued
            seen = self._idle_rounds
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._idle_rounds > seen, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stores what is queued and every refusal held back (a summary per
        claim), then ends the writer."""
        with self._changed:
            self._stopping = True
            writer = self._writer
            self._changed.notify_all()
        if writer is not None:
            writer.join(timeout)

    def _write_while_running(self) -> None:
        while True:
            with self._changed:
                batch = self._take()
                while not batch and not self._stopping:
                    self._idle_rounds += 1
                    self._changed.notify_all()  # flush() waits for this
                    due = self._throttle.next_due()
                    # The clock may be a test's: never sleep long on what it says.
                    wait = 1.0 if due is None else min(1.0, max(0.01, due - self._clock()))
                    self._changed.wait(wait)
                    batch = self._take()
                if not batch:
                    self._idle_rounds += 1
                    self._changed.notify_all()
                    return
            self._write(batch)

    def _take(self) -> list[Stored]:
        batch = list(self._queued)
        self._queued.clear()
        batch += self._throttle.due(self._clock(), everything=self._stopping)
        return batch

    def _write(self, batch: list[Stored]) -> None:
        events = [(at, IDENTITY_REFUSED, event, detail) for at, event, detail in batch]
        try:
            self._store.write((), events, (), fence=self._fence())
        except Exception as exc:  # deposed, or the database went away: the metrics counted them
            self.lost += len(events)
            LOG.warning("%d identity event(s) not stored: %s", len(events), exc)
            return
        self._announce(events)
