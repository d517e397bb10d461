"""Probe packets the enforcement rules counted, kept apart from evidence.

A proof sends probes through an enforcement's own rules
(controller/openflow/prover.py): each moves the counter of the rule it
proves, and its meter's when that rule meters. Evidence must count what the
subscriber did, not what the controller sent, so the prover notes here each
probe its rule was seen to count, and the counter reader
(controller/openflow/counters.py) takes what was noted since its last read
of the switch and hands it with the samples, to be subtracted
(enforcement/domain/evidence.py). One lock per switch keeps a proof and a
read apart: a read sees all of a proof's probes both counted and noted, or
none of them.

What this does not see: a probe that crosses someone else's rule on its
way (a narrowness probe, or one let on by an allow rule, meeting another
enforcement's rate limit in the meter table) is counted there as traffic.
"""
from __future__ import annotations

import threading

from enforcement.domain.flows import ApplyMeter, FlowRule

Tallies = dict  # key -> [packets, bytes]


class ProbeTally:
    def __init__(self):
        self._lock = threading.Lock()
        self._switch_locks: dict[int, threading.Lock] = {}
        # dpid -> {(cookie, FlowRule.key): [packets, bytes]}
        self._flows: dict[int, Tallies] = {}
        self._meters: dict[int, Tallies] = {}   # dpid -> {meter id: [packets, bytes]}

    def holding(self, dpid: int) -> threading.Lock:
        """The switch's lock: a proof, or a read, at a time."""
        with self._lock:
            return self._switch_locks.setdefault(dpid, threading.Lock())

    def counted(self, dpid: int, rule: FlowRule, size: int) -> None:
        """A probe of size bytes (its frame) that rule counted."""
        with self._lock:
            _add(self._flows.setdefault(dpid, {}), (rule.cookie, rule.key), 1, size)
            for instruction in rule.instructions:
                if isinstance(instruction, ApplyMeter):
                    _add(self._meters.setdefault(dpid, {}), instruction.meter_id, 1, size)

    def take(self, dpid: int) -> tuple[Tallies, Tallies]:
        """What was noted on the switch since the last take: (flows, meters)."""
        with self._lock:
            return self._flows.pop(dpid, {}), self._meters.pop(dpid, {})

    def put_back(self, dpid: int, flows: Tallies, meters: Tallies) -> None:
        """What a read took and did not use (a part it did not read)."""
        with self._lock:
            for key, (packets, octets) in flows.items():
                _add(self._flows.setdefault(dpid, {}), key, packets, octets)
            for meter_id, (packets, octets) in meters.items():
                _add(self._meters.setdefault(dpid, {}), meter_id, packets, octets)

    def forget(self, dpid: int) -> None:
        """The switch disconnected: whatever it counted is gone with its flows."""
        with self._lock:
            self._flows.pop(dpid, None)
            self._meters.pop(dpid, None)


def _add(tallies: Tallies, key, packets: int, octets: int) -> None:
    found = tallies.setdefault(key, [0, 0])
    found[0] += packets
    found[1] += octets
