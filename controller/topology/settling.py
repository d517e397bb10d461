"""Ports that came up too recently to know what is behind them.

A port that just came up may be the end of a switch-to-switch link that LLDP
has not reported yet. Treated as an access port meanwhile, it would flood
broadcasts round a loop of the topology and learn the hosts of the far side
on it (moving their enforcements there). So, until a link is discovered on it
or the settle period has passed, a port takes no flood, floods nothing it
receives, and teaches no host location. Known unicast still crosses it: a
computed path cannot loop.

OS-Ken sends LLDP on a port as soon as it comes up, and it crosses a link
and comes back as a packet-in within milliseconds (the pacer resends every
0.9 s). 0.8 s covers that first frame many times over, and is short enough
that a host plugged in is served by its second ARP request (hosts retry
every second): reachable about a second after the cable.

A port once found to be an uplink teaches no host location until it goes
down or away, even while its link is unknown: after a control-channel
outage the switches reconnect one by one, and the first one back would
otherwise learn the far side's hosts on its uplink (their packets ride the
far switch's old path flows) before LLDP can cross; the same while LLDP
frames are lost. Re-cabling a port takes its carrier down, which clears it. A restarted
controller has no such memory: the ports a reconnecting switch's own flows
show as tree links settle for longer (fabric.RECONNECT_HOLD), so that LLDP,
slower than the settle period on a busy machine, finds them before they are
taken for access ports and given learning rules that would hold the far
side's ARP.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

SETTLE_SECONDS = 0.8


class Settling:
    def __init__(self, period: float = SETTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period
        self._clock = clock
        self._until: dict[tuple[int, int], float] = {}
        self._down: set[tuple[int, int]] = set()
        self._uplinks: set[tuple[int, int]] = set()
        self._next = math.inf   # the soonest a port settles by time

    def came_up(self, dpid: int, ports: Iterable[int], period: float | None = None) -> None:
        until = self._clock() + (self._period if period is None else period)
        for port in ports:
            self._until[(dpid, port)] = until
            self._next = min(self._next, until)

    def _settle(self, dpid: int, port: int) -> None:
        self._until.pop((dpid, port), None)
        self._down.discard((dpid, port))

    def link_found(self, dpid: int, port: int) -> None:
        self._settle(dpid, port)
        self._uplinks.add((dpid, port))

    def removed(self, dpid: int, port: int) -> None:
        self._settle(dpid, port)
        self._uplinks.discard((dpid, port))

    def went_down(self, dpid: int, port: int) -> None:
        self._until.pop((dpid, port), None)
        self._down.add((dpid, port))
        self._uplinks.discard((dpid, port))

    def was_uplink(self, dpid: int, port: int) -> bool:
        """Found to be an uplink and not down or removed since (kept across
        the switch's reconnects)."""
        return (dpid, port) in self._uplinks

    def went_up(self, dpid: int, port: int) -> None:
        """A port-status saying the port is live: it settles only if it was
        down (other changes, such as speed, leave a settled port alone)."""
        if (dpid, port) in self._down:
            self._down.discard((dpid, port))
            self.came_up(dpid, [port])

    def forget_switch(self, dpid: int) -> None:
        for key in [k for k in self._until if k[0] == dpid]:
            del self._until[key]
        self._down = {k for k in self._down if k[0] != dpid}

    def is_settling(self, dpid: int, port: int) -> bool:
        until = self._until.get((dpid, port))
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[(dpid, port)]
            return False
        return True

    def due(self) -> bool:
        """Whether a port may have settled by time since rearm(): what is
        computed from the ports is then out of date."""
        return self._clock() >= self._next

    def rearm(self) -> None:
        now = self._clock()
        self._until = {key: until for key, until in self._until.items() if until > now}
        self._next = min(self._until.values(), default=math.inf)

    def settling_ports(self, dpid: int) -> set[int]:
        return {port for (d, port) in list(self._until) if d == dpid
                and self.is_settling(d, port)}
