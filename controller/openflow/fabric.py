"""Keeps each switch's data plane (controller/openflow/dataplane.py) as computed.

One owner for the forwarding flows and the per-port meters: it computes what
every switch must hold from a snapshot of the topology and the hosts, pushes
only the difference (confirmed by a barrier), and reads the switch back when
it connects. Its worker thread coalesces what changed (hosts learned or
moved, links, ports that settled, bans that ended) and watches the port
meters for ports over their budgets.

A switch that connects holding data-plane flows (a controller restart, a
lost control channel) is **adopted, not flushed**: its flows are read back
(the known hosts with them: their cookies carry their addresses) and, until
the topology has been seen again (the hold: a few seconds after the
connection, longer after the controller itself started, while the other
switches are still reconnecting), only flows it lacks are added. Nothing is
removed or rewritten on a guess.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable

from controller.openflow import compiler, dataplane, dhcpguard
from controller.openflow.dataplane import Budgets, Ports
from enforcement.domain import pipeline
from enforcement.domain.desired import Change, SwitchState, diff
from enforcement.domain.errors import SwitchError, SwitchUnreachable
from enforcement.domain.flows import FlowRule, MeterSpec
from enforcement.domain.model import HostView

LOG = logging.getLogger(__name__)

RECONNECT_HOLD = 3.0     # settle (1.5 s) plus LLDP rediscovering the links
STARTUP_GRACE = 15.0     # OVS retries a lost controller every 8 s at most
POLL_INTERVAL = 2.0      # seconds between reads of the port meters
# Switches whose port meters are read per second, at most: up to 50
# switches each is read every POLL_INTERVAL, beyond that less often
# (1,000 switches: every 40 s), so reading meters costs the same at any size.
METER_READS_PER_SECOND = 25.0
# After a round of syncs that took t seconds the worker waits at least
# this many times t: churn across a large network (every snapshot reads
# every port) costs at most a bounded share of a core, at the price of
# coalescing more per round.
WORK_SHARE = 4.0
ALARM_REPEAT = 10.0      # a port still over budget is reported again after this
TICK = 0.1               # how soon a settled port or an ended ban takes effect
RELEASE_ONCE = 2.0       # the same held frame is sent on at most once this long
_SWITCH_PART = ""        # the part of a switch's flows not about one host


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the data plane is computed from, taken under the app's lock."""
    ports: dict[int, Ports]              # connected switch -> access and tree ports
    hosts: dict[str, HostView]           # located hosts by MAC
    down: dict[int, dict[int, int]]      # switch -> switch below it on the tree -> port
    closed_learning: dict[int, frozenset[int]]
    # The located hosts by switch; derived from hosts when not given (the
    # topology state keeps it between snapshots: it changes with the hosts).
    at: dict[int, list[HostView]] | None = None

    def __post_init__(self):
        if self.at is None:
            at: dict[int, list[HostView]] = {}
            for host in self.hosts.values():
                at.setdefault(host.dpid, []).append(host)
            object.__setattr__(self, "at", at)

    def below(self, dpid: int):
        """The hosts a switch forwards to (its own and its subtree's): the
        only ones it holds flows for (controller/topology/graph.py)."""
        assert self.at is not None
        for switch in (dpid, *self.down.get(dpid, ())):
            yield from self.at.get(switch, ())


@dataclasses.dataclass
class _Switch:
    parts: dict[str, dict] = dataclasses.field(default_factory=dict)  # part -> key -> rule
    meters: dict[int, MeterSpec] = dataclasses.field(default_factory=dict)
    hold_until: float = 0.0
    synced: tuple | None = None          # (ports key, hops) of the last full sync
    closing: dict = dataclasses.field(default_factory=dict)  # enforcement rules closing ports
    closures: dict = dataclasses.field(default_factory=dict)  # egress_closures(closing)
    meter_stats: dict[int, tuple[float, int, int]] = dataclasses.field(default_factory=dict)

    def flat(self) -> dict:
        return {k: r for part in self.parts.values() for k, r in part.items()}


