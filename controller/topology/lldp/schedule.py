"""Which switch ports get an LLDP probe when, under a budget of packet-outs.

OS-Ken probed every port of every switch each 0.9 s: at 1,000 switches with
100 subscriber lines each, 110,000 packet-outs a second from one Python
process, nearly all of them to subscribers, who never answer. Here a port is
probed as often as it can matter:

- LINK: a link ends on it (heard both ways), or did since it last went
  down: probed on its own every LINK_PERIOD, which keeps links
  alive (link_timeout() is what the reaper allows, a few periods) and finds
  a link that failed silently again as soon as it heals.
- NEW: it came up, its switch (re)connected or got its data plane, a new
  host appeared behind it, or a probe was heard on it (a switch may be
  there): probed at once, then every LINK_PERIOD for NEW_SECONDS, which
  covers a far switch that takes a while to connect (Open vSwitch retries
  every 8 s at most).
- SETTLED: everything else, the settled subscriber lines above all. Not
  probed on its own: its switch sends one packet-out every settled period
  whose actions output the same frame on all of them (a sweep). A sweep
  names the switch, not the port (auth.py), so it makes no link by itself
  (a switch with a single such port sends it a probe of its own instead,
  for the same one packet-out):
  where it is heard, that port is probed on its own at once, and that probe
  is heard back, which is how a switch plugged in behind a settled line
  (through a subscriber's bridge, with no carrier change anywhere) is found
  within about one settled period. A new switch announces itself sooner:
  its own ports are NEW, and the port its probes reach is hurried.

Ports that become NEW together on one switch (a switch connects) are first
reached by one sweep, then each on its own: at a cold start of 1,000
switches that is 1,000 packet-outs, not 100,000.

The budget (pps) bounds packet-outs per second, a sweep counting as one. It
is spread: each port and each switch has a fixed phase within its period,
so a thousand links are probed a few every tick, not all at once, and no
tick sends more than two ticks' worth. When it cannot cover every port at
its period, LINK goes first, then NEW, then SETTLED, and take() says so
once (and once again when it covers everything again); link_timeout()
stretches with the links' real period so that a budget too small never
times out a working link.

Pure: time is an argument, nothing is sent; controller/topology/lldp/discovery.py feeds it
OS-Ken's port and link events and sends what take() returns.
"""
from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
from collections.abc import Hashable

LINK_PERIOD = 1.0          # seconds between probes of a link's port
NEW_SECONDS = 30.0         # how long a port stays NEW
SETTLED_PERIOD = 20.0      # seconds between sweeps of a switch's settled ports
DEFAULT_PPS = 500          # packet-outs per second at most
TICK = 0.05                # how often the sender asks (spreads the budget)
LINK_TIMEOUT_MIN = 10.0    # a link direction unheard this long goes down...
MISSES = 3                 # ... or this many of its real periods, if longer
QUIET_AGAIN = 30.0         # no backlog this long: the budget covers again

Key = tuple[int, int]      # (datapath id, port number)


class Kind(enum.IntEnum):
    """A port's class; the lower goes first when the budget is short."""
    LINK = 0
    NEW = 1
    SETTLED = 2


