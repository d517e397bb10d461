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
                 on_proof: Callable[[str], None] = lambda state: None):
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
        """Proves now, on the calling thread, and keeps the outcome; the
        events and the repair are the schedule's (check)."""
        subject = subject_of(record)
        proofs = []
        for dpid in sorted(switches(record)):
            try:
                proofs.append(self._network.prove(dpid, record.rules, subject))
            except SwitchError as exc:
                proofs.append(Proof(FAILED, self._clock(), f"not probed: {exc}", dpid=dpid))
        proof = combined(proofs, self._clock())
        LOG.debug("enforcement %s: %s by %d probe(s) on %d switch(es)", record.id,
                  proof.state, proof.probes, len(proofs))
        with self._lock:
            if record.id in self._service.ledger.by_id:
                self._latest[record.id] = proof
        self._on_proof(proof.state)
        return proof

    def check(self, record: Enforcement) -> Proof:
        """Proves; a failure is reported and repaired once."""
        before = self.latest(record.id)
        proof = self.prove(record)
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
        for dpid in sorted(switches(record)):
            try:
                change = self._network.audit(dpid, 5.0)
                if change is not None and not change.empty:
                    LOG.warning("switch %016x: %d rule(s) put back before a second proof",
                                dpid, len(change.rules_to_add))
            except SwitchError as exc:
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

    def _next(self) -> Enforcement | None:
        ledger = self._service.ledger
        with self._lock:
            while self._soon:
                record = ledger.by_id.get(self._soon.popitem(last=False)[0])
                if record is not None and record.state is State.ACTIVE:
                    return record
        if not self._round:
            if time.monotonic() - self._round_at < self._every:
                return None
            self._round_at = time.monotonic()
            self._round = [r.id for r in list(ledger.by_id.values())
                           if r.state is State.ACTIVE]
        while self._round:
            record = ledger.by_id.get(self._round.pop())
            if record is not None and record.state is State.ACTIVE:
                return record
        return None

    def _run(self) -> None:
        gap = 1.0 / self._per_second
        while not self._stop.is_set():
            record = self._next() if self._service.leading() else None
            if record is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self.check(record)
            except Exception:  # keep the schedule alive; the log has it
                LOG.exception("proof of %s failed to run", record.id)
            self._stop.wait(gap)


def _detail(proof: Proof) -> str:
    shadows = f"; let through by {'; '.join(proof.shadows)}" if proof.shadows else ""
    return f"{proof.reason}{shadows}"
