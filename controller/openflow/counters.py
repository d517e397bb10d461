"""What a switch's enforcement flows and meters counted, read in chunks.

One read of a switch is a few requests on its connection, one after the
other: its enforcement flows by cookie namespace, about COUNTER_CHUNK at a
time (by cookie again, as the drift audit reads them: the switch answers a
connection's requests in order, so a decision's barrier waits behind one
chunk at most, never behind the whole table), then, when it holds
enforcement meters, one meter-statistics request for all of them. Never a
request per enforcement.
"""
from __future__ import annotations

from collections.abc import Callable

from controller.openflow import compiler
from enforcement.domain import pipeline
from enforcement.domain.evidence import FlowSample, MeterSample, SwitchCounters, verdict_of

COUNTER_CHUNK = 1024


def chunks_for(expected: int, chunk: int = COUNTER_CHUNK) -> int:
    """How many parts (a power of two, by cookie) make reads of about chunk flows."""
    parts = 1
    while expected > parts * chunk:
        parts *= 2
    return parts


def read(transact: Callable, dpid: int, flows: int, meters: bool,
         timeout: float) -> SwitchCounters:
    """flows: how many enforcement flows the switch should hold (sets the
    chunks); meters: whether it holds enforcement meters."""
    samples: list[FlowSample] = []
    parts = chunks_for(flows)
    for part in range(parts):
        request = compiler.flow_stats_request(pipeline.NS_ENFORCE, part, parts)
        replies = transact(dpid, [request], timeout)
        samples += [flow_sample(dpid, st) for st in replies.get(request.xid, [])]
    metered: list[MeterSample] = []
    if meters:
        request = compiler.meter_stats_request()
        replies = transact(dpid, [request], timeout)
        metered = [meter_sample(dpid, st) for st in replies.get(request.xid, [])
                   if pipeline.is_enforcement_meter(st.meter_id)]
    return SwitchCounters(dpid, tuple(samples), tuple(metered))


def flow_sample(dpid: int, stats) -> FlowSample:
    rule = compiler.rule_from_stats(dpid, stats)
    return FlowSample(dpid, rule.key, stats.cookie, stats.packet_count, stats.byte_count,
                      verdict_of(rule))


def meter_sample(dpid: int, stats) -> MeterSample:
    return MeterSample(dpid, stats.meter_id, stats.packet_in_count, stats.byte_in_count,
                       sum(b.packet_band_count for b in stats.band_stats),
                       sum(b.byte_band_count for b in stats.band_stats))
