"""The enforcements in memory, and the unit of work that makes them durable.

Owns every record's current version and the indexes read on the hot path:
by request id (idempotency), by subscriber and violation (escalation
history), by subscriber (what is live), expiries, and the desired switch
state (DesiredIndex) the records add up to. Changes happen inside
`changing()`: the lifecycle lock and one unit of work, written to the store
in one transaction when the outermost block ends, then announced.

The store is the truth shared by every instance. The leader's memory is
that truth plus what it is writing; a follower's memory trails it and
catches up by revision (`catch_up`) before it answers a read. A leader
that takes over reloads everything (`load`): the one before it may have
written until its last moment.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import heapq
import logging
import threading
from collections.abc import Callable

from sortedcontainers import SortedList

from enforcement.domain.desired import DesiredIndex
from enforcement.domain.errors import EnforcementError, NotLeader, OutcomeUnknown, StoreUnavailable
from enforcement.domain.model import Decision, Enforcement, State
from enforcement.store.database import Deposed, Store

LOG = logging.getLogger(__name__)

LIVE = (State.ACTIVE, State.PENDING)


@dataclasses.dataclass
class _Work:
    """What a unit of work changed, waiting for its one commit."""
    records: list = dataclasses.field(default_factory=list)
    events: list = dataclasses.field(default_factory=list)  # (at, kind, record, detail)
    audits: list = dataclasses.field(default_factory=list)
    journal: list = dataclasses.field(default_factory=list)  # (id, previous version)
    touched: dict = dataclasses.field(default_factory=dict)  # dpid -> (keys, meter ids)
    # (how many records, their rows for the store) when encoded ahead of the
    # commit (Ledger.encode); stale once more records come.
    encoded: tuple[int, list] | None = None

    def mark(self) -> tuple[int, int, int, int]:
        return len(self.journal), len(self.records), len(self.events), len(self.audits)

    def rows(self, store: Store) -> list[dict]:
        """The latest version of each record, as the store writes it: the
        rows encoded ahead (Ledger.encode) while no record came since."""
        if self.encoded is not None and self.encoded[0] == len(self.records):
            return self.encoded[1]
        return store.encode({r.id: r for r in self.records}.values())


class Ledger:
    def __init__(self, store: Store, clock: Callable[[], float], *,
                 fence: Callable[[], tuple[str, int] | None] = lambda: None,
                 on_deposed: Callable[[str], None] = lambda why: None,
                 restore: Callable[[], bool] = lambda: True):
        """fence() -> (holder, epoch) every write must still lead at, or
        None (alone on the store); it raises NotLeader when this instance
        does not lead. on_deposed(why): the store refused the epoch.
        restore(): the switches brought back to what memory holds after the
        store refused a unit of work; True once every connected one confirmed."""
        self.store = store
        self.clock = clock
        self._fence = fence
        self._on_deposed = on_deposed
        self._restore = restore
        # One lock for the whole lifecycle keeps apply/lift/expiry/repair of
        # the same switch from interleaving. Decisions hold it per batch
        # (group commit), not per call.
        self.lock = threading.RLock()
        self.listeners: list[Callable[[list], None]] = []  # called with committed events
        self._depth = 0
        self.load()

    def load(self) -> None:
        """Everything afresh from the store."""
        with self.lock:
            self.by_id: dict[str, Enforcement] = {}
            # Every id in creation order ((created_at, serial), id): List
            # pages through it without sorting 100,000 records per call.
            self.ordered: list[tuple[tuple[float, int], str]] = []
            self.by_request: dict[str, str] = {}
            # (subscriber ip, violation) -> record ids, oldest first: the
            # history escalation reads without scanning every enforcement.
            self.history: dict[tuple, list[str]] = {}
            self.failed: dict[tuple, set[str]] = {}  # the FAILED ids of each history
            self.expiries: list[tuple[float, str]] = []  # heap of (expires_at, id)
            self.desired = DesiredIndex()
            self.live_by_ip: dict[str, set[str]] = {}  # subscriber address -> live ids
            # The subscriber's MAC (where it was planned) -> live ids: an
            # enforcement belongs to the subscriber, and follows it by MAC
            # (a new address, another port), never by address.
            self.live_by_mac: dict[str, set[str]] = {}
            # Live enforcements by action, kept as they change: a metrics
            # scrape reads it without walking 100,000 records under the lock.
            self.live_by_action: collections.Counter[str] = collections.Counter()
            # The live ones alone, in the same order: a List of what is in
            # force (enforcementctl list, the view) pages through them without
            # walking past every ended record first.
            self.live_ordered: SortedList = SortedList()
            self.work = _Work()
            records, self.revision = self.store.changed_since(-1)
            for record in records:
                self.put(record)
            self.work = _Work()
            self.next_serial = 1 + max((r.serial for r in self.by_id.values()), default=0)

    def catch_up(self) -> None:
        """A follower's memory brought to the store's latest revision."""
        with self.lock:
            if self.revision < 0:  # refused writes may linger in memory
                self.load()
                return
            records, revision = self.store.changed_since(self.revision)
            for record in records:
                self.put(record)
            self.work = _Work()
            self.revision = revision
            if records:
                self.next_serial = max(self.next_serial,
                                       1 + max(r.serial for r in records))

    # ---- the unit of work ----------------------------------------------------

    @contextlib.contextmanager
    def changing(self):
        """The lifecycle lock, and one unit of work: whatever changes inside
        is written in one transaction when the outermost block ends, and only
        then announced. Refused (NotLeader) on an instance that does not lead."""
        with self.lock:
            if self._depth == 0:
                try:
                    self._fence()
                except NotLeader as exc:
                    # Before anything was touched: the caller may say so.
                    raise NotLeader(f"{exc}: nothing changed") from None
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.flush()

    def flush(self) -> None:
        work = self.work
        if not (work.records or work.events or work.audits):
            self.work = _Work()
            return
        try:
            self.revision = self.store.write((), work.events, work.audits,
                                             fence=self._fence(), rows=work.rows(self.store))
        except (Deposed, NotLeader) as exc:
            # The lease ran out (or another instance took it) after the
            # switches took the change: they are put back first, while they
            # may still take it from here (the new leader's reconcile could
            # have run before they changed). Memory is reloaded when this
            # instance leads again; until then it only follows.
            try:
                self.rollback((0, 0, 0, 0))
                restored = self._restore()
            finally:
                self.work = _Work()
                self.revision = -1
                self._on_deposed(str(exc))
            if not restored:
                raise OutcomeUnknown(
                    f"not written: {exc}; a switch did not confirm being put back, so its "
                    "rules may hold until the new leader's drift audit. Send the same "
                    "request again (same request_id): it is answered with the enforcement "
                    "if one was made, and makes it otherwise") from None
            raise NotLeader(f"not written: {exc}; the switches were put back: nothing "
                            "changed") from None
        except Exception as exc:
            raise self._undo_unwritten(exc) from exc
        self.work = _Work()
        self.announce(work.events)

    def _undo_unwritten(self, exc: Exception) -> EnforcementError:
        """The store refused the unit of work (the database went away, a
        statement failed, the disk is read-only): memory goes back to before
        it, and the switches with it, before anyone is answered. An
        acknowledged decision is durable; a refused one is undone at once,
        not at the next audit round."""
        why = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        LOG.error("the store did not take %d record(s) and %d event(s) (%s); undoing them",
                  len(self.work.records), len(self.work.events), why)
        try:
            self.rollback((0, 0, 0, 0))
            restored = self._restore()
        finally:
            self.work = _Work()
        if restored:
            return StoreUnavailable(
                f"the store did not take the write ({why}); the switches were put back: "
                "nothing changed. Send the request again")
        return OutcomeUnknown(
            f"the store did not take the write ({why}) and a switch did not confirm being "
            "put back, so its rules may still hold until the next drift audit. Send the same "
            "request again (same request_id): it is answered with the enforcement if one "
            "was made, and makes it otherwise")

    def announce(self, events: list) -> None:
        for listener in self.listeners:
            listener(events)

    def mark(self) -> tuple[int, int, int, int]:
        return self.work.mark()

    def encode(self) -> None:
        """The unit of work's records encoded for the store now (while a
        switch confirms): the commit then only writes them."""
        work = self.work
        work.encoded = (len(work.records), work.rows(self.store))

    # ---- records -------------------------------------------------------------

    def save(self, record: Enforcement) -> Enforcement:
        """Takes a record's new version into memory and the desired state now,
        into the store at the end of the unit of work."""
        self.put(record)
        self.work.records.append(record)
        return record

    def put(self, record: Enforcement) -> None:
        old = self.by_id.get(record.id)
        self.by_id[record.id] = record
        self.by_request[record.decision.request_id] = record.id
        if old is None:
            self.history.setdefault(history_key(record.decision), []).append(record.id)
            # New records come last but for a clock step or a follower's
            # catch-up: an append, or a rare insertion.
            entry = (order(record), record.id)
            if not self.ordered or self.ordered[-1] < entry:
                self.ordered.append(entry)
            else:
                bisect.insort(self.ordered, entry)
        if record.expires_at is not None and (old is None or old.expires_at
                                              != record.expires_at):
            heapq.heappush(self.expiries, (record.expires_at, record.id))
        if record.state is State.FAILED:
            self.failed.setdefault(history_key(record.decision), set()).add(record.id)
        self.work.journal.append((record.id, old))
        self._index(old, record)

    def _index(self, old: Enforcement | None, new: Enforcement | None) -> None:
        was = old if old is not None and old.state in LIVE else None
        now = new if new is not None and new.state in LIVE else None
        if was is not None:
            self.live_by_action[was.action.kind.value] -= 1
        if now is not None:
            self.live_by_action[now.action.kind.value] += 1
        if (was is not None and now is not None
                and was.rules == now.rules and was.meters == now.meters):
            return
        if was is not None:
            self.live_ordered.discard((order(was), was.id))
            self.desired.remove(order(was), was.rules, was.meters)
            self.touch(was)
            ip = str(was.decision.subscriber.ip)
            _unfile(self.live_by_ip, ip, was.id)
            _unfile(self.live_by_mac, was.location.mac, was.id)
        if now is not None:
            self.live_ordered.add((order(now), now.id))
            self.desired.add(order(now), now.rules, now.meters)
            self.touch(now)
            self.live_by_ip.setdefault(str(now.decision.subscriber.ip), set()).add(now.id)
            self.live_by_mac.setdefault(now.location.mac, set()).add(now.id)

    def rollback(self, mark: tuple[int, int, int, int]) -> None:
        """Undoes every record change since mark (memory and desired state),
        and forgets the writes; what the switches must now hold is touched."""
        journal, records, events, audits = mark
        undo = self.work.journal[journal:]
        self.work.encoded = None
        del self.work.journal[journal:], self.work.records[records:]
        del self.work.events[events:], self.work.audits[audits:]
        for record_id, old in reversed(undo):
            current = self.by_id[record_id]
            self._index(current, old)
            if old is None or old.state is not State.FAILED:
                self.failed.get(history_key(current.decision), set()).discard(record_id)
            if old is not None:
                self.by_id[record_id] = old
                continue
            del self.by_id[record_id]
            entry = (order(current), record_id)
            at = bisect.bisect_left(self.ordered, entry)
            if at < len(self.ordered) and self.ordered[at] == entry:
                del self.ordered[at]
            self.by_request.pop(current.decision.request_id, None)
            history = self.history.get(history_key(current.decision), [])
            if record_id in history:
                history.remove(record_id)

    def touch(self, record: Enforcement) -> None:
        """Marks an enforcement's rules and meters as to be compared with the
        switches at the next push."""
        for rule in record.rules:
            self.work.touched.setdefault(rule.dpid, (set(), set()))[0].add(rule.key)
        for meter in record.meters:
            self.work.touched.setdefault(meter.dpid, (set(), set()))[1].add(meter.meter_id)

    def event(self, kind: str, record: Enforcement, detail: str) -> None:
        self.work.events.append((self.clock(), kind, record, detail))

    def audit(self, actor: str, call: str, outcome: str, record: Enforcement,
              detail: str) -> None:
        self.work.audits.append(dict(
            at=self.clock(), actor=actor or "unknown", call=call, outcome=outcome,
            enforcement_id=record.id, case_id=record.decision.case_id,
            clause=record.escalation.clause, detail=detail))

    def due(self, now: float) -> list[Enforcement]:
        """Pops the live enforcements whose expiry has come."""
        due = []
        while self.expiries and self.expiries[0][0] <= now:
            at, record_id = heapq.heappop(self.expiries)
            record = self.by_id.get(record_id)
            if record is not None and record.state in LIVE and record.expires_at == at:
                due.append(record)
        return due

    def reschedule(self, record: Enforcement) -> None:
        """Back on the expiry schedule (its expiry could not be carried out)."""
        if record.expires_at is not None:
            heapq.heappush(self.expiries, (record.expires_at, record.id))

    def live(self, ip: str) -> list[Enforcement]:
        return sorted((self.by_id[i] for i in self.live_by_ip.get(ip, ())),
                      key=lambda r: (r.created_at, r.id))

    def live_of(self, mac: str) -> list[Enforcement]:
        """The live enforcements of the subscriber with this MAC."""
        return sorted((self.by_id[i] for i in self.live_by_mac.get(mac, ())),
                      key=lambda r: (r.created_at, r.id))


def _unfile(index: dict[str, set[str]], key: str, record_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(record_id)
        if not ids:
            del index[key]


def order(record: Enforcement) -> tuple[float, int]:
    return (record.created_at, record.serial)


def history_key(decision: Decision, address: str | None = None) -> tuple:
    """Where a decision's history is kept: by the address it named (the
    decider reads the histories of every address of the subscriber)."""
    return (address or str(decision.subscriber.ip), decision.violation)


def switches(record: Enforcement) -> list[int]:
    """Every switch an enforcement has state on, access switch first."""
    others = {r.dpid for r in record.rules} | {m.dpid for m in record.meters}
    return [record.location.dpid, *sorted(others - {record.location.dpid})]
