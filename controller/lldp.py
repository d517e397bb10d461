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
"""
from __future__ import annotations

import functools
import logging
import threading
import time

from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.topology import event as topology_event
from os_ken.topology.switches import Link, Switches

LOG = logging.getLogger(__name__)

# OS-Ken loads the app that serves the topology events for every app that
# handles them (controller/app.py does): this one, not os-ken's own Switches
# beside it (two apps named "switches" cannot both start).
topology_event._SERVICE_NAME = __name__

ETH_TYPE_LLDP = b"\x88\xcc"


def is_lldp(frame: bytes) -> bool:
    # Untagged frames only: OS-Ken sends and expects its LLDP untagged.
    return frame[12:14] == ETH_TYPE_LLDP


class Discovery(Switches):
    unreadable = 0
    # Only the leading instance probes links: a slave's packet-outs are
    # refused. Followers hear the leader's probes (their connections ask for
    # packet-ins as slaves: controller/compiler.py async_config) and so know
    # the links when they take over. Set by controller/app.py.
    sending = False

    def __init__(self, *args, **kwargs):
        # Before the parent starts the two loops that take it.
        self.guard = threading.RLock()
        super().__init__(*args, **kwargs)

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
        if Discovery.sending:
            super().send_lldp_packet(port)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def lldp_packet_in_handler(self, ev):
        if not is_lldp(ev.msg.data):
            return
        try:
            super().lldp_packet_in_handler(ev)
        except Exception as exc:  # a forged or broken LLDP frame
            Discovery.unreadable += 1
            if Discovery.unreadable & (Discovery.unreadable - 1) == 0:  # 1, 2, 4, 8...
                LOG.warning("unreadable LLDP frame from %016x port %s (%s: %s); %d so far",
                            ev.msg.datapath.id, ev.msg.match.get("in_port"),
                            type(exc).__name__, exc, Discovery.unreadable)
