"""What a switch's enforcement flows and meters counted, read in chunks, and
only where something moved.

A switch's enforcement flows are split by cookie into parts of about
COUNTER_CHUNK flows (as the drift audit splits them, in smaller parts). A read first asks,
in one transaction, each part's aggregate (flow count, packets and bytes
in all: one small reply each); only a part whose aggregate differs from
the last read's has its flows' statistics read, one part per request, one
after the other on the switch's connection, so a decision's barrier waits
behind one part at most, never behind the whole table. Parsing flow
statistics is what costs (os-ken decodes every match: about 40 ms of CPU
per 1,024 flows here, bench/evidence_cost.py), an aggregate next to
nothing (about 13 us to build the request and parse the reply): so the
parts are small, and a subscriber whose block matched costs the parsing
of its part's 128 flows, not of its switch's whole table. A part where a
proof's probes were noted (controller/openflow/probetally.py) is read at
the next read whatever its aggregate, so that they are handed on at once. Then, when it holds
enforcement meters, one meter-statistics request for all of them. Never a
request per enforcement.

An unchanged aggregate can hide a counter reset and as much growth
elsewhere in the same part: those are counted at the part's next read,
from each flow's own last reading (enforcement/domain/evidence.py), late
but not lost.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from controller.openflow import compiler
from controller.openflow.probetally import ProbeTally
from enforcement.domain import pipeline
from enforcement.domain.evidence import FlowSample, MeterSample, SwitchCounters, verdict_of

COUNTER_CHUNK = 128


def chunks_for(expected: int, chunk: int = COUNTER_CHUNK) -> int:
    """How many parts (a power of two, by cookie) make reads of about chunk flows."""
    parts = 1
    while expected > parts * chunk:
        parts *= 2
    return parts


class CounterReader:
    def __init__(self, transact: Callable, probes: ProbeTally | None = None):
        """probes: what proofs sent through the rules, handed with the
        samples so that evidence leaves them out."""
        self._transact = transact
        self.probes = probes or ProbeTally()
        self._lock = threading.Lock()
        # dpid -> {(part, parts): (flows, packets, bytes)} at its last full read
        self._aggregates: dict[int, dict[tuple[int, int], tuple[int, int, int]]] = {}

    def forget(self, dpid: int) -> None:
        self.probes.forget(dpid)
        with self._lock:
            self._aggregates.pop(dpid, None)

    def read(self, dpid: int, flows: int, meters: bool, timeout: float,
             full: bool = False) -> SwitchCounters:
        """flows: how many enforcement flows the switch should hold (sets
        the parts); meters: whether it holds enforcement meters; full:
        every part read, whatever its aggregate (a reader whose last counts
        were not kept: a new leader)."""
        with self.probes.holding(dpid):
            probed, metered_probes = self.probes.take(dpid)
            try:
                return self._read(dpid, flows, meters, timeout, full, probed, metered_probes)
            finally:  # what no sample took waits for the next read
                self.probes.put_back(dpid, probed, metered_probes)

    def _read(self, dpid: int, flows: int, meters: bool, timeout: float, full: bool,
              probed: dict, metered_probes: dict) -> SwitchCounters:
        parts = chunks_for(flows)
        with self._lock:
            before = {} if full else dict(self._aggregates.get(dpid, {}))
        requests = [compiler.flow_count_request(pipeline.NS_ENFORCE, part, parts)
                    for part in range(parts)]
        replies = self._transact(dpid, requests, timeout)
        now = {(part, parts): _aggregate(replies.get(request.xid, []))
               for part, request in enumerate(requests)}
        samples: list[FlowSample] = []
        for (part, _), aggregate in now.items():
            # A part with probes noted is read all the same: they are handed
            # on at once, not kept in memory a restart would lose.
            if before.get((part, parts)) == aggregate and not _pending(probed, part, parts):
                continue  # nothing moved there since the last read
            request = compiler.flow_stats_request(pipeline.NS_ENFORCE, part, parts)
            read = self._transact(dpid, [request], timeout)
            for st in read.get(request.xid, []):
                sample = flow_sample(dpid, st)
                taken = probed.pop((sample.cookie, sample.key), None)
                samples.append(sample if taken is None else dataclasses.replace(
                    sample, probes=tuple(taken)))
        metered: list[MeterSample] = []
        if meters:
            request = compiler.meter_stats_request()
            read = self._transact(dpid, [request], timeout)
            for st in read.get(request.xid, []):
                if pipeline.is_enforcement_meter(st.meter_id):
                    taken = metered_probes.pop(st.meter_id, None)
                    metered.append(meter_sample(dpid, st, tuple(taken or (0, 0))))
        with self._lock:  # kept only once every part it names was read
            self._aggregates[dpid] = now
        return SwitchCounters(dpid, tuple(samples), tuple(metered))


def _pending(probed: dict, part: int, parts: int) -> bool:
    """Whether probes were noted for flows of this part."""
    return any(cookie & (parts - 1) == part for cookie, _ in probed)


def _aggregate(replies) -> tuple[int, int, int]:
    return (sum(r.flow_count for r in replies), sum(r.packet_count for r in replies),
            sum(r.byte_count for r in replies))


def flow_sample(dpid: int, stats) -> FlowSample:
    rule = compiler.rule_from_stats(dpid, stats)
    return FlowSample(dpid, rule.key, stats.cookie, stats.packet_count, stats.byte_count,
                      verdict_of(rule))


def meter_sample(dpid: int, stats, probes: tuple[int, int] = (0, 0)) -> MeterSample:
    return MeterSample(dpid, stats.meter_id, stats.packet_in_count, stats.byte_in_count,
                       sum(b.packet_band_count for b in stats.band_stats),
                       sum(b.byte_band_count for b in stats.band_stats), probes)
