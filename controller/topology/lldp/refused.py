"""What becomes of an LLDP frame that failed authentication.

It changes nothing (controller/topology/lldp/discovery.py drops it), and it is visible three
ways, each bounded whatever the sender does: a counter per reason (every
frame; read by the metrics), a log line (the 1st, 2nd, 4th, 8th... of each
reason: a flood cannot fill the log), and an identity event for the case
system (at most one per switch port per EVENT_EVERY seconds, saying how
many came since the last). The port's learning meter already bounds what
an access port can send (controller/openflow/dataplane.py).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable

from controller.topology.lldp.auth import REASONS, Verdict
from enforcement.domain.model import IdentityEvent

EVENT_EVERY = 10.0


@dataclasses.dataclass(frozen=True)
class Refusal:
    log: bool                     # worth a log line
    event: IdentityEvent | None   # worth an event (not throttled away)
    count: int                    # frames refused for this reason so far


class RefusedFrames:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 every: float = EVENT_EVERY):
        self._clock = clock
        self._every = every
        self.counts: collections.Counter[str] = collections.Counter(dict.fromkeys(REASONS, 0))
        # switch port -> (when it was last reported, frames since)
        self._ports: dict[tuple[int, int], tuple[float, int]] = {}

    def total(self) -> int:
        return sum(self.counts.values())

    def refused(self, dpid: int, port: int, mac: str, verdict: Verdict) -> Refusal:
        reason = verdict.refusal or "refused"
        self.counts[reason] += 1
        count = self.counts[reason]
        now = self._clock()
        last, since = self._ports.get((dpid, port), (None, 0))
        since += 1
        event = None
        if last is None or now - last >= self._every:
            event = IdentityEvent(
                kind="lldp_forged", dpid=dpid, port=port, mac=mac, claimed=verdict.claimed,
                detail=(f"switch {dpid:016x} port {port}: {mac} sent an LLDP frame "
                        f"claiming {verdict.claimed}, refused ({reason}); "
                        f"{since} refused from this port since the last report"))
            last, since = now, 0
        self._ports[(dpid, port)] = (last, since)
        return Refusal(log=count & (count - 1) == 0, event=event, count=count)
