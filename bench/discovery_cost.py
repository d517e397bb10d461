"""What link discovery costs the controller per switch and per port at idle,
at any size: each piece measured in this process with the controller's own
code, then added up for a network of --switches switches with --links
link ports and --ports subscriber lines each. No root, no switch:

    .venv/bin/python bench/discovery_cost.py
    .venv/bin/python bench/discovery_cost.py --switches 1000 --ports 100 --links 2

Measured (CPU seconds of this process, best of --repeat):
- sending a probe: the authenticated frame, the packet-out built and
  serialized as OS-Ken's Datapath.send_msg does (the socket write aside);
- a sweep of --ports ports, the same way;
- hearing a probe: the OpenFlow bytes of a packet-in parsed by OS-Ken's
  parser and handed to discovery's handler (authenticator checked, the
  link refreshed; OS-Ken's event queue and the socket read aside);
- the schedule's bookkeeping at idle at the full size, under the budget
  (every tick of --seconds simulated seconds: choosing the link probes and
  sweeps due).

At idle every link port sends one probe per period (heard at the far end:
one packet-in) and every switch one sweep per settled period (heard by
nobody); the budget (--lldp-pps) caps the link probes, which then come
less often. The sum is what the schedule costs; what else the controller
does at idle (echo requests, the data plane's rounds, the audit) is not
in it: bench/discovery.py measures the whole process on Mininet.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import time

from os_ken import cfg
from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_parser as generic_parser
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.topology.lldp.schedule import (
    LINK_PERIOD,
    NEW_SECONDS,
    SETTLED_PERIOD,
    TICK,
    Cadence,
    Kind,
    Probe,
    Schedule,
)


class Datapath:
    """What discovery touches of OS-Ken's Datapath; send_msg serializes as
    the real one does before queueing the bytes."""

    def __init__(self, dpid: int, ports: int):
        self.id = dpid
        self.ofproto, self.ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser
        self.ports = {no: ofproto_v1_3_parser.OFPPort(
            port_no=no, hw_addr=f"02:00:00:00:{dpid % 256:02x}:{no % 256:02x}",
            name=f"s{dpid}-eth{no}".encode(), config=0, state=0, curr=0, advertised=0,
            supported=0, peer=0, curr_speed=0, max_speed=0) for no in range(1, ports + 1)}
        self.xid = 0

    def set_xid(self, msg) -> None:
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg) -> None:
        self.set_xid(msg)
        msg.serialize()


def packet_in(frame: bytes, in_port: int, xid: int) -> bytes:
    """The OpenFlow 1.3 bytes of a switch's packet-in carrying frame (OS-Ken
    parses these; it has no serializer for them)."""
    match = bytearray()
    ofproto_v1_3_parser.OFPMatch(in_port=in_port).serialize(match, 0)
    body = (struct.pack("!IHBBQ", ofproto_v1_3.OFP_NO_BUFFER, len(frame),
                        ofproto_v1_3.OFPR_ACTION, 2, 0) + bytes(match) + b"\0\0" + frame)
    return struct.pack("!BBHI", ofproto_v1_3.OFP_VERSION, ofproto_v1_3.OFPT_PACKET_IN,
                       8 + len(body), xid) + body


def best(repeat: int, work) -> float:
    """The least CPU time of repeat runs of work()."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return min(times)


def discovery(cadence: Cadence):
    import os_ken.topology.switches  # noqa: F401  (registers its options)

    from controller.topology.lldp.discovery import Discovery
    if not hasattr(cfg.CONF, "observe_links"):
        cfg.CONF(args=[], project="os_ken")
    app = Discovery(lldp_key=b"k" * 32, lldp_cadence=cadence)
    app.link_discovery = True
    from os_ken.lib import hub
    app.lldp_event, app.link_event = hub.Event(), hub.Event()
    app.send_event_to_observers = lambda ev: None
    app.start_probing()
    return app


