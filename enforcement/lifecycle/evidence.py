"""Evidence: what each live enforcement has done, read from its switches.

Owns the evidence in memory (on the leader), its schedule and its writes.
Every `interval` seconds the leader reads each switch that holds
enforcement state once (enforcement flows by cookie namespace, in chunks,
and its enforcement meters: Network.read_counters), folds what it read into
each enforcement's counters (enforcement.domain.evidence), writes what
changed in one transaction, and stores an evidence event for each
enforcement whose counters moved, at most one per enforcement per
interval. A read costs per switch and per flow, never a request per
enforcement; the lifecycle lock is held only to copy what is live.

A follower reads nothing from the switches: it answers from the store,
and the evidence it shows is the leader's last write. A leader that takes
over loads the store's first.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable

from enforcement.domain import evidence as domain
from enforcement.domain.errors import NotLeader
from enforcement.domain.evidence import Evidence, EvidenceEvent, Owners
from enforcement.domain.model import Enforcement, State
from enforcement.lifecycle.ledger import LIVE, Ledger
from enforcement.lifecycle.network import Network
from enforcement.store.database import Store
from enforcement.store.evidence import row

LOG = logging.getLogger(__name__)

EVIDENCE = "evidence"  # the event kind
READERS = 8  # switches read at once


@dataclasses.dataclass(frozen=True)
class RoundReport:
    """One round, in aggregates only (the metrics never get a series per
    enforcement): (action, verdict) -> (packets, bytes) counted this round."""
    grown: dict[tuple[str, str], tuple[int, int]]
    switches_read: int
    switches_failed: int
    seconds: float
    events: int


class EvidenceBook:
    def __init__(self, network: Network, ledger: Ledger, store: Store, *,
                 leading: Callable[[], bool], interval: float = 10.0,
                 timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self._network = network
        self._ledger = ledger
        self._store = store
        self._leading = leading
        self.interval = interval
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._memory: dict[str, Evidence] = {}
        self._loaded = False          # memory holds the store's (this instance leads)
        self._dirty: set[str] = set()  # changed, not written yet
        self._unreported: set[str] = set()  # moved, no event yet
        self._last_event: dict[str, float] = {}
        self._read_at: dict[int, float] = {}  # dpid -> its last read
        self._labels: dict[tuple, str] = {}
        self._read_since_load: set[int] = set()
        # Switches are read side by side: a read mostly waits for its switch.
        self._pool = concurrent.futures.ThreadPoolExecutor(READERS, "evidence-read")
        self.listeners: list[Callable[[RoundReport], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evidence", daemon=True)

    # ---- the schedule ---------------------------------------------------------

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stops the schedule after one last round: what was counted since
        the last one (proof probes noted in memory among it) is written, not
        lost with the process."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
            try:
                self.run_round()
            except Exception as exc:  # the switches or the store may be gone already
                LOG.warning("evidence: no last round before stopping: %s", exc)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        next_round = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_round - time.monotonic())):
            # Start to start: a round's length does not stretch the interval.
            next_round = max(next_round + self.interval, time.monotonic())
            try:
                self.run_round()
            except Exception:  # keep the schedule alive; the log has it
                LOG.exception("evidence round failed")

    # ---- one round ------------------------------------------------------------

    def run_round(self) -> RoundReport | None:
        """Reads every switch once, folds, writes, reports. None on a follower."""
        if not self._leading():
            with self._lock:
                self._loaded = False
                self._memory.clear()
            return None
        started = time.monotonic()
        owners, plan, records = self._live()
        with self._lock:
            if not self._loaded:
                self._load(records)
        changed: dict[str, Evidence] = {}
        read = failed = 0
        reads = {self._pool.submit(self._read, dpid, flows, meters): dpid
                 for dpid, flows, meters in plan if self._network.is_connected(dpid)}
        for done in concurrent.futures.as_completed(reads):
            dpid = reads[done]
            try:
                counters = done.result()
            except Exception as exc:  # a switch gone or slow: the next round reads it
                failed += 1
                LOG.info("evidence: switch %016x not read: %s", dpid, exc)
                continue
            at = self._clock()
            read += 1
            with self._lock:
                view = collections.ChainMap(changed, self._memory)
                changed.update(domain.fold(view, counters, owners, at, self._label))
                self._read_at[dpid] = at
                self._read_since_load.add(dpid)
        events, grown = self._commit(changed, records)
        report = RoundReport(grown, read, failed, time.monotonic() - started, events)
        for listener in self.listeners:
            try:
                listener(report)
            except Exception:  # an observer must never break the round
                LOG.exception("evidence listener failed")
        return report

    def _read(self, dpid: int, flows: int, meters: bool):
        # Every part read at a switch's first read since memory was loaded:
        # the reader's record of what it saw may be newer than the store's.
        return self._network.read_counters(dpid, flows, meters, self._timeout,
                                           full=dpid not in self._read_since_load)

    def _live(self) -> tuple[Owners, list[tuple[int, int, bool]], dict[str, Enforcement]]:
        """Who owns which cookie and meter, and what each switch should
        hold: copied under the lifecycle lock (a list and a count per
        switch), the rest built outside it."""
        ledger = self._ledger
        with ledger.lock:
            live = list(ledger.live_ordered)
            by_id = ledger.by_id
            desired = ledger.desired
            plan = [(dpid, *desired.counts(dpid)) for dpid in desired.switches()]
        records = {i: by_id[i] for _, i in live if i in by_id}
        by_cookie = {r.cookie: i for i, r in records.items() if r.state is State.ACTIVE}
        by_meter = {(m.dpid, m.meter_id): i for i, r in records.items()
                    if r.state is State.ACTIVE for m in r.meters}
        return (Owners(by_cookie, by_meter),
                [(dpid, rules, meters > 0) for dpid, rules, meters in plan if rules or meters],
                records)

    def _load(self, records: dict[str, Enforcement]) -> None:
        """Memory from the store, for the live enforcements: this instance
        just started or took the lead. Caller holds _lock."""
        stored = self._store.load_evidence(records)
        self._memory = stored
        self._unreported = {i for i, e in stored.items() if e.unreported}
        self._dirty.clear()
        self._read_since_load = set()
        self._loaded = True
        LOG.info("evidence of %d live enforcement(s) loaded from the store", len(stored))

    def _commit(self, changed: dict[str, Evidence],
                records: dict[str, Enforcement]) -> tuple[int, dict]:
        """Events for the enforcements that moved and had none for an
        interval, and one write of everything changed since the last one."""
        now = self._clock()
        grown: dict[tuple[str, str], tuple[int, int]] = collections.defaultdict(lambda: (0, 0))
        events = []
        with self._lock:
            for enforcement_id, after in changed.items():
                record = records.get(enforcement_id)
                action = record.action.kind.value if record else "unknown"
                for verdict, (p, b) in domain.moved_between(
                        self._memory.get(enforcement_id), after).items():
                    before = grown[(action, verdict)]
                    grown[(action, verdict)] = (before[0] + p, before[1] + b)
                after = domain.noted(after, now)
                self._memory[enforcement_id] = after
                if after.unreported:
                    self._unreported.add(enforcement_id)
            self._dirty.update(changed)
            for enforcement_id in list(self._unreported):
                record = records.get(enforcement_id)
                if record is None:
                    self._unreported.discard(enforcement_id)
                    continue
                if now - self._last_event.get(enforcement_id, float("-inf")) < self.interval:
                    continue  # at most one per interval: the next round reports it
                reported = dataclasses.replace(self._memory[enforcement_id], unreported=False)
                self._memory[enforcement_id] = reported
                self._dirty.add(enforcement_id)
                events.append((now, EVIDENCE, EvidenceEvent(record, self._stamped(reported)),
                               words(record, reported)))
            rows = [row(self._stamped(self._memory[i]), now) for i in self._dirty
                    if i in self._memory]
            if not rows and not events:
                self._forget_ended(records)
                return 0, dict(grown)
            written = set(self._dirty)
        # Outside the lock: Get and List read memory meanwhile (only this
        # thread changes it).
        try:
            self._store.write((), events, (), fence=self._ledger.fence(), evidence=rows)
        except Exception as exc:
            # Kept dirty and unreported: the next round writes them again
            # (a follower's next round drops them: the leader counts).
            if not isinstance(exc, NotLeader):
                LOG.warning("evidence not written (%d row(s)): %s", len(rows), exc)
            with self._lock:
                for _, _, event, _ in events:
                    self._memory[event.record.id] = dataclasses.replace(
                        self._memory[event.record.id], unreported=True)
            return 0, dict(grown)
        with self._lock:
            self._dirty -= written
            for _, _, event, _ in events:
                self._last_event[event.record.id] = now
                self._unreported.discard(event.record.id)
            self._forget_ended(records)
        self._ledger.announce(events)
        return len(events), dict(grown)

    def _forget_ended(self, records: dict[str, Enforcement]) -> None:
        """Ended enforcements leave memory once written (Get reads them from
        the store). Caller holds _lock."""
        for enforcement_id in [i for i in self._memory if i not in records]:
            if enforcement_id not in self._dirty:
                del self._memory[enforcement_id]
                self._last_event.pop(enforcement_id, None)
                self._unreported.discard(enforcement_id)

    def _stamped(self, evidence: Evidence) -> Evidence:
        record = self._ledger.by_id.get(evidence.enforcement_id)
        dpids = {r.dpid for r in evidence.rules} | {m.dpid for m in evidence.meters}
        if record is not None:
            dpids |= {r.dpid for r in record.rules}
        times = [self._read_at[d] for d in dpids if d in self._read_at]
        return dataclasses.replace(evidence, read_at=min(times)) if times else evidence

    def _label(self, key: tuple) -> str:
        label = self._labels.get(key)
        if label is None:
            if len(self._labels) > 1_000_000:  # rules come and go: never grow unbounded
                self._labels.clear()
            label = self._labels[key] = domain.rule_label(key)
        return label

    # ---- reading ----------------------------------------------------------------

    def of(self, records: Iterable[Enforcement]) -> dict[str, Evidence]:
        """The evidence of these enforcements, by id (none for one never
        counted): the leader's memory for live ones, the store for the rest
        (and for all of them on a follower), one query for a whole page."""
        wanted = list(records)
        found: dict[str, Evidence] = {}
        missing = []
        with self._lock:
            loaded = self._loaded and self._leading()
            for record in wanted:
                known = self._memory.get(record.id) if loaded else None
                if known is not None:
                    found[record.id] = self._stamped(known)
                elif not (loaded and record.state in LIVE):
                    missing.append(record.id)
        if missing:
            found.update(self._store.load_evidence(missing))
        return found


def words(record: Enforcement, evidence: Evidence) -> str:
    """An evidence event's detail: the totals in one line."""
    parts = []
    for verdict in (domain.DROPPED, domain.METERED, domain.ALLOWED):
        packets, octets = evidence.total(verdict)
        if packets:
            parts.append(f"{verdict} {packets:,} packets ({octets:,} bytes)")
    for meter in evidence.meters:
        parts.append(f"meter {meter.meter_id} let through {meter.passed[0]:,} and dropped "
                     f"{meter.dropped[0]:,} packets")
    return f"{record.action.description}: " + ("; ".join(parts) or "nothing counted")
