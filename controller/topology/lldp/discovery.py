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

from controller.topology.lldp.auth import SUBSCRIBER_LINE, UNREADABLE, Authenticator
from controller.topology.lldp.linkpairs import TwoWayLinks
from controller.topology.lldp.refused import RefusedFrames
from enforcement.domain.model import IdentityEvent

LOG = logging.getLogger(__name__)

# OS-Ken loads the app that serves the topology events for every app that
# handles them (controller/osken/app.py does): this one, not os-ken's own Switches
# beside it (two apps named "switches" cannot both start).
topology_event._SERVICE_NAME = __name__

ETH_TYPE_LLDP = b"\x88\xcc"


def is_lldp(frame: bytes) -> bool:
    # Untagged frames only: the controller sends and expects its LLDP untagged.
    return frame[12:14] == ETH_TYPE_LLDP


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What discovery asks of the app that uses it (controller/osken/app.py)."""
    # Whether the inventory declares a switch port a subscriber's line: no
    # link ends there.
    is_subscriber_line: Callable[[int, int], bool] = lambda dpid, port: False
    # A refused frame's event (enforcement.domain.model.IdentityEvent),
    # called on the event thread: it must not block (the app hands it off).
    refused: Callable[[IdentityEvent], None] = lambda event: None


class Discovery(Switches):
    def __init__(self, *args, lldp_key: bytes | None = None, **kwargs):
        """lldp_key: the deployment's LLDP key (controller/topology/lldp/key.py),
        which the process entry hands OS-Ken for this app; without one (a
        test), a key of this process's own, which no other instance can
        verify. The other keywords are OS-Ken's (and the other apps')."""
        # Before the parent starts the two loops that take it, and held
        # until they may run on what this adds.
        self.guard = threading.RLock()
        with self.guard:
            super().__init__(*args, **kwargs)
            self.links = TwoWayLinks()
            # The data plane copies LLDP to the controller (table 2), after
            # enforcement: OS-Ken's rule above every enforcement stays out.
            self.install_flow = False
            self.auth = Authenticator(lldp_key or os.urandom(32))
            self.refusals = RefusedFrames()
            self._hooks = Hooks()
            # Only the leading instance probes links: a slave's packet-outs
            # are refused. Followers hear the leader's probes (their
            # connections ask for packet-ins as slaves:
            # controller/openflow/compiler.py async_config) and so know the
            # links when they take over.
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

    def get_handlers(self, ev, state=None):
        return [self._guarded(handler) for handler in super().get_handlers(ev, state)]

    def _guarded(self, handler):
        @functools.wraps(handler)
        def run(ev):
            with self.guard:
                return handler(ev)
        return run

    def lldp_loop(self):
        # Woken by discovery.pace and by the handlers (a port came up).
        while self.is_active:
            self.lldp_event.clear()
            with self.guard:
                self.probe_due_ports(time.time())
            self.lldp_event.wait()

    def link_loop(self):
        while self.is_active:
            self.link_event.clear()
            with self.guard:
                gone = self.reap_stale_links(time.time())
            # Outside the lock: a full observer queue must not stall discovery.
            for link in gone:
                self.send_event_to_observers(topology_event.EventLinkDelete(link))
            self.link_event.wait()

    def probe_due_ports(self, now: float) -> int:
        """Sends LLDP out of every port whose last probe is a period old
        (never-probed ports first: os-ken keeps them ordered by last probe).
        Caller holds the guard."""
        due = []
        for port, data in self.ports.items():
            if (data.timestamp is not None
                    and data.timestamp + self.LLDP_SEND_PERIOD_PER_PORT > now):
                break
            due.append(port)
        for port in due:
            self.send_lldp_packet(port)
        return len(due)

    def probe_switch(self, dpid: int) -> None:
        """Probes every port of a switch now: its data plane (which copies
        LLDP to the controller) was just pushed, and the probes sent when it
        connected, before that, were lost. Its ports settle 0.8 s after the
        connection (controller/topology/settling.py): links found by then never carry
        a host location."""
        with self.guard:
            for port in [p for p in self.ports if p.dpid == dpid]:
                self.ports.move_front(port)
        self.lldp_event.set()

    def reap_stale_links(self, now: float) -> list:
        """Forgets links not refreshed within LINK_TIMEOUT and hurries the
        probe of their reverse direction, likely dead too. Caller holds the
        guard; the caller announces the returned links."""
        gone = [link for link, seen in self.links.items()
                if seen + self.LINK_TIMEOUT < now]
        for link in gone:
            self.links.link_down(link)
            reverse = Link(link.dst, link.src)
            if reverse not in gone:
                self.links.rev_link_set_timestamp(reverse, now - self.LINK_TIMEOUT)
                if link.dst in self.ports:
                    self.ports.move_front(link.dst)
                    self.lldp_event.set()
        return gone

    def send_lldp_packet(self, port):
        """A fresh probe each time (its time is what the receiver checks),
        where OS-Ken sends one frame built when the port came up."""
        if not self._sending:
            return
        try:
            data = self.ports.lldp_sent(port)
        except KeyError:
            return  # the port went while the sender walked the ports
        dp = self.dps.get(port.dpid)
        if data.is_down or dp is None:
            return
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(
            datapath=dp, in_port=ofp.OFPP_CONTROLLER, buffer_id=ofp.OFP_NO_BUFFER,
            actions=[parser.OFPActionOutput(port.port_no)],
            data=self.auth.frame(port.dpid, port.port_no, port.hw_addr)))

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
        src = self._get_port(src_dpid, src_port_no)
        if not src or src.dpid == dst_dpid:
            return
        # KeyError: the packet-in overtook the port's arrival.
        with contextlib.suppress(KeyError):
            self.ports.lldp_received(src)
        dst = self._get_port(dst_dpid, dst_port_no)
        if not dst:
            return
        counting, reverse_unheard = self.links.heard(src, dst)
        if reverse_unheard:
            self.ports.move_front(dst)
            self.lldp_event.set()
        for link in counting:
            self.send_event_to_observers(topology_event.EventLinkAdd(link))

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
