"""Every live enforcement proven in the data plane (enforcement/domain/probes.py).

A barrier says a switch took the rules; a proof says its pipeline applies
them: probes sent as from the subscriber must be stopped where the
enforcement stops traffic and pass where it lets traffic on, and the rules'
counters must move (the switch side: controller/openflow/prover.py).

When: soon after an enforcement is applied, re-applied or follows its
subscriber; soon after one of its switches reconnects; and on a schedule
that visits every live enforcement in turn at a bounded rate (per_second
proofs: 100,000 live at the default 20/s is one round in 83 minutes, a
thousand in 50 s, a few every 10 s), so probing costs the same at any size.

A failed proof is never silent: it is logged, counted, and an event
(proof_failed, on Watch) says what failed and names any rule of someone
else's that let a probe through; then it is repaired once: the drift audit
of its switches (a rule deleted behind the controller's back is put back)
and a second proof. When a failed enforcement proves again, proof_restored.
A rule of someone else's is named, never removed. Only the leader proves:
a follower's switches do not take its packet-outs.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from enforcement.domain.errors import EnforcementError, NotLeader, SwitchError
from enforcement.domain.model import Enforcement, State
from enforcement.domain.probes import FAILED, PROVEN, UNPROVABLE, Proof, Subject
from enforcement.lifecycle.ledger import switches

LOG = logging.getLogger(__name__)

# Enforcements of one switch handed down at once at most (the switch side
# splits them further, under its catch meter's burst).
BATCH = 256
# A round of the schedule starts at most this often: a few live
# enforcements are proven every 10 s, not per_second times a second.
EVERY = 10.0
# Events that put an enforcement's rules in place anew: proven soon after.
_PLACED = frozenset({"applied", "reapplied", "moved"})
_ENDED = frozenset({"lifted", "expired"})


def subject_of(record: Enforcement) -> Subject:
    v4 = next((a for a in record.addresses if ":" not in a), None)
    return Subject(record.location.mac, record.location.port, v4,
                   tuple(a for a in record.addresses if ":" in a))


def combined(proofs: list[Proof], at: float) -> Proof:
    """One enforcement's proofs on its switches as one."""
    failed = [p for p in proofs if p.state == FAILED]
    if failed:
        return Proof(FAILED, at, "; ".join(f"switch {p.dpid:016x}: {p.reason}" for p in failed),
                     tuple(s for p in failed for s in p.shadows),
                     sum(p.probes for p in proofs), failed[0].dpid)
    if any(p.state == PROVEN for p in proofs):
        return Proof(PROVEN, at, "", (), sum(p.probes for p in proofs))
    return Proof(UNPROVABLE, at, "no rule of it can be shown by a probe")


