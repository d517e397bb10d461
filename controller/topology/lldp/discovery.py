"""OS-Ken's LLDP link discovery, hardened against what subscribers send.

os_ken.topology.switches parses every packet-in for LLDP, and its parser
raises more than its own "not LLDP" error: a frame whose payload is all
zeros (Ethernet strips it as padding) ends in StopIteration, a forged LLDP
frame with a bad chassis id in UnicodeDecodeError. On the native-thread hub
that exception ended the app's event loop without a word (see
controller/main.py, _keep_event_loops_alive), its queue filled, and every
switch connection stalled behind it: one 60-byte frame from any subscriber
took the control plane down.

Here only frames with the LLDP ethertype reach the parser (the others are
the data plane's copies for learning, which this app has no use for, and
parsing each one cost CPU under a flood), and a frame it cannot read is
counted and dropped.

Its state (ports, links, switches) is shared by three threads on the
native-thread hub: the app's event loop, the LLDP sender and the link
reaper, none of which takes a lock (under eventlet they never interleaved).
A switch that left while the sender walked its ports ended the sender with a
KeyError, discovery went blind, links were reaped, and hosts were no longer
located anywhere. Here one lock covers the event handlers and each pass of
the two loops, which are this app's own.

What is probed when is controller/topology/lldp/schedule.py's decision (links often,
new ports at once, settled subscriber lines rarely, under a budget of
packet-outs); OS-Ken's handlers still keep the ports and links, and tell
the schedule through controller/topology/lldp/ports.py. Both loops wait on a plain
threading.Event: OS-Ken's hub.Event.wait(timeout) never times out on the
native hub (os-ken 4.2.2), which left its loops asleep until some switch
event woke them.

Only switches write the topology. Every probe carries an authenticator
(controller/topology/lldp/auth.py) and a frame that fails it changes nothing: it is
counted, logged and reported (controller/topology/lldp/refused.py). An authentic
probe heard on, or sent out of, a port the inventory declares a
subscriber's line was carried there by the subscriber and is refused the
same way. An authentic direction is recorded, and a link is announced once
both directions are heard (controller/topology/lldp/linkpairs.py). OS-Ken's own
table-0 rule, which sent every
LLDP frame to the controller above every enforcement, is not installed:
the data plane's table 2 copies LLDP to the controller after enforcement
and through each access port's learning meter (controller/openflow/dataplane.py).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable

from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.topology import event as topology_event
from os_ken.topology.switches import Link, Switches

from controller.topology.lldp.auth import ANY_PORT, SUBSCRIBER_LINE, UNREADABLE, Authenticator
from controller.topology.lldp.linkpairs import TwoWayLinks
from controller.topology.lldp.ports import ProbedPorts
from controller.topology.lldp.refused import RefusedFrames
from controller.topology.lldp.schedule import Cadence, Probe, Schedule
from enforcement.domain.model import IdentityEvent

LOG = logging.getLogger(__name__)

# OS-Ken loads the app that serves the topology events for every app that
# handles them (controller/osken/app.py does): this one, not os-ken's own Switches
# beside it (two apps named "switches" cannot both start).
topology_event._SERVICE_NAME = __name__

ETH_TYPE_LLDP = b"\x88\xcc"
REAP_EVERY = 1.0      # seconds between looks for links gone quiet
ARRIVALS_EVERY = 1.0  # seconds between looks for hosts new at a port


def is_lldp(frame: bytes) -> bool:
    # Untagged frames only: the controller sends and expects its LLDP untagged.
    return frame[12:14] == ETH_TYPE_LLDP


def _no_arrivals(cursor: int) -> tuple[int, list[tuple[int, int]]]:
    return cursor, []


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What discovery asks of the app that uses it (controller/osken/app.py)."""
    # Whether the inventory declares a switch port a subscriber's line: no
    # link ends there.
    is_subscriber_line: Callable[[int, int], bool] = lambda dpid, port: False
    # A refused frame's event (enforcement.domain.model.IdentityEvent),
    # called on the event thread: it must not block (the app hands it off).
    refused: Callable[[IdentityEvent], None] = lambda event: None
    # The ports where a host was seen for the first time since a cursor,
    # and the cursor to ask with next (controller/topology/state.py
    # arrivals_since): a settled subscriber line where something new
    # appears is probed often again for a while.
    arrivals: Callable[[int], tuple[int, list[tuple[int, int]]]] = _no_arrivals


