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
"""
from __future__ import annotations

import logging

from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.topology import event as topology_event
from os_ken.topology.switches import Switches

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