class Proofs:
    def __init__(self, service, network, *, per_second: float = 20.0,
                 every: float = EVERY, clock: Callable[[], float] = time.time,
                 on_proof: Callable[[str, int], None] = lambda state, probes: None):
        self._service = service
        self._network = network
        self._per_second = per_second
        self._clock = clock
        self._on_proof = on_proof
        self._lock = threading.Lock()
        self._latest: dict[str, Proof] = {}
        self._soon: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._round: list[str] = []
        self._every = every
        self._round_at = -every
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proofs", daemon=True)
        service.add_event_listener(self._on_event)

    # ---- what is known --------------------------------------------------------

    def latest(self, enforcement_id: str) -> Proof | None:
        with self._lock:
            return self._latest.get(enforcement_id)

    # ---- when ------------------------------------------------------------------

    def soon(self, enforcement_id: str) -> None:
        with self._lock:
            self._soon[enforcement_id] = None
        self._wake.set()

    def switch_back(self, dpid: int) -> None:
        """A switch reconnected: what is enforced on it is proven again."""
        for record in list(self._service.ledger.by_id.values()):
            if record.state is State.ACTIVE and dpid in switches(record):
                self.soon(record.id)

    def _on_event(self, kind: str, record) -> None:
        if kind in _PLACED:
            self.soon(record.id)
        elif kind in _ENDED:
            with self._lock:
                self._latest.pop(record.id, None)

    # ---- proving --------------------------------------------------------------

    def prove(self, record: Enforcement) -> Proof:
        return self.prove_all([record])[record.id]

    def prove_all(self, records: list[Enforcement]) -> dict[str, Proof]:
        """Proves now, on the calling thread, one batch per switch, and
        keeps the outcomes; the events and the repair are check's."""
        by_switch: dict[int, list] = collections.defaultdict(list)
        for record in records:
            for dpid in switches(record):
                by_switch[dpid].append((record.id, record.rules, subject_of(record)))
        found: dict[str, list[Proof]] = collections.defaultdict(list)
        for dpid, items in sorted(by_switch.items()):
            for at in range(0, len(items), BATCH):
                part = items[at:at + BATCH]
                try:
                    for key, proof in self._network.prove_many(dpid, part).items():
                        found[key].append(proof)
                except SwitchError as exc:
                    for key, _, _ in part:
                        found[key].append(Proof(FAILED, self._clock(), f"not probed: {exc}",
                                                dpid=dpid))
        out = {}
        for record in records:
            proof = combined(found[record.id], self._clock())
            LOG.debug("enforcement %s: %s by %d probe(s)", record.id, proof.state,
                      proof.probes)
            with self._lock:
                if record.id in self._service.ledger.by_id:
                    self._latest[record.id] = proof
            self._on_proof(proof.state, proof.probes)
            out[record.id] = proof
        return out

    def check(self, record: Enforcement, proof: Proof | None = None,
              before: Proof | None = None) -> Proof:
        """Proves (unless given the proof, and the one before it); a
        failure is reported and repaired once."""
        if proof is None:
            before = self.latest(record.id)
            proof = self.prove(record)
        if not self._service.leading() or (proof.state == FAILED and proof.probes == 0):
            # Deposed meanwhile (its switches take no packet-out from it), or
            # a switch that could not be probed: nothing shown either way,
            # nothing to report or repair (found by CI: a deposed instance
            # repairing a switch it no longer masters).
            return proof
        if proof.state == FAILED:
            LOG.warning("enforcement %s failed its proof: %s%s", record.id, proof.reason,
                        f" (let through by {'; '.join(proof.shadows)})" if proof.shadows
                        else "", extra={"enforcement_id": record.id,
                                        "case_id": record.decision.case_id})
            if before is None or before.state != FAILED or before.reason != proof.reason:
                self._event("proof_failed", record, _detail(proof))
            self._repair(record)
            again = self.prove(record)
            if again.state != FAILED:
                LOG.warning("enforcement %s proven again after repair", record.id)
                self._event("proof_restored", record, "proven again after a repair")
            return again
        if before is not None and before.state == FAILED:
            self._event("proof_restored", record, "proven again")
        return proof

    def _repair(self, record: Enforcement) -> None:
        """The drift audit of its switches: what was deleted or altered
        behind the controller's back is put back, and reported as drift."""
        for dpid in switches(record):
            try:
                self._service.reconciler.repair_switch(dpid)
            except EnforcementError as exc:
                LOG.warning("switch %016x: repair before a second proof failed: %s",
                            dpid, exc)

    def _event(self, kind: str, record: Enforcement, detail: str) -> None:
        ledger = self._service.ledger
        try:
            with ledger.changing():
                current = ledger.by_id.get(record.id)
                if current is not None and current.state is State.ACTIVE:
                    ledger.event(kind, current, detail)
        except (NotLeader, EnforcementError) as exc:
            LOG.warning("enforcement %s: %s not recorded: %s", record.id, kind, exc)

    # ---- the schedule -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def _next(self, count: int) -> list[Enforcement]:
        """Up to count live enforcements: those asked for soon first, then
        the round's."""
        ledger = self._service.ledger
        picked: list[Enforcement] = []
        with self._lock:
            while self._soon and len(picked) < count:
                record = ledger.by_id.get(self._soon.popitem(last=False)[0])
                if record is not None and record.state is State.ACTIVE:
                    picked.append(record)
        if not self._round and time.monotonic() - self._round_at >= self._every:
            self._round_at = time.monotonic()
            self._round = [r.id for r in list(ledger.by_id.values())
                           if r.state is State.ACTIVE]
        while self._round and len(picked) < count:
            record = ledger.by_id.get(self._round.pop())
            if record is not None and record.state is State.ACTIVE and record not in picked:
                picked.append(record)
        return picked

    def _run(self) -> None:
        """Every tenth of a second, a tenth of a second's worth of proofs
        (per_second), in one batch per switch."""
        share = max(1, round(self._per_second / 10))
        while not self._stop.is_set():
            started = time.monotonic()
            records = self._next(share) if self._service.leading() else []
            if not records:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                before = {r.id: self.latest(r.id) for r in records}
                for record_id, proof in self.prove_all(records).items():
                    record = next(r for r in records if r.id == record_id)
                    self.check(record, proof, before[record_id])
            except Exception:  # keep the schedule alive; the log has it
                LOG.exception("a round of proofs failed to run")
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))


def _detail(proof: Proof) -> str:
    shadows = f"; let through by {'; '.join(proof.shadows)}" if proof.shadows else ""
    return f"{proof.reason}{shadows}"