def measure(args) -> dict[str, float]:
    n = args.samples
    app = discovery(Cadence(pps=10**9))
    a, b = Datapath(1, args.ports + args.links), Datapath(2, args.ports + args.links)
    for dp in (a, b):
        app._register(dp)
        for no in dp.ports:
            app._port_added(app._get_port(dp.id, no))
    link = args.ports + 1
    now = time.monotonic()
    app.probe_due(now)  # the first contact
    # the cable a:link <-> b:link, heard both ways: both ends are link ports
    app.heard(1, link, 2, link)
    app.heard(2, link, 1, link)
    frames = [app.auth.frame(1, link, "02:00:00:00:01:01") for _ in range(n)]

    def send(probe: Probe):
        def work():
            for _ in range(n):
                dp, message, _ = app._message(probe)
                dp.send_msg(message)
        return work

    send_probes = send(Probe(1, (link,), Kind.LINK))
    send_sweeps = send(Probe(1, tuple(range(1, args.ports + 1)), Kind.SETTLED))

    packet_ins = [packet_in(frame, link, xid) for xid, frame in enumerate(frames)]

    def hear():
        for buf in packet_ins:
            version, msg_type, msg_len, xid = generic_parser.header(buf)
            msg = generic_parser.msg(b, version, msg_type, msg_len, xid, buf)
            app.lldp_packet_in_handler(ofp_event.ofp_msg_to_ev(msg))
        app.auth._heard.clear()  # the same frames again next round

    return {
        "probe built and sent": best(args.repeat, send_probes) / n,
        f"sweep of {args.ports} ports sent": best(args.repeat, send_sweeps) / n,
        "probe heard": best(args.repeat, hear) / n,
    }


def bookkeeping(args) -> tuple[float, Schedule]:
    """CPU per second of the schedule's own work at the full size, idle,
    under the budget: ticks, and choosing each probe and sweep."""
    schedule = Schedule(Cadence(pps=args.lldp_pps))
    for dpid in range(1, args.switches + 1):
        for port in range(1, args.ports + args.links + 1):
            schedule.port_up(dpid, port, 0.0)
        for port in range(args.ports + 1, args.ports + args.links + 1):
            schedule.linked(dpid, port, 0.0)
    t = 0.0
    while t < NEW_SECONDS + SETTLED_PERIOD:  # past the start: idle from here
        schedule.take(t)
        t += TICK
    started = time.process_time()
    end = t + args.seconds
    while t < end:
        schedule.take(t)
        t += TICK
    return (time.process_time() - started) / args.seconds, schedule


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=1000)
    parser.add_argument("--ports", type=int, default=100,
                        help="subscriber lines per switch. Default: %(default)s")
    parser.add_argument("--links", type=int, default=2,
                        help="link ports per switch. Default: %(default)s")
    parser.add_argument("--lldp-pps", type=int, default=500,
                        help="the budget (the controller's --lldp-pps). Default: %(default)s")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="simulated idle seconds for the bookkeeping. Default: %(default)s")
    args = parser.parse_args(argv)
    costs = measure(args)
    per_second, schedule = bookkeeping(args)
    link_ports = args.switches * args.links
    wanted = link_ports / LINK_PERIOD
    probes = min(wanted, args.lldp_pps)
    sweeps = args.switches / SETTLED_PERIOD
    cpu = (probes * (costs["probe built and sent"] + costs["probe heard"])
           + sweeps * costs[f"sweep of {args.ports} ports sent"] + per_second)
    budget = schedule
    ports = args.switches * (args.ports + args.links)
    outs = probes + sweeps
    lines = [
        (f"{args.switches} switches x ({args.links} link ports + {args.ports} subscriber "
         f"lines), --lldp-pps {args.lldp_pps}; {os.uname().nodename}, "
         f"Python {sys.version.split()[0]}"),
        "",
        "| piece | CPU |",
        "|---|---|",
        *(f"| {name} | {1e6 * seconds:.1f} us |" for name, seconds in costs.items()),
        (f"| the schedule's bookkeeping at idle, full size | {1e3 * per_second:.2f} ms per "
        "second |"),
        "",
        "| at idle | figure |",
        "|---|---|",
        (f"| link probes wanted / sent | {wanted:.0f}/s / {probes:.0f}/s (each link port "
         f"every {budget.link_period():.1f} s; links time out after "
         f"{budget.link_timeout():.0f} s) |"),
        f"| sweeps | {sweeps:.0f}/s (one per switch every {SETTLED_PERIOD:.0f} s) |",
        (f"| packet-outs/s | {outs:.0f} (per switch {outs / args.switches:.3f}, "
         f"per port {outs / ports:.5f}) |"),
        f"| packet-ins/s (probes heard) | {probes:.0f} |",
        (f"| controller CPU for discovery | {100 * cpu:.1f} % of one core (per switch "
         f"{100 * cpu / args.switches:.4f} %) |"),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