@dataclasses.dataclass(frozen=True)
class Cadence:
    pps: float = DEFAULT_PPS
    settled_period: float = SETTLED_PERIOD
    link_period: float = LINK_PERIOD
    new_seconds: float = NEW_SECONDS
    tick: float = TICK

    def __post_init__(self) -> None:
        for name in ("pps", "settled_period", "link_period", "new_seconds", "tick"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def burst(self) -> float:
        # Two ticks' worth: one late tick costs nothing, and nothing bunches.
        return max(1.0, 2 * self.pps * self.tick)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One packet-out: one frame out of these ports of the switch (more
    than one: a sweep, whose frame names the switch only)."""
    dpid: int
    ports: tuple[int, ...]
    kind: Kind

    @property
    def sweep(self) -> bool:
        return len(self.ports) > 1

    @property
    def label(self) -> str:
        return self.kind.name.lower() + ("_sweep" if self.sweep else "")


@dataclasses.dataclass(frozen=True)
class Round:
    probes: list[Probe]
    notice: str | None = None  # worth one log line: the budget fell short, or covers again
    short: bool = False        # the budget falls short (what a notice says)


class Schedule:
    def __init__(self, cadence: Cadence = Cadence()) -> None:
        self.cadence = cadence
        self._up: dict[int, set[int]] = {}      # dpid -> ports up
        self._links: set[Key] = set()           # LINK ports (up)
        self._new_until: dict[Key, float] = {}
        self._contact: dict[int, set[int]] = {}  # dpid -> NEW ports not reached yet
        self._queue = _Queue()
        self._tokens = cadence.burst
        self._refilled: float | None = None
        self._short = False
        self._backlog_at = float("-inf")

    # ---- what OS-Ken's events tell ------------------------------------------

    def port_up(self, dpid: int, port: int, now: float) -> None:
        """Added, or came up: NEW, reached at once."""
        self._up.setdefault(dpid, set()).add(port)
        self._renew((dpid, port), now)
        if ("sweep", dpid) not in self._queue:
            self._queue.push(("sweep", dpid), Kind.SETTLED,
                             _slot(_phase(dpid, -1), self.cadence.settled_period, now))

    def port_down(self, dpid: int, port: int) -> None:
        """Down or gone: not probed, and no longer a link's end."""
        key = (dpid, port)
        self._up.get(dpid, set()).discard(port)
        self._links.discard(key)
        self._new_until.pop(key, None)
        self._contact.get(dpid, set()).discard(port)
        self._queue.remove(("port", key))

    def switch_new(self, dpid: int, now: float) -> None:
        """Its data plane was just pushed (probes before that were lost):
        every port of it reached again at once, and NEW."""
        for port in self._up.get(dpid, ()):
            self._renew((dpid, port), now)

    def linked(self, dpid: int, port: int, now: float) -> None:
        """A link that counts (heard both ways) ends here."""
        key = (dpid, port)
        if port not in self._up.get(dpid, ()) or key in self._links:
            return
        self._links.add(key)
        due = self._queue.due(("port", key))
        self._queue.push(("port", key), Kind.LINK, due if due is not None else
                         _slot(_phase(*key), self.cadence.link_period, now))

    def hurry(self, dpid: int, port: int, now: float) -> None:
        """Worth a probe of its own at once: a probe or sweep was heard
        here, or the reverse of a link direction here was just reaped."""
        key = (dpid, port)
        if port not in self._up.get(dpid, ()):
            return
        if key not in self._links:
            self._new_until[key] = now + self.cadence.new_seconds
        self._queue.push(("port", key), self.kind(key, now), now)

    def arrived(self, dpid: int, port: int, now: float) -> None:
        """A host never seen there before: whatever it is, it may have
        come with a switch."""
        if port in self._up.get(dpid, ()) and (dpid, port) not in self._links:
            self._renew((dpid, port), now)

    # ---- what to send --------------------------------------------------------

    def kind(self, key: Key, now: float) -> Kind:
        if key in self._links:
            return Kind.LINK
        until = self._new_until.get(key)
        if until is not None:
            if until > now:
                return Kind.NEW
            del self._new_until[key]
        return Kind.SETTLED

    def take(self, now: float) -> Round:
        """The packet-outs to send now, within the budget."""
        cadence = self.cadence
        if self._refilled is not None:
            self._tokens = min(cadence.burst,
                               self._tokens + max(0.0, now - self._refilled) * cadence.pps)
        self._refilled = now
        probes: list[Probe] = []
        while self._tokens >= 1:
            item = self._queue.pop_due(now)
            if item is None:
                break
            probe = self._serve(item, now)
            if probe is not None:
                probes.append(probe)
                self._tokens -= 1
        notice = self._notice(now)
        return Round(probes, notice, self._short)

    def _serve(self, item: tuple, now: float) -> Probe | None:
        what, target = item
        cadence = self.cadence
        if what == "port":
            dpid, port = target
            if port not in self._up.get(dpid, ()):
                return None
            kind = self.kind(target, now)
            if kind is Kind.SETTLED:
                return None  # its switch's sweep covers it from now on
            self._queue.push(item, kind, _slot(_phase(dpid, port), cadence.link_period,
                                               now + cadence.link_period / 2))
            return Probe(dpid, (port,), kind)
        up = self._up.get(target, set())
        if what == "contact":
            ports = tuple(sorted(self._contact.pop(target, set()) & up))
            return Probe(target, ports, Kind.NEW) if ports else None
        if not up:
            self._up.pop(target, None)  # its last port went: the sweep ends with it
            return None
        self._queue.push(item, Kind.SETTLED,
                         _slot(_phase(target, -1), cadence.settled_period,
                               now + cadence.settled_period / 2))
        ports = tuple(sorted(p for p in up if self.kind((target, p), now) is Kind.SETTLED))
        return Probe(target, ports, Kind.SETTLED) if ports else None

    def _renew(self, key: Key, now: float) -> None:
        """NEW from now on for NEW_SECONDS, reached at once by its switch's
        next contact (one sweep for all that became NEW together)."""
        dpid, port = key
        self._new_until[key] = now + self.cadence.new_seconds
        self._contact.setdefault(dpid, set()).add(port)
        self._queue.push(("contact", dpid), Kind.NEW, now)
        if ("port", key) not in self._queue:
            # Its first probe of its own comes after the contact, at its phase.
            self._queue.push(("port", key), self.kind(key, now),
                             _slot(_phase(dpid, port), self.cadence.link_period,
                                   now + self.cadence.link_period / 2))

    # ---- what the budget gives -----------------------------------------------

    def link_period(self) -> float:
        """How often each link port is probed in fact: its period, or
        longer when the budget cannot give every link port that."""
        return max(self.cadence.link_period, len(self._links) / self.cadence.pps)

    def link_timeout(self) -> float:
        """How long a link direction may go unheard before it goes down:
        MISSES probes of its real period, and never less than
        LINK_TIMEOUT_MIN."""
        return max(LINK_TIMEOUT_MIN, MISSES * self.link_period())

    def wanted(self, now: float) -> float:
        """Packet-outs per second every port at its period would take."""
        counts = self.counts(now)
        sweeping = sum(1 for dpid, ports in self._up.items()
                       if any(self.kind((dpid, p), now) is Kind.SETTLED for p in ports))
        return ((counts[Kind.LINK] + counts[Kind.NEW]) / self.cadence.link_period
                + sweeping / self.cadence.settled_period)

    def counts(self, now: float) -> dict[Kind, int]:
        """Ports up, by kind."""
        counts = dict.fromkeys(Kind, 0)
        for dpid, ports in self._up.items():
            for port in ports:
                counts[self.kind((dpid, port), now)] += 1
        return counts

    def _notice(self, now: float) -> str | None:
        if self._tokens < 1 and self._queue.has_due(now):
            self._backlog_at = now
            if not self._short:
                self._short = True
                counts = self.counts(now)
                return (f"LLDP probes want {self.wanted(now):.0f} packet-outs/s, more than "
                        f"the budget of {self.cadence.pps:g}/s: links go first ("
                        f"{counts[Kind.LINK]} ports, each every {self.link_period():.1f} s; "
                        f"links time out after {self.link_timeout():.0f} s), then "
                        f"new ports ({counts[Kind.NEW]}), then settled ports "
                        f"({counts[Kind.SETTLED]}), which wait")
        elif self._short and now - self._backlog_at >= QUIET_AGAIN:
            self._short = False
            return (f"LLDP probes: the budget of {self.cadence.pps:g}/s covers every port "
                    "at its period again")
        return None


class _Queue:
    """Items by rank, then by due time; each item at most once (pushing it
    again moves it; the entry it replaces is skipped when reached)."""

    def __init__(self) -> None:
        self._heaps: tuple[list, ...] = tuple([] for _ in Kind)
        self._at: dict[Hashable, int] = {}  # item -> the sequence number of its entry
        self._due: dict[Hashable, float] = {}
        self._seq = itertools.count()

    def __contains__(self, item: Hashable) -> bool:
        return item in self._at

    def due(self, item: Hashable) -> float | None:
        return self._due.get(item)

    def push(self, item: Hashable, rank: Kind, due: float) -> None:
        seq = next(self._seq)
        self._at[item], self._due[item] = seq, due
        heapq.heappush(self._heaps[rank], (due, seq, item))

    def remove(self, item: Hashable) -> None:
        self._at.pop(item, None)
        self._due.pop(item, None)

    def _head(self, heap: list) -> tuple | None:
        while heap and self._at.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop_due(self, now: float) -> Hashable | None:
        """The first item due, lowest rank first."""
        for heap in self._heaps:
            head = self._head(heap)
            if head is not None and head[0] <= now:
                heapq.heappop(heap)
                self.remove(head[2])
                return head[2]
        return None

    def has_due(self, now: float) -> bool:
        return any((head := self._head(heap)) is not None and head[0] <= now
                   for heap in self._heaps)


def _phase(dpid: int, port: int) -> float:
    """A fixed fraction of the period for each port (port -1: the switch's
    sweep), spread evenly whatever the numbering (Fibonacci hashing)."""
    mixed = (dpid * 0x9E3779B97F4A7C15 + (port + 1) * 0xC2B2AE3D27D4EB4F) & (2**64 - 1)
    return (mixed * 0x9E3779B97F4A7C15 & (2**64 - 1)) / 2**64


def _slot(phase: float, period: float, after: float) -> float:
    """The first time at or after `after` that falls on the phase."""
    return after + (phase * period - after) % period

