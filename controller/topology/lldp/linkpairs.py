"""Links count once both directions are heard.

One authentic LLDP frame says that a probe sent out of port A came in at
port B. OS-Ken took that one direction as a link. But a probe the
controller sent out of a subscriber's port reaches the subscriber, which
may carry it (authentic, and fresh for a few seconds: controller/topology/lldp/auth.py
cannot tell) to another port it reaches. Here a direction heard is only
recorded; the link counts, and both its directions are announced together,
once the reverse is heard as well: a switch-to-switch cable answers both
ways by itself, a subscriber would have to carry probes both ways between
two lines of its own, all the time. That it can do (mininet/lldp_relay.py
does), and only the inventory stops it: no link ends on a declared
subscriber line (controller/topology/lldp/discovery.py). Lines the inventory does not name
stay open to it; telling such a relay from a cable needs more than LLDP
(the latency of the probe, port counters that match). It stops counting when either
direction is reaped or its port goes (the controller's view then drops
both: controller/topology/state.py).

OS-Ken's LinkState stays the record of directions heard (its reaper and
port handling read it): this adds only what a sighting announces.
"""
from __future__ import annotations

from os_ken.topology.switches import Link, LinkState


class TwoWayLinks(LinkState):
    def heard(self, src, dst) -> tuple[list[Link], bool]:
        """A probe sent out of src came in at dst. Returns the links that
        count from now on (both directions, the first time both are heard;
        else none), and whether the reverse is still unheard (worth probing
        at once)."""
        link = Link(src, dst)
        new = link not in self
        reverse_heard = self.update_link(src, dst)
        if not reverse_heard:
            return [], True
        return ([link, Link(dst, src)] if new else []), False

    def counts(self, link: Link) -> bool:
        return link in self and Link(link.dst, link.src) in self