class Discovery(Switches):
    def __init__(self, *args, lldp_key: bytes | None = None,
                 lldp_cadence: Cadence | None = None, **kwargs):
        """lldp_key: the deployment's LLDP key (controller/topology/lldp/key.py),
        which the process entry hands OS-Ken for this app; without one (a
        test), a key of this process's own, which no other instance can
        verify. lldp_cadence: the probes' budget and periods (the
        settings). The other keywords are OS-Ken's (and the other apps')."""
        # Before the parent starts the two loops that take them, and the
        # guard held until they may run on what this adds.
        self.guard = threading.RLock()
        self._wake = threading.Event()
        self.schedule = Schedule(lldp_cadence or Cadence())
        with self.guard:
            super().__init__(*args, **kwargs)
            self.links = TwoWayLinks()
            self.ports = ProbedPorts(self.schedule)
            # The data plane copies LLDP to the controller (table 2), after
            # enforcement: OS-Ken's rule above every enforcement stays out.
            self.install_flow = False
            self.auth = Authenticator(lldp_key or os.urandom(32))
            self.refusals = RefusedFrames()
            self.probes_sent: collections.Counter[str] = collections.Counter()
            self._hooks = Hooks()
            self._arrivals = 0
            # Only the leading instance probes links: a slave's packet-outs
            # are refused. Followers hear the leader's probes (their
            # connections ask for packet-ins as slaves:
            # controller/openflow/compiler.py async_config) and so know the
            # links when they take over; their schedule runs all the same.
            self._sending = False

    def connect(self, hooks: Hooks) -> None:
        """The app that uses this one, from its start (OS-Ken builds both,
        and starts them before the OpenFlow listener)."""
        self._hooks = hooks

    def start_probing(self) -> None:
        """This instance leads: its probes go out."""
        self._sending = True

    def stop_probing(self) -> None:
        self._sending = False

    def close(self):
        self.is_active = False
        self._wake.set()
        super().close()

    def _started(self) -> None:
        # OS-Ken starts the loops from its __init__, while this one's holds
        # the guard: they begin once everything they use is there.
        with self.guard:
            pass

    def get_handlers(self, ev, state=None):
        return [self._guarded(handler) for handler in super().get_handlers(ev, state)]

    def _guarded(self, handler):
        @functools.wraps(handler)
        def run(ev):
            with self.guard:
                return handler(ev)
        return run

    # ---- sending -------------------------------------------------------------

    def lldp_loop(self):
        """Every tick, what the schedule says is due, within its budget."""
        self._started()
        looked = float("-inf")
        while self.is_active:
            now = time.monotonic()
            if now - looked >= ARRIVALS_EVERY:
                self._take_arrivals(now)
                looked = now
            for dp, message, _ in self.probe_due(now):
                dp.send_msg(message)
            self._wake.wait(self.schedule.cadence.tick)

    def probe_due(self, now: float) -> list:
        """The packet-outs due now, as (datapath, message, kind); built
        under the guard, sent by the caller outside it (a switch's full
        send queue must not stall the event handlers)."""
        with self.guard:
            taken = self.schedule.take(now)
            messages = ([m for m in map(self._message, taken.probes) if m is not None]
                        if self._sending else [])
            self.probes_sent.update(label for _, _, label in messages)
        if taken.notice:
            LOG.log(logging.WARNING if taken.short else logging.INFO, "%s", taken.notice)
        return messages

    def _message(self, probe: Probe):
        """A fresh frame each time (its time is what the receiver checks),
        where OS-Ken sends one frame built when the port came up. Caller
        holds the guard."""
        dp = self.dps.get(probe.dpid)
        ports = [port for no in probe.ports if (port := self._port(probe.dpid, no)) is not None]
        if dp is None or not ports:
            return None
        parser, ofp = dp.ofproto_parser, dp.ofproto
        number = ANY_PORT if probe.sweep else ports[0].port_no
        return dp, parser.OFPPacketOut(
            datapath=dp, in_port=ofp.OFPP_CONTROLLER, buffer_id=ofp.OFP_NO_BUFFER,
            actions=[parser.OFPActionOutput(port.port_no) for port in ports],
            data=self.auth.frame(probe.dpid, number, ports[0].hw_addr)), probe.label

    def _take_arrivals(self, now: float) -> None:
        # Outside the guard: the topology's own lock is taken there.
        self._arrivals, ports = self._hooks.arrivals(self._arrivals)
        if ports:
            with self.guard:
                for dpid, port in ports:
                    self.schedule.arrived(dpid, port, now)

    def port_kinds(self) -> dict[str, int]:
        """Ports up, by how they are probed."""
        with self.guard:
            counts = self.schedule.counts(time.monotonic())
        return {kind.name.lower(): count for kind, count in counts.items()}

    def probe_switch(self, dpid: int) -> None:
        """Probes every port of a switch now: its data plane (which copies
        LLDP to the controller) was just pushed, and the probes sent when it
        connected, before that, were lost. Its ports settle 0.8 s after the
        connection (controller/topology/settling.py): links found by then never carry
        a host location."""
        with self.guard:
            self.schedule.switch_new(dpid, time.monotonic())

    # ---- links gone quiet ----------------------------------------------------

    def link_loop(self):
        self._started()
        while self.is_active:
            with self.guard:
                gone = self.reap_stale_links(time.time())
            # Outside the lock: a full observer queue must not stall discovery.
            for link in gone:
                self.send_event_to_observers(topology_event.EventLinkDelete(link))
            self._wake.wait(REAP_EVERY)

    def reap_stale_links(self, now: float) -> list:
        """Forgets links not refreshed within the schedule's link timeout
        (a few of their ports' real probe periods) and hurries the probe of
        their reverse direction, likely dead too. Caller holds the guard;
        the caller announces the returned links."""
        timeout = self.schedule.link_timeout()
        gone = [link for link, seen in self.links.items() if seen + timeout < now]
        for link in gone:
            self.links.link_down(link)
            reverse = Link(link.dst, link.src)
            if reverse not in gone:
                self.links.rev_link_set_timestamp(reverse, now - timeout)
                if link.dst in self.ports:
                    self.ports.move_front(link.dst)
        return gone

    # ---- frames heard ----------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def lldp_packet_in_handler(self, ev):
        msg = ev.msg
        if not is_lldp(msg.data):
            return
        dpid, in_port = msg.datapath.id, msg.match.get("in_port")
        verdict = self.auth.check(msg.data)
        line = self._hooks.is_subscriber_line
        if verdict.refusal is None and (line(dpid, in_port)
                                        or line(verdict.dpid, verdict.port)):
            # The controller's own probe, but a subscriber's line is no end
            # of a cable between switches: a subscriber carried it here.
            verdict = dataclasses.replace(verdict, refusal=SUBSCRIBER_LINE)
        if verdict.refusal is not None:
            self._refused(dpid, in_port, msg.data, verdict)
            return
        self.heard(verdict.dpid, verdict.port, dpid, in_port)

    def heard(self, src_dpid: int, src_port_no: int, dst_dpid: int, dst_port_no: int) -> None:
        """An authentic probe sent out of src came in at dst. Caller holds
        the guard."""
        if src_port_no == ANY_PORT:
            self._heard_sweep(src_dpid, dst_dpid, dst_port_no)
            return
        src = self._port(src_dpid, src_port_no)
        if not src or src.dpid == dst_dpid:
            return
        # KeyError: the packet-in overtook the port's arrival.
        with contextlib.suppress(KeyError):
            self.ports.lldp_received(src)
        dst = self._port(dst_dpid, dst_port_no)
        if not dst:
            return
        counting, reverse_unheard = self.links.heard(src, dst)
        if reverse_unheard:
            # Probed at once, to hear the reverse; probed as a link's end
            # only once the link counts (one direction is what a
            # subscriber relaying probes between two lines can make).
            self.ports.move_front(dst)
        else:
            now = time.monotonic()
            self.schedule.linked(src.dpid, src.port_no, now)
            self.schedule.linked(dst.dpid, dst.port_no, now)
        for link in counting:
            self.send_event_to_observers(topology_event.EventLinkAdd(link))

    def host_discovery_packet_in_handler(self, ev):
        """Not a handler here (no set_ev_cls: OS-Ken registers none): OS-Ken's
        host table is never read (controller/topology/state.py locates hosts),
        and filling it parsed every packet-in and walked every link for each."""

    def _heard_sweep(self, src_dpid: int, dst_dpid: int, dst_port_no: int) -> None:
        """A sweep says which switch, not which port: no link yet, but the
        port it came in at is probed on its own at once, and that probe,
        heard on the far side, makes the link."""
        dst = self._port(dst_dpid, dst_port_no)
        if dst is not None and src_dpid != dst_dpid and src_dpid in self.dps:
            self.ports.move_front(dst)

    def _port(self, dpid: int, port_no: int):
        """The port, from the index (OS-Ken's _get_port builds every port of
        the switch to find one), or OS-Ken's record when the packet-in
        overtook the port's arrival."""
        port = self.ports.by_number.get((dpid, port_no))
        return port if port is not None else self._get_port(dpid, port_no)

    def _refused(self, dpid: int, port: int, data: bytes, verdict) -> None:
        mac = ":".join(f"{b:02x}" for b in data[6:12])
        refusal = self.refusals.refused(dpid, port, mac, verdict)
        if refusal.log:
            what = ("unreadable LLDP frame" if verdict.refusal == UNREADABLE
                    else f"LLDP probe of {verdict.claimed} carried by a subscriber"
                    if verdict.refusal == SUBSCRIBER_LINE
                    else f"forged LLDP frame claiming {verdict.claimed}")
            LOG.warning("%s from %016x port %s (%s), refused: %d so far", what, dpid, port,
                        mac, refusal.count)
        if refusal.event is not None:
            try:
                self._hooks.refused(refusal.event)
            except Exception:
                LOG.exception("LLDP refusal not reported")
