"""What reading evidence costs the controller, per 1,024 enforcement flows,
then added up for a network of --switches switches with --flows enforcement
flows each, of which --moving (a fraction) matched something since the
last read. No root, no switch:

    .venv/bin/python bench/evidence_cost.py
    .venv/bin/python bench/evidence_cost.py --switches 1000 --flows 200 --moving 0.05

Measured (CPU seconds of this process, best of --repeat):
- a part's flow statistics: the multipart body of 1,024 flow-stats entries
  (port-25 blocks, each its own subscriber) parsed by OS-Ken's parser, as
  its receive loop does (the socket read aside);
- the samples made of them (controller/openflow/counters.py);
- the fold (enforcement/domain/evidence.py), when nothing moved and when
  every flow moved;
- a part's aggregate: its request built and serialized, its reply parsed
  (what a part where nothing moved costs instead; the transaction's own
  bookkeeping in controller/openflow/sessions.py aside).

A round reads every part's aggregate; only the parts where something moved
have their flow statistics read. What moving flows cost in the store (one
row each per round, and an event at most once per interval) is not in it.
"""
from __future__ import annotations

import argparse
import struct
import time

from os_ken.ofproto import ofproto_parser, ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.openflow import compiler, counters
from enforcement.domain import evidence, pipeline

PART = counters.COUNTER_CHUNK


def _flow_stats_body(n: int) -> bytes:
    """n flow-stats entries as a switch sends them (OpenFlow 1.3, 7.3.5.2)."""
    entries = []
    for i in range(n):
        mac = f"00:00:00:00:{i >> 8:02x}:{i & 255:02x}"
        match = parser.OFPMatch(in_port=2 + i % 40, eth_src=mac, eth_type=0x0800, ip_proto=6,
                                tcp_dst=25)
        wire = bytearray()
        match.serialize(wire, 0)
        head = struct.pack(ofp.OFP_FLOW_STATS_0_PACK_STR, 0, 0, 300, 0, 3000, 0, 0, 0,
                           pipeline.enforcement_cookie(i + 1), i, i * 54)
        entries.append(struct.pack("!H", len(head) + len(wire)) + head[2:] + bytes(wire))
    return b"".join(entries)


def _aggregate_round_trip() -> None:
    request = compiler.flow_count_request(pipeline.NS_ENFORCE, 3, 8)
    request.datapath = _DATAPATH
    request.serialize()
    ofproto_parser.msg(_DATAPATH, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                       len(_AGGREGATE_REPLY), 7, _AGGREGATE_REPLY)


_DATAPATH = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)
_AGGREGATE_BODY = (struct.pack(ofp.OFP_MULTIPART_REPLY_PACK_STR, ofp.OFPMP_AGGREGATE, 0)
                   + struct.pack(ofp.OFP_AGGREGATE_STATS_REPLY_PACK_STR, 10**9, 54 * 10**9,
                                 PART))
_AGGREGATE_REPLY = struct.pack(ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION,
                               ofp.OFPT_MULTIPART_REPLY,
                               ofp.OFP_HEADER_SIZE + len(_AGGREGATE_BODY), 7) + _AGGREGATE_BODY


def _best(run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def measure(repeat: int) -> dict[str, float]:
    body = _flow_stats_body(1024)

    def parse():
        found, offset = [], 0
        while offset < len(body):
            stats = parser.OFPFlowStats.parser(body, offset)
            found.append(stats)
            offset += stats.length
        return found
    parsed = parse()
    samples = tuple(counters.flow_sample(2, st) for st in parsed)
    owners = evidence.Owners({s.cookie: f"enf-{i}" for i, s in enumerate(samples)}, {})
    read = evidence.SwitchCounters(2, samples, ())
    labels: dict = {}

    def label(key):
        found = labels.get(key)
        if found is None:
            found = labels[key] = evidence.rule_label(key)
        return found
    book = evidence.fold({}, read, owners, 1.0, label)
    moved = evidence.SwitchCounters(2, tuple(
        evidence.FlowSample(s.dpid, s.key, s.cookie, s.packets + 1, s.bytes + 54, s.verdict)
        for s in samples), ())
    return {
        "parse": _best(parse, repeat),
        "samples": _best(lambda: [counters.flow_sample(2, st) for st in parsed], repeat),
        "fold_idle": _best(lambda: evidence.fold(book, read, owners, 2.0, label), repeat),
        "fold_moved": _best(lambda: evidence.fold(book, moved, owners, 2.0, label), repeat),
        "aggregate": _best(lambda: [_aggregate_round_trip() for _ in range(1000)],
                           repeat) / 1000,
    }


def main() -> None:
    parser_ = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser_.add_argument("--switches", type=int, default=1000)
    parser_.add_argument("--flows", type=int, default=200, help="enforcement flows per switch")
    parser_.add_argument("--moving", type=float, default=0.05,
                         help="fraction of the parts where something moved per round")
    parser_.add_argument("--interval", type=float, default=10.0)
    parser_.add_argument("--repeat", type=int, default=5)
    args = parser_.parse_args()
    cost = measure(args.repeat)
    per_part = cost["parse"] + cost["samples"] + cost["fold_moved"]
    print(f"per 1,024 flows: parse {cost['parse'] * 1e3:.1f} ms, samples "
          f"{cost['samples'] * 1e3:.1f} ms, fold {cost['fold_idle'] * 1e3:.1f} ms idle / "
          f"{cost['fold_moved'] * 1e3:.1f} ms all moved; a part's aggregate "
          f"{cost['aggregate'] * 1e6:.0f} us")
    parts = args.switches * counters.chunks_for(args.flows)
    flows = args.switches * args.flows
    every = flows / 1024 * per_part
    moving = parts * cost["aggregate"] + args.moving * every
    print(f"{args.switches:,} switches x {args.flows:,} flows ({flows:,}): every flow read "
          f"{every:.2f} s of CPU per round ({every / args.interval:.0%} of a core at one "
          f"round per {args.interval:g} s); {parts:,} parts of up to {PART} flows, "
          f"{args.moving:.0%} of them moving: {moving:.2f} s ({moving / args.interval:.1%})")


if __name__ == "__main__":
    main()
