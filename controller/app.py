"""The OS-Ken application: a thin shell between switches and the service.

It keeps switch sessions, pushes compiled rules and waits for the barrier that
confirms them, and matches OpenFlow errors to the change that caused them.
Forwarding is the switches' own (controller/dataplane.py, kept by
controller/fabric.py); packet-ins are copies to learn hosts from, queued off
the event thread (controller/packetin.py) into controller/topostate.py.
Decisions are made elsewhere (enforcement/).

Threading: OS-Ken runs this app's handlers on one event thread; gRPC calls
sync() from its own worker threads and blocks until the switch's barrier reply
arrives on the event thread. So sync() must never be called from a handler.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3
from os_ken.topology import event as topo_event

from controller import compiler, discovery
from controller.dataplane import Budgets
from controller.fabric import STARTUP_GRACE, Fabric
from controller.packetin import DEFAULT_DEPTH, PacketInQueue
from controller.topostate import TopologyState
from enforcement import pipeline
from enforcement.desired import (Change, SwitchState, apply_change, audit_parts, diff,
                                 diff_part)
from enforcement.errors import SwitchError, SwitchUnreachable
from enforcement.model import LinkView, Location, PortAlarm, TopologyView

LOG = logging.getLogger(__name__)

# Our transaction ids live in the upper half of the 32-bit space so they never
# collide with the ones OS-Ken assigns itself (echo requests and the like).
_XID_BASE = 0x8000_0000


@dataclasses.dataclass
class _Transaction:
    """Messages sent to one switch and the barrier that closes them."""
    described: dict[int, str]
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    errors: list[str] = dataclasses.field(default_factory=list)
    # Bodies of multipart replies, per request xid.
    replies: dict[int, list] = dataclasses.field(default_factory=dict)
    lost: bool = False  # the switch went away before answering


# An audit reads at most about this many flows of a switch (see audit()).
AUDIT_FLOWS = 8192
_NO_CHANGE = Change((), (), (), (), ())

@dataclasses.dataclass(frozen=True)
class Settings:
    budgets: Budgets = Budgets()
    packet_in_queue: int = DEFAULT_DEPTH
    startup_grace: float = STARTUP_GRACE


# Set by the process entry before OS-Ken instantiates the app (OS-Ken builds
# apps itself, with no arguments of ours).
INVENTORY_PATH: list[str | None] = [None]
SETTINGS: list[Settings] = [Settings()]


class EnforcementApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from enforcement import inventory
        # The process entry validated the file already (--inventory).
        self.inventory = inventory.load(INVENTORY_PATH[0])
        settings = SETTINGS[0]
        self._lock = threading.Lock()
        self._datapaths: dict[int, object] = {}
        self.net = TopologyState(self.inventory, settings.budgets)
        self.fabric = Fabric(self._transact, self.net.snapshot, settings.budgets,
                             on_budget=self._budget_alarm,
                             startup_grace=settings.startup_grace)
        self.packet_ins = PacketInQueue(self._learn, settings.packet_in_queue)
        self.alarms_raised = 0
        self._pending: dict[tuple[int, int], _Transaction] = {}
        self._xids = itertools.count(1)
        # What each switch confirmed holding of enforcement flows and meters.
        self._actual: dict[int, SwitchState] = {}
        self._sync_locks: dict[int, threading.Lock] = {}
        # Switches prepared but whose enforcement flows were only counted,
        # not read: dpid -> how many they hold.
        self._unread: dict[int, int] = {}
        self._audit_turns: dict[int, int] = {}
        self.switch_timeout = 5.0
        # Set by the process that wires the app to the service: called, off
        # the event thread, once a (re)connected switch has its base pipeline.
        self.on_switch_ready: Callable[[int], None] = lambda dpid: None
        # Called, off the event thread, with a subscriber's IP when its host
        # was seen on another access port (the service re-places enforcements).
        self.on_host_moved: Callable[[str], None] = lambda ip: None
        # Whether anything is enforced on an address: a host learned afresh
        # (first sighting, or again after its port turned out to be an uplink)
        # is handed to on_host_moved only then, so learning thousands of
        # hosts after a restart starts no thread for the unenforced ones.
        self.is_enforced: Callable[[str], bool] = lambda ip: False
        # Called, off the event thread, after a link went down or came up
        # (the service re-routes enforcements that span switches).
        self.on_links_changed: Callable[[], None] = lambda: None
        # Called, off the event thread, with an enforcement.model.PortAlarm
        # when an access port goes over a control-plane budget.
        self.on_port_alarm: Callable = lambda alarm: None

    # ---- the Network protocol used by the service -------------------------

    def locate(self, ip: str) -> Location | None:
        return self.net.locate(ip)

    def is_connected(self, dpid: int) -> bool:
        with self._lock:
            return dpid in self._datapaths

    def connected_switches(self) -> list[int]:
        with self._lock:
            return sorted(self._datapaths)

    def sync(self, dpid: int, desired: SwitchState, timeout: float,
             verify: bool = False):
        """Makes the switch hold exactly `desired` of enforcement state,
        sending only the difference to what it holds: what it confirmed
        before, or (verify=True) what it reports now, which catches drift.
        On a refusal the part already applied is undone, so nothing is
        half-installed. Returns the change pushed."""
        with self._sync_lock(dpid):
            held = self._unread.pop(dpid, None)
            if held is not None and not verify and held == len(desired.rules) > 0:
                change = self._reinstall(dpid, desired, timeout)
                if change is not None:
                    self.fabric.set_closing(dpid, replace=desired.rules.values())
                    return change
                verify = True  # it holds flows we do not want: read them
            elif held:
                verify = True
            if verify:
                self.fabric.audit(dpid)
            actual = (self.read_state(dpid, timeout) if verify
                      else self._actual.get(dpid, SwitchState.empty()))
            change = diff(actual, desired)
            if not change.empty:
                self._push(dpid, change, timeout, closing=False)
            self._actual[dpid] = SwitchState(dict(desired.rules), dict(desired.meters))
            self.fabric.set_closing(dpid, replace=desired.rules.values())
            return change

    def _reinstall(self, dpid: int, desired: SwitchState, timeout: float):
        """A reconnected switch holds as many enforcement flows as it should.
        Instead of reading them all (parsing 100,000 flow stats costs seconds),
        every wanted flow is added again (OFPFC_ADD replaces an identical flow
        in place; an altered one is put right) and the flows
        counted again: the same number means nothing else is there, so the
        switch holds exactly what it should. Returns the (empty) change, or
        None if other flows remain and must be read."""
        actual = self._actual.get(dpid, SwitchState.empty())
        meters = diff(SwitchState({}, actual.meters), SwitchState({}, desired.meters))
        count = compiler.flow_count_request(pipeline.NS_ENFORCE)
        replies = self._transact(dpid, [*compiler.change_messages(dataclasses.replace(
            meters, rules_to_add=tuple(desired.rules.values()))), count], timeout)
        after = sum(r.flow_count for r in replies.get(count.xid, []))
        self._actual[dpid] = SwitchState(dict(desired.rules), dict(desired.meters))
        if after != len(desired.rules):
            LOG.info("switch %016x holds %d enforcement flow(s) beyond the %d wanted; "
                     "reading them", dpid, after - len(desired.rules), len(desired.rules))
            return None
        LOG.info("switch %016x: its %d enforcement flow(s) re-installed in place and "
                 "counted", dpid, after)
        return dataclasses.replace(meters, rules_to_add=())

    def flow_count(self, dpid: int, timeout: float) -> int:
        """How many enforcement flows the switch holds (one aggregate request)."""
        request = compiler.flow_count_request(pipeline.NS_ENFORCE)
        replies = self._transact(dpid, [request], timeout).get(request.xid, [])
        return sum(r.flow_count for r in replies)

    def audit(self, dpid: int, timeout: float):
        """Checks a switch against what it confirmed holding, and repairs what
        differs (flows deleted, added or altered by hand, meters too).

        Every audit counts the enforcement flows (one aggregate request): a
        count that differs means flows were deleted or added, and every flow
        is read. Otherwise one part of them is read, by cookie: all of them up
        to AUDIT_FLOWS flows, else a rotating 1/2^k of them, so that a switch
        holding 100,000 flows is never parsed whole every few seconds (an
        altered flow is then found within 2^k audits). The reading runs
        beside decisions; only the comparison and the repair hold the
        switch's lock, so redundant repairs are possible, wrong ones are not:
        a re-add of what is wanted, a delete of what is not, both idempotent.
        Returns the change pushed, or None for a switch not reconciled yet."""
        with self._sync_lock(dpid):
            if dpid in self._unread or dpid not in self._actual:
                return None  # not reconciled yet: its reconnect does that
            wanted = len(self._actual[dpid].rules)
        self.fabric.audit(dpid)
        parts = audit_parts(wanted, self.flow_count(dpid, timeout), AUDIT_FLOWS)
        turn = self._audit_turns.get(dpid, 0)
        self._audit_turns[dpid] = turn + 1
        part = turn % parts
        flows = compiler.flow_stats_request(pipeline.NS_ENFORCE, part, parts)
        meters = compiler.meter_config_request()
        replies = self._transact(dpid, [flows, meters], timeout)
        seen = SwitchState(
            SwitchState.of([compiler.rule_from_stats(dpid, st)
                            for st in replies.get(flows.xid, [])], ()).rules,
            _enforcement_meters(compiler.meter_from_stats(dpid, st)
                                for st in replies.get(meters.xid, [])))
        with self._sync_lock(dpid):
            actual = self._actual.get(dpid)
            if actual is None:
                return _NO_CHANGE
            expected = SwitchState(
                {k: r for k, r in actual.rules.items() if r.cookie % parts == part},
                actual.meters)
            change = diff(seen, expected)
            self._push(dpid, change, timeout)
            return change

    def sync_part(self, dpid: int, rules: dict, meters: dict, timeout: float):
        """sync() for some rule keys and meter ids only (what a batch of
        decisions touched): compared with what the switch confirmed before,
        the difference pushed in one transaction, undone if refused."""
        with self._sync_lock(dpid):
            if self._unread.pop(dpid, None):
                # Reconnected and not reconciled yet: what it holds must be
                # known before a change can be computed against it.
                self._actual[dpid] = self.read_state(dpid, timeout)
                self.fabric.set_closing(dpid, replace=self._actual[dpid].rules.values())
            actual = self._actual.setdefault(dpid, SwitchState.empty())
            change = diff_part(actual, rules, meters)
            self._push(dpid, change, timeout)
            apply_change(actual, change)
            return change

    def _push(self, dpid: int, change, timeout: float, closing: bool = True) -> None:
        """Sends a change in one confirmed transaction; if the switch refuses
        any of it, what was applied is undone and the refusal raised. Then
        (closing) the flood set follows what the change opened or closed
        at egress, before the caller answers."""
        if change.empty:
            return
        try:
            self._transact(dpid, compiler.change_messages(change), timeout)
        except SwitchError:
            self._undo(dpid, change, timeout)
            raise
        if closing:
            self.fabric.set_closing(dpid, added=change.rules_to_add,
                                    deleted=change.rules_to_delete)

    def read_state(self, dpid: int, timeout: float) -> SwitchState:
        """The enforcement flows (by cookie namespace) and the meters the
        switch holds right now."""
        flows, meters = compiler.flow_stats_request(pipeline.NS_ENFORCE), \
            compiler.meter_config_request()
        replies = self._transact(dpid, [flows, meters], timeout)
        return SwitchState(
            SwitchState.of([compiler.rule_from_stats(dpid, st)
                            for st in replies.get(flows.xid, [])], ()).rules,
            _enforcement_meters(compiler.meter_from_stats(dpid, st)
                                for st in replies.get(meters.xid, [])))

    def flow_counters(self, dpid: int, cookie: int, timeout: float = 2.0) -> dict:
        """Packets and bytes that hit an enforcement's flows on a switch: the
        drop rules count what was dropped, the meter rules what was metered.
        (A flow two enforcements share carries the older one's cookie.)"""
        request = compiler.cookie_stats_request(cookie)
        stats = self._transact(dpid, [request], timeout).get(request.xid, [])
        return {"flows": len(stats), "packets": sum(st.packet_count for st in stats),
                "bytes": sum(st.byte_count for st in stats)}

    def _undo(self, dpid: int, change, timeout: float) -> None:
        # Deleting what may not exist is no error in OpenFlow; re-adding what
        # was deleted replaces it. Meters are removed only once nothing uses them.
        undo = [*map(compiler.flow_delete, change.rules_to_add),
                *map(compiler.flow_add, change.rules_to_delete),
                *map(compiler.meter_delete, change.meters_to_add)]
        try:
            self._transact(dpid, undo, timeout)
        except SwitchError as exc:
            LOG.error("switch %016x: undoing a refused change failed too (%s); "
                      "it will be rebuilt when it reconnects", dpid, exc)

    def _sync_lock(self, dpid: int) -> threading.Lock:
        with self._lock:
            return self._sync_locks.setdefault(dpid, threading.Lock())

    def topology(self) -> TopologyView:
        return self.net.view()

    # ---- switch sessions ---------------------------------------------------

    def start(self):
        started = super().start()
        switches = app_manager.lookup_service_brick("switches")
        if switches is not None and getattr(switches, "link_discovery", False):
            self.threads.append(hub.spawn(discovery.pace, switches))
        self.packet_ins.start()
        threading.Thread(target=self.fabric.run, name="data-plane", daemon=True).start()
        return started

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            with self._lock:
                self._datapaths[dp.id] = dp
            self.net.switch_up(dp.id, {
                no: (_name(d), _is_live(dp.ofproto, d))
                for no, d in getattr(dp, "ports", {}).items() if no < dp.ofproto.OFPP_MAX})
            LOG.info("switch %016x connected", dp.id)
            # Waiting for barriers must happen off the event thread.
            threading.Thread(target=self._prepare_switch, args=(dp.id,),
                             name=f"prepare-{dp.id:x}", daemon=True).start()
        elif ev.state == DEAD_DISPATCHER:
            with self._lock:
                if self._datapaths.get(dp.id) is not dp:
                    return
                del self._datapaths[dp.id]
                orphans = [t for (dpid, _), t in self._pending.items() if dpid == dp.id]
            self.net.switch_down(dp.id)
            self.fabric.forget(dp.id)
            for txn in orphans:
                txn.lost = True
                txn.done.set()
            self._actual.pop(dp.id, None)
            self._unread.pop(dp.id, None)
            LOG.warning("switch %016x disconnected", dp.id)

    def _prepare_switch(self, dpid: int) -> None:
        """Data plane, then whatever must be enforced on this switch.

        Nothing the switch holds is wiped: its data-plane flows are adopted
        (controller/fabric.py), and its enforcement flows and meters (from
        before a controller restart, or a short disconnection) are
        reconciled by the service against the store, so neither forwarding
        nor enforcement lapses. Only the meters and the number of
        enforcement flows are read here; sync() decides whether the flows
        themselves must be read.
        """
        try:
            with self._sync_lock(dpid):
                meters = compiler.meter_config_request()
                replies = self._transact(dpid, [meters], self.switch_timeout)
                held = [compiler.meter_from_stats(dpid, st)
                        for st in replies.get(meters.xid, [])]
                adopted = self.fabric.adopt(dpid, self.fabric.read(dpid), held)
                self.fabric.mark_hosts(self.net.adopt(adopted))
                self._actual[dpid] = SwitchState({}, _enforcement_meters(held))
                self._unread[dpid] = self.flow_count(dpid, self.switch_timeout)
            LOG.info("switch %016x ready", dpid)
        except SwitchError as exc:
            LOG.error("switch %016x could not be prepared: %s", dpid, exc)
            return
        self.on_switch_ready(dpid)

    # ---- confirmed pushes --------------------------------------------------

    def _transact(self, dpid: int, messages: list, timeout: float) -> dict[int, list]:
        """Sends messages and a barrier; returns once the switch confirmed all
        of them (with the bodies of any multipart replies, per request xid),
        raises SwitchError with the switch's own words otherwise."""
        with self._lock:
            dp = self._datapaths.get(dpid)
        if dp is None:
            raise SwitchUnreachable(f"switch {dpid:016x} is not connected")
        # Built outside the lock: a reconcile may compile 100,000 messages.
        txn = _Transaction(described={})
        wire = bytearray()
        for message in [*messages, compiler.barrier()]:
            message.set_xid(_XID_BASE | (next(self._xids) & 0x7FFF_FFFF))
            if isinstance(message, compiler.Wire):
                txn.described[message.xid] = "OFPFlowMod"
                wire += message.bytes()
            else:
                message.datapath = dp
                message.serialize()
                txn.described[message.xid] = type(message).__name__
                wire += message.buf
        with self._lock:
            if self._datapaths.get(dpid) is not dp:
                raise SwitchUnreachable(f"switch {dpid:016x} disconnected")
            for xid in txn.described:
                self._pending[(dpid, xid)] = txn
        try:
            # One write for the whole transaction: the switch reads a stream
            # of messages, and one queue hand-off and one send beat thousands.
            if not dp.send(bytes(wire)):
                raise SwitchUnreachable(f"switch {dpid:016x} connection is closed")
            if not txn.done.wait(timeout):
                raise SwitchUnreachable(
                    f"switch {dpid:016x} did not confirm within {timeout:.1f} s")
            if txn.lost:
                raise SwitchUnreachable(
                    f"switch {dpid:016x} disconnected before confirming")
            if txn.errors:
                raise SwitchError(f"switch {dpid:016x} refused: "
                                  + "; ".join(txn.errors))
            return txn.replies
        finally:
            with self._lock:
                for xid in txn.described:
                    self._pending.pop((dpid, xid), None)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        with self._lock:
            txn = self._pending.get((ev.msg.datapath.id, ev.msg.xid))
        if txn is not None:
            txn.done.set()

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPMeterConfigStatsReply,
                 ofp_event.EventOFPAggregateStatsReply, ofp_event.EventOFPMeterStatsReply],
                MAIN_DISPATCHER)
    def _stats_reply(self, ev):
        with self._lock:
            txn = self._pending.get((ev.msg.datapath.id, ev.msg.xid))
        if txn is not None:
            body = ev.msg.body
            txn.replies.setdefault(ev.msg.xid, []).extend(
                body if isinstance(body, list) else [body])

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev):
        msg = ev.msg
        text = compiler.describe_error(msg.type, msg.code)
        with self._lock:
            txn = self._pending.get((msg.datapath.id, msg.xid))
        if txn is None:
            LOG.error("switch %016x reported %s for xid %#x outside any change",
                      msg.datapath.id, text, msg.xid)
            return
        txn.errors.append(f"{text} on {txn.described.get(msg.xid, 'a message')}")

    # ---- topology and learning ---------------------------------------------

    @set_ev_cls(topo_event.EventLinkAdd)
    def _link_add(self, ev):
        src, dst = ev.link.src, ev.link.dst
        link = LinkView(src.dpid, src.port_no, dst.dpid, dst.port_no)
        new, gone = self.net.link_added(link)
        if gone:
            self.fabric.mark_hosts(gone)
        if new:
            LOG.info("link up %016x:%d -> %016x:%d", *dataclasses.astuple(link))
            self.fabric.mark_all()
            threading.Thread(target=self.on_links_changed, daemon=True).start()

    @set_ev_cls(topo_event.EventLinkDelete)
    def _link_delete(self, ev):
        src, dst = ev.link.src, ev.link.dst
        link = LinkView(src.dpid, src.port_no, dst.dpid, dst.port_no)
        if self.net.link_deleted(link):
            LOG.info("link down %016x:%d -> %016x:%d", *dataclasses.astuple(link))
            self.fabric.mark_all()
            threading.Thread(target=self.on_links_changed, daemon=True).start()

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        ofp, desc = msg.datapath.ofproto, msg.desc
        self.net.port_changed(msg.datapath.id, desc.port_no, _name(desc), _is_live(ofp, desc),
                              added=msg.reason == ofp.OFPPR_ADD,
                              deleted=msg.reason == ofp.OFPPR_DELETE)
        self.fabric.mark_all()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        # Only a copy, for learning: the switch forwards the packet itself.
        # Queued, never handled here (controller/packetin.py says why).
        msg = ev.msg
        self.packet_ins.put(msg.datapath.id, msg.match["in_port"], msg.data)

    def _learn(self, dpid: int, in_port: int, data: bytes) -> None:
        """The packet-in worker: learns hosts from a copy."""
        if not self.is_connected(dpid):
            return
        learned = self.net.learn(dpid, in_port, data, self.is_enforced)
        if learned.macs:
            self.fabric.mark_hosts(learned.macs)
        for alarm in learned.alarms:
            self._budget_alarm(*alarm)
        if learned.follow:
            threading.Thread(target=self.on_host_moved, args=(learned.follow,),
                             daemon=True).start()

    def _budget_alarm(self, dpid: int, port: int, budget: str, rate: float,
                      limit: float) -> None:
        ip = self.net.subscriber_at(dpid, port)
        detail = {"learn": "copies to the controller over the port's learning budget",
                  "storm": "broadcast and unknown unicast over the storm-control budget",
                  "learning_ban": "new MACs faster than allowed: learning banned for "
                                  f"{self.fabric.budgets.ban_seconds:.0f} s",
                  "max_hosts": "the port holds its maximum of hosts: no more learned"}[budget]
        LOG.warning("%016x port %d (%s): %s (%.1f, limit %.1f)", dpid, port,
                    ip or "no known subscriber", detail, rate, limit)
        self.alarms_raised += 1
        try:
            self.on_port_alarm(PortAlarm(dpid=dpid, port=port, budget=budget, rate_pps=rate,
                                         limit=limit, subscriber_ip=ip, detail=detail))
        except Exception:
            LOG.exception("port alarm not delivered")


def _is_live(ofp, desc) -> bool:
    return not (desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN)


def _enforcement_meters(meters) -> dict:
    """The enforcement meters among a switch's (the data plane's own per-port
    meters are controller/fabric.py's)."""
    return {m.meter_id: m for m in meters if pipeline.is_enforcement_meter(m.meter_id)}


def _name(desc) -> str:
    return desc.name.decode() if isinstance(desc.name, bytes) else str(desc.name)
