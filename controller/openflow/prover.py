"""Proves enforcements in the switch's data plane (enforcement/domain/probes.py).

A proof of one enforcement on one switch: its rules' counters are read, its
probes are sent into the pipeline (packet-outs to the first table, as from
the subscriber's port) with a barrier, the catch rule returns what got past
the enforcement tables, and the counters are read again. A probe that must
be stopped fails the proof when it comes back, or when its rule's counter
did not move (the switch holds the rule and does not apply it); a probe
that must pass fails it when it does not come back. When a probe got past,
the enforcement tables are read to name the rule that took it (someone
else's, higher in priority): the proof says so and leaves it alone.

Caught frames may arrive after the barrier's reply (Open vSwitch sends
packet-ins from its own loop), so the prover waits for the probes that
must come back, and a short while for those that must not.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from controller.openflow import compiler, probeframes
from controller.openflow.probetally import ProbeTally
from enforcement.domain import pipeline
from enforcement.domain.flows import FlowRule
from enforcement.domain.probes import (
    FAILED,
    PASS,
    PROVEN,
    STOP,
    UNPROVABLE,
    Probe,
    Proof,
    Subject,
    covers,
    probes_for,
)

WAIT = 0.5          # for what must come back; what must not has this long to
# Probes that must come back, per batch: under the catch rule's meter burst
# (controller/openflow/dataplane.py PROBE_PPS).
CATCH_BURST = 80


class Prover:
    def __init__(self, transact: Callable, timeout: float = 3.0,
                 clock: Callable[[], float] = time.time, tally: ProbeTally | None = None):
        """tally: where each probe a rule was seen to count is noted, for
        evidence to leave out (controller/openflow/probetally.py)."""
        self._transact = transact
        self._tally = tally or ProbeTally()
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._nonces = itertools.count()
        self._waiting: dict[tuple[int, int], bool] = {}   # (dpid, nonce) -> came back

    def caught(self, dpid: int, data: bytes) -> None:
        """A frame the catch rule returned (from the packet-in path)."""
        nonce = probeframes.nonce_of(data)
        if nonce is None:
            return
        with self._lock:
            if (dpid, nonce) in self._waiting:
                self._waiting[(dpid, nonce)] = True
                self._arrived.notify_all()

    def prove(self, dpid: int, rules: tuple[FlowRule, ...], subject: Subject) -> Proof:
        return self.prove_many(dpid, [("", rules, subject)])[""]

    def prove_many(self, dpid: int, items: list[tuple[str, tuple[FlowRule, ...], Subject]]
                   ) -> dict[str, Proof]:
        """Several enforcements on one switch (key, rules, subject), in
        batches: one read of their counters before and after, their probes
        in one transaction, one wait. A batch's probes that must come back
        stay under the catch meter's burst, or the meter would drop some."""
        out: dict[str, Proof] = {}
        batch: dict[str, tuple] = {}
        passing = 0
        for key, rules, subject in items:
            mine = tuple(r for r in rules if r.dpid == dpid)
            probes = probes_for(mine, subject)
            back = sum(1 for p in probes if p.expect == PASS)
            if batch and passing + back > CATCH_BURST:
                out.update(self._batch(dpid, batch))
                batch, passing = {}, 0
            batch[key] = (mine, probes)
            passing += back
        if batch:
            out.update(self._batch(dpid, batch))
        return out

    def _batch(self, dpid: int, planned_rules: dict[str, tuple]) -> dict[str, Proof]:
        planned = {key: probes for key, (_, probes) in planned_rules.items()}
        cookies = sorted({r.cookie for rules, _ in planned_rules.values() for r in rules})
        with self._lock:
            sent = {key: [(probe, self._nonce(dpid)) for probe in probes]
                    for key, probes in planned.items()}
        everything = [pair for pairs in sent.values() for pair in pairs]
        before: dict = {}
        after: dict = {}
        back: dict[int, bool] = {}
        frames = {n: probeframes.frame(p, n) for p, n in everything}
        try:
            # No evidence read of this switch meanwhile: it sees every probe
            # both counted and noted, or none.
            with self._tally.holding(dpid):
                if everything:
                    before = self._counters(dpid, cookies)
                    self._transact(dpid, [compiler.packet_out(p.in_port, frames[n],
                                                              pipeline.PROBE_MARK)
                                          for p, n in everything], self._timeout)
                    back = self._wait(dpid, [n for p, n in everything if p.expect == PASS])
                    after = self._counters(dpid, cookies)
                for probe, nonce in everything:
                    if probe.rule is not None and (after.get(probe.rule.key, 0)
                                                   > before.get(probe.rule.key, 0)):
                        self._tally.counted(dpid, probe.rule, len(frames[nonce]))
        finally:
            with self._lock:
                for _, nonce in everything:
                    self._waiting.pop((dpid, nonce), None)
        now = self._clock()
        tables: list[FlowRule] | None = None
        out = {}
        for key, pairs in sent.items():
            if not pairs:
                out[key] = Proof(UNPROVABLE, now, "nothing here a probe can show", dpid=dpid)
                continue
            failures, shadows = [], []
            for probe, nonce in pairs:
                came = back.get(nonce, False)
                moved = (after.get(probe.rule.key, 0) - before.get(probe.rule.key, 0)
                         if probe.rule is not None else None)
                if probe.expect == STOP and came:
                    failures.append(f"passed where it must be stopped: {probe.why}")
                    tables = self._tables(dpid) if tables is None else tables
                    shadows += _shadows(tables, probe, cookies)
                elif probe.expect == PASS and not came:
                    failures.append(f"stopped where it must pass: {probe.why}")
                elif moved is not None and moved < 1:
                    failures.append(f"the rule's counter did not move: {probe.why}")
            out[key] = (Proof(FAILED, now, "; ".join(failures), tuple(dict.fromkeys(shadows)),
                              len(pairs), dpid) if failures
                        else Proof(PROVEN, now, "", (), len(pairs), dpid))
        return out

    def _nonce(self, dpid: int) -> int:
        """Caller holds the lock."""
        while True:
            nonce = next(self._nonces) % probeframes.NONCES
            if (dpid, nonce) not in self._waiting:
                self._waiting[(dpid, nonce)] = False
                return nonce

    def _wait(self, dpid: int, wanted: list[int]) -> dict[int, bool]:
        """Until every probe that must come back did (and a fifth of WAIT
        passed, for those that must not), or WAIT."""
        start = time.monotonic()
        deadline, floor = start + WAIT, start + WAIT / 5
        with self._lock:
            while True:
                now = time.monotonic()
                done = all(self._waiting.get((dpid, n)) for n in wanted)
                if now >= deadline or (done and now >= floor):
                    break
                self._arrived.wait((floor if done else deadline) - now)
            return {n: came for (d, n), came in self._waiting.items() if d == dpid}

    def _counters(self, dpid: int, cookies: list[int]) -> dict:
        requests = [compiler.cookie_stats_request(c) for c in cookies]
        replies = self._transact(dpid, requests, self._timeout)
        return {compiler.rule_from_stats(dpid, st).key: st.packet_count
                for q in requests for st in replies.get(q.xid, [])}

    def _tables(self, dpid: int) -> list[FlowRule]:
        """Every flow of the tables a probe crosses before the catch rule."""
        requests = [compiler.table_stats_request(t)
                    for t in (pipeline.TABLE_ENFORCE, pipeline.TABLE_METER)]
        replies = self._transact(dpid, requests, self._timeout)
        return [compiler.rule_from_stats(dpid, st)
                for q in requests for st in replies.get(q.xid, [])]


def _shadows(tables: list[FlowRule], probe: Probe, ours: list[int]) -> list[str]:
    """The rules of someone else's, above the probe's own, that take it."""
    if probe.rule is None:
        return []
    packet = {**dict(probe.fields), **({"in_port": probe.in_port}
                                       if probe.in_port is not None else {})}
    return [f"table {rule.table_id} priority {rule.priority} cookie 0x{rule.cookie:x} "
            + (",".join(f"{k}={v}" for k, v in rule.match_text()) or "*")
            for rule in tables
            if rule.cookie not in ours and rule.table_id == probe.rule.table_id
            and rule.priority >= probe.rule.priority and covers(rule.match, packet)]
