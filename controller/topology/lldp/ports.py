"""OS-Ken's record of the ports discovery probes, passing on what changes
to the schedule (controller/topology/lldp/schedule.py).

os_ken.topology.switches keeps a PortDataState (Port -> PortData) that its
own event handlers update when a switch connects or leaves and when a port
is added, deleted or modified; its sender walked it in order of last probe.
That order is no longer used: the schedule decides. The handlers stay
OS-Ken's, and this subclass tells the schedule what they record: a port
up (new, or back up), down or gone, or worth a probe at once (move_front,
which OS-Ken calls on the far end of a link that went away).

It also keeps an index by (datapath id, port number) for the frames heard
and sent: OS-Ken's own lookup (_get_port) builds a Port for every port of
the switch, for every frame. OS-Ken's handlers keep using theirs, which
reads the port's current state.

Caller holds the discovery guard (controller/topology/lldp/discovery.py).
"""
from __future__ import annotations

import time
from collections.abc import Callable

from os_ken.topology.switches import Port, PortDataState

from controller.topology.lldp.schedule import Schedule


class ProbedPorts(PortDataState):
    def __init__(self, schedule: Schedule, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._schedule = schedule
        self._clock = clock
        self.by_number: dict[tuple[int, int], Port] = {}

    def add_port(self, port: Port, lldp_data) -> None:
        known = self.get(port)
        was_down = known is None or known.is_down
        super().add_port(port, lldp_data)
        self.by_number[(port.dpid, port.port_no)] = port
        if port.is_down():
            self._schedule.port_down(port.dpid, port.port_no)
        elif was_down:
            self._schedule.port_up(port.dpid, port.port_no, self._clock())

    def set_down(self, port: Port) -> bool:
        """A port-status that modified it: down, back up, or up and changed
        otherwise (probed at once, as OS-Ken did)."""
        was_down = self[port].is_down
        is_down = super().set_down(port)
        self.by_number[(port.dpid, port.port_no)] = port
        if is_down:
            self._schedule.port_down(port.dpid, port.port_no)
        elif was_down:
            self._schedule.port_up(port.dpid, port.port_no, self._clock())
        else:
            self._schedule.hurry(port.dpid, port.port_no, self._clock())
        return is_down

    def move_front(self, port: Port) -> None:
        super().move_front(port)
        if port in self:
            self._schedule.hurry(port.dpid, port.port_no, self._clock())

    def del_port(self, port: Port) -> None:
        super().del_port(port)
        self.by_number.pop((port.dpid, port.port_no), None)
        self._schedule.port_down(port.dpid, port.port_no)
