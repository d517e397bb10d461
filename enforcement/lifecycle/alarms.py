"""Port alarms: an access port went over one of its control-plane budgets.

The switches meter each access port's copies to the controller for learning
and its broadcast/unknown-unicast flooding; the controller bans learning on
a port that churns MACs and refuses hosts beyond a port's maximum. When a
port goes over one of those budgets the controller reports a PortAlarm,
from whichever thread noticed, and that is all it does: the alarm becomes a
port_over_budget event, stored before report() returns like every event,
then announced to Watch streams and to the event listeners (metrics). What
to do about the port is the case system's decision.

Reporting never takes the lifecycle lock nor waits on a switch, so a port in
a storm cannot slow decisions down, nor decisions delay its report. Alarms
reported together share one commit (group commit, enforcement.lifecycle.batching).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from enforcement.domain.model import PORT_OVER_BUDGET, PortAlarm
from enforcement.lifecycle.batching import GroupCommit


class PortAlarms:
    def __init__(self, store, clock: Callable[[], float],
                 announce: Callable[[list[tuple]], None], *, max_batch: int = 256,
                 fence: Callable[[], tuple[str, int] | None] = lambda: None):
        """announce(events) is called with the events (at, kind, alarm,
        detail) of each batch once they are committed; fence() as the
        ledger's (enforcement.lifecycle.ledger): only the leader writes."""
        self._store = store
        self._fence = fence
        self._clock = clock
        self._announce = announce
        self._commits = GroupCommit(self._write, max_batch=max_batch)

    def report(self, alarm: PortAlarm) -> None:
        """Stores the alarm as an event and announces it; raises what the
        store raised if it could not be written."""
        if not isinstance(alarm, PortAlarm):
            raise TypeError(f"a PortAlarm is needed, not {type(alarm).__name__}")
        # Stamped when reported: a batch may commit a moment later.
        self._commits.submit((self._clock(), alarm))

    def _write(self, batch: Sequence[tuple[float, PortAlarm]]) -> list[None]:
        events = [(at, PORT_OVER_BUDGET, alarm, alarm.text()) for at, alarm in batch]
        self._store.write((), events, (), fence=self._fence())
        self._announce(events)
        return [None] * len(events)
