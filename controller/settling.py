"""Ports that came up too recently to know what is behind them.

A port that just came up may be the end of a switch-to-switch link that LLDP
has not reported yet. Treated as an access port meanwhile, it would flood
broadcasts round a loop of the topology and learn the hosts of the far side
on it (moving their enforcements there). So, until a link is discovered on it
or the settle period has passed, a port takes no flood, floods nothing it
receives, and teaches no host location. Known unicast still crosses it: a
computed path cannot loop.

OS-Ken sends LLDP on a port as soon as it comes up (and the pacer resends
every 0.9 s), so 1.5 s covers the first frame and one retry.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

SETTLE_SECONDS = 1.5


class Settling:
    def __init__(self, period: float = SETTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period
        self._clock = clock
        self._until: dict[tuple[int, int], float] = {}
        self._down: set[tuple[int, int]] = set()

    def came_up(self, dpid: int, ports: Iterable[int]) -> None:
        until = self._clock() + self._period
        for port in ports:
            self._until[(dpid, port)] = until

    def settled(self, dpid: int, port: int) -> None:
        """A link was found on it, or it went away."""
        self._until.pop((dpid, port), None)
        self._down.discard((dpid, port))

    def went_down(self, dpid: int, port: int) -> None:
        self._until.pop((dpid, port), None)
        self._down.add((dpid, port))

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

    def settling_ports(self, dpid: int) -> set[int]:
        return {port for (d, port) in list(self._until) if d == dpid
                and self.is_settling(d, port)}
