"""Who leads: a lease in the shared database, with an epoch that only grows.

Several instances share one PostgreSQL database; exactly one of them leads
at a time and only the leader changes anything (switches and store). The
lead is a lease in the store's `leadership` row (enforcement.store.database), timed
by the database's clock: taken with one conditional UPDATE when the last
lease ran out, renewed by its holder every quarter of the lease, ended at
once on a clean stop. Each taking adds one to the epoch, which becomes the
OpenFlow generation_id the leader claims the switches with.

Why a lease and not an advisory lock held on a session: a frozen leader
(SIGSTOP, a paused VM, a stalled process) keeps its session open, and with
it the lock, for as long as it is frozen; a lease runs out on the database's
clock whatever its holder does, so the others take over within a bounded time.

The leader stops the moment it cannot prove it still leads: `leading()` is
true only until the send time of the last successful renewal plus the lease
minus a margin, on this process's monotonic clock, so a thread that wakes
from a freeze knows before its next message or write that it has lost the
lead. What slips through that check is fenced twice: by the switches (a
newer generation_id demotes the old master, whose changes they refuse) and
by the store (every write checks the epoch in its own transaction).

With SQLite (one machine, one instance) the instance leads alone: it takes
a new epoch at start and never loses it.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable

from enforcement.domain.errors import NotLeader

LOG = logging.getLogger(__name__)

DEFAULT_LEASE = 2.0


@dataclasses.dataclass(frozen=True)
class Transitions:
    """Who hears of this instance's elections and depositions (given to
    Leadership.start): on a thread of their own, in order."""
    elected: Callable[[int], None] = lambda epoch: None
    deposed: Callable[[int, str], None] = lambda epoch, why: None


class Leadership:
    def __init__(self, store, holder: str, address: str, *, lease: float = DEFAULT_LEASE,
                 solo: bool = False, clock: Callable[[], float] = time.monotonic):
        """holder: this instance's unique name; address: where the others
        forward changing calls to it (host:port of its gRPC API)."""
        if lease <= 0:
            raise ValueError("the lease must be positive")
        self._store = store
        self.holder = holder
        self.address = address
        self.lease = lease
        self.solo = solo
        self._clock = clock
        self._margin = min(0.5, lease / 4)
        self._epoch = 0               # the epoch this instance leads at, 0: it follows
        self._valid_until = 0.0       # monotonic time the lead is proven until
        self.known_epoch = 0          # the newest epoch seen in the store
        self._listener = Transitions()
        self._transitions: queue.Queue = queue.Queue()
        self._raising = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- asking ------------------------------------------------------------

    def leading(self) -> bool:
        return self._epoch > 0 and (self.solo or self._clock() < self._valid_until)

    @property
    def epoch(self) -> int:
        """The epoch this instance leads at (0 when it follows)."""
        return self._epoch if self.leading() else 0

    def fence(self) -> tuple[str, int]:
        """(holder, epoch) for a write that must fail if the lead was lost."""
        epoch = self.epoch
        if not epoch:
            raise NotLeader("this instance does not lead (any more)")
        return self.holder, epoch

    def leader(self):
        """The lease as the store has it (enforcement.store.database.Leader)."""
        return self._store.leader()

    def newest_epoch(self) -> int:
        """The newest epoch, read from the store now (what a deposed leader
        claims SLAVE with: the switches refuse an older one as stale)."""
        try:
            self.known_epoch = max(self.known_epoch, self._store.leader().epoch)
        except Exception as exc:  # the store is away: what is known will do
            LOG.warning("leadership: the store did not answer (%s)", exc)
        return self.known_epoch

    # ---- running -----------------------------------------------------------

    def start(self, listener: Transitions = Transitions()) -> None:
        """Solo: leads at once. Otherwise runs the lease on a thread of its
        own, and elections and depositions (told to listener) on another, in
        order, so that a long takeover never delays a renewal. The listener
        comes here, not to the constructor: what it does with an election
        (controller/process/ha.py) needs the service, which is built with
        this leadership."""
        self._listener = listener
        if self.solo:
            epoch = self._store.acquire(self.holder, self.address, 1e12, force=True)
            self._won(epoch, self._clock())
        else:
            self._spawn(self._lease_loop, "lease")
        self._spawn(self._transition_loop, "leadership")

    def stop(self) -> None:
        """Ends the lease at once (the next leader need not wait it out)."""
        self._stop.set()
        epoch, self._epoch = self._epoch, 0
        self._transitions.put(None)
        for thread in self._threads:
            thread.join(2)
        if epoch:
            try:
                self._store.release(self.holder, epoch)
                LOG.info("leadership at epoch %d released", epoch)
            except Exception as exc:  # the lease runs out by itself anyway
                LOG.warning("could not release the lease: %s", exc)

    def raise_epoch(self, at_least: int) -> int:
        """Leads on at an epoch of at least at_least (the switches have
        seen a newer generation than the store's epoch); returns it, or 0
        when this instance no longer leads."""
        with self._raising:
            epoch = self._epoch
            if not epoch or epoch >= at_least:
                return epoch
            raised = self._store.raise_epoch(self.holder, epoch, at_least)
            if not raised:
                self._lose("another instance took the lead while the epoch was raised")
                return 0
            if self._epoch == epoch:
                self._epoch = self.known_epoch = raised
            return self._epoch

    def step_down(self, why: str) -> None:
        """Something proved another instance leads (a switch or the store
        refused this one's epoch): stop at once, without waiting for the
        lease thread to find out."""
        if self.solo:
            LOG.error("deposed while leading alone (%s): is another instance using "
                      "the same store?", why)
        self._lose(why)

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _lease_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._epoch:
                    self._renew()
                else:
                    self._try_to_lead()
            except Exception as exc:  # the database is away: the lease says what follows
                LOG.warning("leadership: the store did not answer (%s)", exc)
            if self._epoch and not self.leading():
                self._lose("the lease ran out before it could be renewed")
            self._stop.wait(self.lease / 4 if self._epoch else self.lease / 10)

    def _renew(self) -> None:
        sent = self._clock()
        epoch = self._epoch
        if self._store.renew(self.holder, epoch, self.lease):
            if self._epoch == epoch:
                self._valid_until = sent + self.lease - self._margin
        elif self._epoch == epoch:  # (not raised meanwhile: raise_epoch)
            self._lose("another instance holds the lease")

    def _try_to_lead(self) -> None:
        current = self._store.leader()
        self.known_epoch = max(self.known_epoch, current.epoch)
        if current.expires_in > 0:
            return
        sent = self._clock()
        epoch = self._store.acquire(self.holder, self.address, self.lease)
        if epoch:
            self._won(epoch, sent)

    def _won(self, epoch: int, sent: float) -> None:
        self._valid_until = sent + self.lease - self._margin
        self._epoch = self.known_epoch = epoch
        LOG.warning("leading at epoch %d (%s)", epoch, self.holder)
        self._transitions.put(("elected", epoch, ""))

    def _lose(self, why: str) -> None:
        epoch, self._epoch = self._epoch, 0
        if epoch:
            LOG.warning("no longer leading (epoch %d): %s", epoch, why)
            self._transitions.put(("deposed", epoch, why))

    def _transition_loop(self) -> None:
        while True:
            item = self._transitions.get()
            if item is None or self._stop.is_set():
                return
            what, epoch, why = item
            try:
                if what == "elected":
                    if self._epoch == epoch:  # not lost again meanwhile
                        self._listener.elected(epoch)
                else:
                    self._listener.deposed(epoch, why)
            except Exception:
                LOG.exception("leadership %s at epoch %d: handler failed", what, epoch)