class Fabric:
    def __init__(self, transact: Callable, snapshot: Callable[[], Snapshot],
                 budgets: Budgets, *,
                 on_budget: Callable[[int, int, str, float, float], None] = lambda *a: None,
                 clock: Callable[[], float] = time.monotonic,
                 startup_grace: float = STARTUP_GRACE, reconnect_hold: float = RECONNECT_HOLD,
                 timeout: float = 5.0,
                 dhcp_trusted: frozenset[tuple[int, int]] = frozenset(),
                 generation: Callable[[], object] | None = None):
        """generation: a value that changes whenever snapshot() may (the
        topology's generation); without it a snapshot is taken every tick."""
        self._transact = transact
        self._snapshot = snapshot
        self._generation = generation
        self.budgets = budgets
        self._on_budget = on_budget
        self._clock = clock
        self._started = clock()
        self._startup_grace = startup_grace
        self._reconnect_hold = reconnect_hold
        self.timeout = timeout
        self.dhcp_trusted = dhcp_trusted      # (dpid, port) of DHCP servers
        self._lock = threading.Lock()          # the bookkeeping below
        self._push_lock = threading.Lock()     # one sync at a time
        self._switches: dict[int, _Switch] = {}
        self._dirty_hosts: set[str] = set()
        self._wake = threading.Event()
        self._stopped = False
        self._alarmed: dict[tuple[int, int, str], float] = {}
        self._last_poll = 0.0
        self._poll_next = 0              # where the meter reads go on from
        # What the last tick saw: the topology's generation, and when a
        # switch's hold ends (it is synced in full then); _recheck asks for
        # a look at every switch (marked, adopted, a sync that failed).
        self._seen: object = None
        self._check_at = 0.0
        self._recheck = True
        self._halt = threading.Event()   # set when stopping
        # Held frames whose claim was accepted: (mac, dpid, in_port, frame).
        self._releases: list[tuple[str, int, int, bytes]] = []
        self._released: dict[tuple[int, int, int], float] = {}
        # Only the leading instance pushes; a follower keeps the books of
        # what it reads (the hosts its switches hold) and sends nothing.
        self.active = True

    # ---- what changed ------------------------------------------------------

    def mark_hosts(self, macs) -> None:
        with self._lock:
            self._dirty_hosts.update(macs)
        self._wake.set()

    def mark_all(self) -> None:
        with self._lock:
            for state in self._switches.values():
                state.synced = None
            self._recheck = True
        self._wake.set()

    def release(self, mac: str, dpid: int, in_port: int, frame: bytes) -> None:
        """A frame the switch held until its claim was judged (ARP, neighbour
        discovery: controller/openflow/dataplane.py) was accepted: it is sent through
        the switch's pipeline once mac's flows are in, so the host is not
        left waiting for its retry."""
        with self._lock:
            self._releases.append((mac, dpid, in_port, frame))
        self._wake.set()

    def _send_releases(self) -> None:
        """After the host syncs: a release whose host's flows are still to
        be pushed waits for them (else it would meet the hold again). A
        frame is sent on once: a copy of one that comes back (its flows
        missing after all) is not released again for a while."""
        now = self._clock()
        with self._lock:
            ready = [r for r in self._releases if r[0] not in self._dirty_hosts]
            self._releases = [r for r in self._releases if r[0] in self._dirty_hosts]
            for key in [k for k, at in self._released.items() if at < now - RELEASE_ONCE]:
                del self._released[key]
        for _, dpid, in_port, frame in ready:
            key = (dpid, in_port, hash(frame))
            if key in self._released:
                continue
            self._released[key] = now
            try:
                self._transact(dpid, [compiler.packet_out(in_port, frame)], self.timeout)
            except SwitchError as exc:
                LOG.debug("switch %016x: held frame not sent on: %s", dpid, exc)

    # ---- switch sessions ---------------------------------------------------

    def adopt(self, dpid: int, flows: list[FlowRule], meters: list[MeterSpec]) -> list[HostView]:
        """A switch (re)connected holding these data-plane flows and meters.
        Returns the hosts its known-source flows describe. Pushes the
        pipeline at once (only additions while the switch is held)."""
        state = _Switch()
        for rule in flows:
            part = dataplane.host_of_rule(rule) or _SWITCH_PART
            state.parts.setdefault(part, {})[rule.key] = rule
        state.meters = {m.meter_id: m for m in meters
                        if not pipeline.is_enforcement_meter(m.meter_id)}
        if any(pipeline.namespace_of(r.cookie) != pipeline.NS_BASE for r in flows):
            now = self._clock()
            state.hold_until = max(now + self._reconnect_hold,
                                   self._started + self._startup_grace)
            LOG.info("switch %016x holds %d data-plane flow(s): kept; only additions "
                     "for %.1f s", dpid, len(flows), state.hold_until - now)
        with self._lock:
            self._switches[dpid] = state
            self._recheck = True   # its hold's end
        self._remove_legacy(dpid)
        self.sync_switch(dpid)
        return dataplane.hosts_from_rules(dpid, flows)

    def _remove_legacy(self, dpid: int) -> None:
        """OS-Ken's LLDP rule, from a controller before the data plane
        copied LLDP itself, would keep LLDP out of enforcement's reach."""
        if not self.active:
            return
        try:
            self._transact(dpid, [compiler.flow_delete_wire(rule)
                                  for rule in dataplane.legacy_rules(dpid)], self.timeout)
        except SwitchError as exc:
            LOG.warning("switch %016x: OS-Ken's old LLDP rule not removed: %s", dpid, exc)

    def forget(self, dpid: int) -> None:
        with self._lock:
            self._switches.pop(dpid, None)

    def forget_all(self) -> None:
        """What a follower read of its switches is stale by the time it
        leads: each is adopted afresh (controller/osken/app.py, prepare_all)."""
        with self._lock:
            self._switches.clear()

    def set_closing(self, dpid: int, added=(), deleted=(), replace=None) -> None:
        """Enforcement rules pushed to a switch (or, with replace, all it
        holds): when they open or close a port at egress, the flood set
        follows before this returns, so an Apply that answers has done both."""
        with self._lock:
            state = self._switches.get(dpid)
            if state is None:
                return
            before, touched = state.closures, replace is not None
            if replace is not None:
                state.closing = {r.key: r for r in replace if dataplane.is_closing_rule(r)}
            for rule in deleted:
                if state.closing.get(rule.key) == rule:
                    del state.closing[rule.key]
                    touched = True
            for rule in added:
                if dataplane.is_closing_rule(rule):
                    state.closing[rule.key] = rule
                    touched = True
            if touched:
                state.closures = dataplane.egress_closures(state.closing.values())
            changed = state.closures != before
        if changed:
            self.sync_switch(dpid)

    # ---- pushing -----------------------------------------------------------

    def sync_switch(self, dpid: int, snap: Snapshot | None = None) -> None:
        """Makes the switch hold its whole computed data plane."""
        snap = snap or self._snapshot()
        with self._push_lock:
            with self._lock:
                state = self._switches.get(dpid)
                if state is None or dpid not in snap.ports:
                    return
                ports = self._ports(dpid, state, snap)
                down = snap.down.get(dpid, {})
                rules, meters = dataplane.switch_rules(
                    dpid, ports, self.budgets, dhcpguard.on_switch(self.dhcp_trusted, dpid))
                wanted = {_SWITCH_PART: {r.key: r for r in rules}}
                for host in snap.below(dpid):
                    flows = self._host_part(dpid, host, ports, down)
                    if flows:
                        wanted[host.mac] = flows
                for name in state.parts:
                    wanted.setdefault(name, {})  # hosts gone since
                held = self._clock() < state.hold_until
                synced = None if held else (ports.key(), down)
            self._push(dpid, state, wanted, {m.meter_id: m for m in meters}, held)
            with self._lock:
                state.synced = synced

    def sync_hosts(self, macs: set[str], snap: Snapshot) -> None:
        """Only these hosts' flows, on the switches that hold them or must:
        a host's own switch and those above it (and wherever it was)."""
        with self._push_lock:
            for dpid in list(snap.ports):
                with self._lock:
                    state = self._switches.get(dpid)
                    if state is None:
                        continue
                    down = snap.down.get(dpid, {})
                    wanted = {}
                    for mac in macs:
                        host = snap.hosts.get(mac)
                        mine = host is not None and (host.dpid == dpid or host.dpid in down)
                        if mine or mac in state.parts:
                            wanted[mac] = (self._host_part(dpid, host, self._ports(
                                dpid, state, snap), down) if mine and host else {})
                    held = self._clock() < state.hold_until
                if wanted:
                    self._push(dpid, state, wanted, None, held)

    def _ports(self, dpid: int, state: _Switch, snap: Snapshot) -> Ports:
        base = snap.ports[dpid]
        return dataclasses.replace(
            base, closed_learning=snap.closed_learning.get(dpid, frozenset()) & base.access,
            egress={p: open_to for p, open_to in state.closures.items() if p in base.access})

    @staticmethod
    def _host_part(dpid: int, host: HostView, ports: Ports, down: dict) -> dict:
        return {r.key: r for r in host_flows(dpid, host, ports, down)}

    def _push(self, dpid: int, state: _Switch, wanted: dict, meters: dict | None,
              held: bool) -> None:
        """wanted: part -> key -> rule for the parts to set (meters: all of
        the switch's, or None to leave them)."""
        if not self.active:
            return
        with self._lock:
            old = {k: r for part in wanted for k, r in state.parts.get(part, {}).items()}
            new = {k: r for part in wanted.values() for k, r in part.items()}
            old_meters = state.meters if meters is not None else {}
            change = diff(SwitchState(old, dict(old_meters)),
                          SwitchState(new, dict(meters or {})))
            if held:
                flat = state.flat()
                change = Change(change.meters_to_add, (), (),
                                tuple(r for r in change.rules_to_add if r.key not in flat), ())
        if change.empty:
            return
        try:
            self.send_change(dpid, change)
        except SwitchUnreachable:
            return  # it will be adopted afresh when it reconnects
        except SwitchError as exc:
            LOG.error("switch %016x refused its data plane: %s", dpid, exc)
            with self._lock:
                state.synced = None
            return
        with self._lock:
            for rule in change.rules_to_delete:
                part = state.parts.get(dataplane.host_of_rule(rule) or _SWITCH_PART, {})
                if part.get(rule.key) == rule:
                    del part[rule.key]
            for rule in change.rules_to_add:
                name = dataplane.host_of_rule(rule) or _SWITCH_PART
                state.parts.setdefault(name, {})[rule.key] = rule
            for meter in change.meters_to_delete:
                state.meters.pop(meter.meter_id, None)
            for meter in (*change.meters_to_add, *change.meters_to_modify):
                state.meters[meter.meter_id] = meter
            for name in [p for p, rules in state.parts.items() if not rules]:
                del state.parts[name]

    def send_change(self, dpid: int, change: Change) -> None:
        self._transact(dpid, compiler.change_messages(change), self.timeout)

    # ---- the worker --------------------------------------------------------

    def run(self, poll_interval: float = POLL_INTERVAL) -> None:
        while not self._stopped:
            self._wake.wait(TICK)
            self._wake.clear()
            if not self.active:
                continue
            try:
                started = time.perf_counter()
                if self.tick():
                    # Marks arriving meanwhile wait: they are coalesced.
                    self._halt.wait(WORK_SHARE * (time.perf_counter() - started))
                if self._clock() - self._last_poll >= poll_interval:
                    elapsed = self._clock() - self._last_poll
                    self._last_poll = self._clock()
                    self.poll_budgets(max(1, int(METER_READS_PER_SECOND
                                                 * min(elapsed, 2 * poll_interval))))
            except Exception:
                LOG.exception("data-plane worker")
                self._recheck = True   # not lost: looked at again next tick

    def stop(self) -> None:
        self._stopped = True
        self._halt.set()
        self._wake.set()

    def tick(self) -> bool:
        """Full syncs where a switch's ports, paths or hold changed; host
        syncs for the hosts that changed. Nothing at all (not even a
        snapshot) while nothing did. Returns whether it looked."""
        seen = self._generation() if self._generation is not None else object()
        now = self._clock()
        with self._lock:
            if (seen == self._seen and not self._recheck and now < self._check_at
                    and not self._dirty_hosts and not self._releases):
                return False
            self._seen, self._recheck = seen, False
        snap = self._snapshot()
        with self._lock:
            macs, self._dirty_hosts = self._dirty_hosts, set()
            now = self._clock()
            stale = []
            self._check_at = min((s.hold_until for s in self._switches.values()
                                  if s.hold_until > now), default=math.inf)
            for dpid, state in self._switches.items():
                if dpid not in snap.ports or now < state.hold_until:
                    continue
                ports = self._ports(dpid, state, snap)
                if state.synced != (ports.key(), snap.down.get(dpid, {})):
                    stale.append(dpid)
        for dpid in stale:
            self.sync_switch(dpid, snap)
        with self._lock:
            # A sync the switch refused is tried again at the next tick.
            self._recheck = any(self._switches[d].synced is None
                                for d in stale if d in self._switches)
        if macs:
            self.sync_hosts(macs, snap)
        if self._releases:
            self._send_releases()
        return True

    def audit(self, dpid: int) -> None:
        """Puts back data-plane flows deleted behind the controller's back
        (ovs-ofctl del-flows): counted, and read only when the count differs."""
        if not self.active:
            return
        with self._lock:
            state = self._switches.get(dpid)
            if state is None:
                return
            wanted = len(state.flat())
        requests = [compiler.flow_count_request(ns) for ns in _NAMESPACES]
        replies = self._transact(dpid, requests, self.timeout)
        held = sum(r.flow_count for q in requests for r in replies.get(q.xid, []))
        if held == wanted:
            return
        flows = self.read(dpid)
        LOG.warning("switch %016x holds %d data-plane flow(s), %d wanted: repairing",
                    dpid, held, wanted)
        with self._lock:
            state.parts = {}
            for rule in flows:
                state.parts.setdefault(dataplane.host_of_rule(rule) or _SWITCH_PART,
                                       {})[rule.key] = rule
            state.synced = None
        self.sync_switch(dpid)

    def read(self, dpid: int) -> list[FlowRule]:
        requests = [compiler.flow_stats_request(ns) for ns in _NAMESPACES]
        replies = self._transact(dpid, requests, self.timeout)
        return [compiler.rule_from_stats(dpid, st)
                for q in requests for st in replies.get(q.xid, [])]

    # ---- budgets -----------------------------------------------------------

    def poll_budgets(self, count: int | None = None) -> None:
        """Reads the port meters of count switches (all by default), going
        round them in turn: a meter that dropped since the last read means
        its port went over budget."""
        with self._lock:
            dpids = sorted(self._switches)
        if count is not None and count < len(dpids):
            start = self._poll_next % len(dpids)
            dpids = (dpids[start:] + dpids[:start])[:count]
            self._poll_next = start + count
        for dpid in dpids:
            request = compiler.meter_stats_request()
            try:
                replies = self._transact(dpid, [request], self.timeout)
            except SwitchError:
                continue
            now = self._clock()
            with self._lock:
                state = self._switches.get(dpid)
                if state is None:
                    continue
                alarms = []
                for st in replies.get(request.xid, []):
                    which = dataplane.meter_port(st.meter_id)
                    if which is None:
                        continue
                    dropped = sum(b.packet_band_count for b in st.band_stats)
                    before = state.meter_stats.get(st.meter_id)
                    state.meter_stats[st.meter_id] = (now, st.packet_in_count, dropped)
                    if before is None or dropped <= before[2] or now <= before[0]:
                        continue
                    rate = (st.packet_in_count - before[1]) / (now - before[0])
                    budget, port = which
                    limit = (self.budgets.learn_pps if budget == "learn"
                             else self.budgets.storm_pps)
                    last = self._alarmed.get((dpid, port, budget))
                    if last is None or now - last >= ALARM_REPEAT:
                        self._alarmed[(dpid, port, budget)] = now
                        alarms.append((dpid, port, budget, rate, limit))
            for alarm in alarms:
                self._on_budget(*alarm)

    def held_flow_counts(self) -> dict[int, int]:
        with self._lock:
            return {dpid: len(state.flat()) for dpid, state in self._switches.items()}


def host_flows(dpid: int, host: HostView, ports: Ports,
               down: dict[int, int]) -> tuple[FlowRule, ...]:
    """A host's flows on a switch with these ports, down: the switches below
    it and the port toward each. Nothing unless the host is here or below."""
    out = host.port if host.dpid == dpid else down.get(host.dpid)
    learns = host.dpid == dpid and host.port in ports.access
    came = None
    if ports.isolated and not ports.gateway:
        # Only what comes down is looked up; no way down, no entry.
        came = ports.up
        out = out if came is not None else None
    return dataplane.host_rules(dpid, host, out, learns, came,
                                port_open=host.port not in ports.closed_learning)


_NAMESPACES = (pipeline.NS_BASE, pipeline.NS_FORWARD, pipeline.NS_HOST)
