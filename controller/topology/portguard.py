"""Which access ports may teach the controller new hosts.

A port that shows new MACs faster than a household's devices ever would
(MAC flooding, a bridged network behind a subscriber line) stops teaching
for a while: a learning ban. A port already holding its maximum of hosts
learns no more. In both cases the switch drops the port's unknown sources
(controller/openflow/dataplane.py) while its known hosts keep working; the case
system hears of it through an alarm and decides the rest.

Pure bookkeeping with an injectable clock; the app calls it under its lock.
"""
from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

from controller.openflow.dataplane import Budgets


class PortGuard:
    def __init__(self, budgets: Budgets, clock: Callable[[], float] = time.monotonic):
        self._budgets = budgets
        self._clock = clock
        self._new: dict[tuple[int, int], collections.deque] = {}
        self._banned_until: dict[tuple[int, int], float] = {}
        self._next = math.inf   # the soonest a ban ends

    def new_mac(self, dpid: int, port: int) -> float | None:
        """Records a MAC learned on a port; returns the churn rate (new MACs
        per second over the window) when this sighting starts a ban."""
        now = self._clock()
        window = self._budgets.churn_seconds
        seen = self._new.setdefault((dpid, port), collections.deque())
        seen.append(now)
        while seen and seen[0] <= now - window:
            seen.popleft()
        if len(seen) > self._budgets.churn_macs and not self.banned(dpid, port):
            self._banned_until[(dpid, port)] = now + self._budgets.ban_seconds
            self._next = min(self._next, now + self._budgets.ban_seconds)
            return len(seen) / window
        return None

    def banned(self, dpid: int, port: int) -> bool:
        until = self._banned_until.get((dpid, port))
        if until is None:
            return False
        if self._clock() >= until:
            del self._banned_until[(dpid, port)]
            self._new.pop((dpid, port), None)
            return False
        return True

    def banned_ports(self, dpid: int) -> frozenset[int]:
        return frozenset(port for (d, port) in list(self._banned_until)
                         if d == dpid and self.banned(d, port))

    def due(self) -> bool:
        """Whether a ban may have ended by time since rearm()."""
        return self._clock() >= self._next

    def rearm(self) -> None:
        now = self._clock()
        for key in [k for k, until in self._banned_until.items() if until <= now]:
            del self._banned_until[key]
            self._new.pop(key, None)
        self._next = min(self._banned_until.values(), default=math.inf)

    def forget_port(self, dpid: int, port: int) -> None:
        """The port went away or turned out to be an uplink."""
        self._new.pop((dpid, port), None)
        self._banned_until.pop((dpid, port), None)
