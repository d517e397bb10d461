"""The OS-Ken application: a thin shell between switches and the service.

It keeps switch sessions, pushes compiled rules and waits for the barrier that
confirms them, matches OpenFlow errors to the change that caused them, learns
where hosts live, and forwards traffic with a learning switch in the
forwarding table. Decisions are made elsewhere (enforcement/).

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
from os_ken.lib.packet import arp, ethernet, ether_types, ipv4, packet
from os_ken.ofproto import ofproto_v1_3
from os_ken.topology import event as topo_event

from controller import compiler, discovery, forwarding
from controller.hosts import HostTable
from controller.settling import Settling
from enforcement import pipeline, topology
from enforcement.routing import switch_graph
from enforcement.desired import (Change, SwitchState, apply_change, audit_parts, diff,
                                 diff_part)
from enforcement.errors import SwitchError, SwitchUnreachable
from enforcement.model import HostView, LinkView, Location, SwitchView, TopologyView

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

# Set by the process entry before OS-Ken instantiates the app (OS-Ken builds
# apps itself, with no arguments of ours).
INVENTORY_PATH: list[str | None] = [None]


class EnforcementApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from enforcement import inventory
        # The process entry validated the file already (--inventory).
        self.inventory = inventory.load(INVENTORY_PATH[0])
        self._lock = threading.Lock()
        self._datapaths: dict[int, object] = {}
        self._hosts = HostTable(self.inventory)
        self._links: set[LinkView] = set()
        self._settling = Settling()
        self._tree_cache = None  # (links, view, graph, spanning tree)
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

    # ---- the Network protocol used by the service -------------------------

    def locate(self, ip: str) -> Location | None:
        with self._lock:
            host = self._hosts.by_ip(ip)
        # A pinned line whose MAC is neither in the inventory nor seen yet
        # cannot take MAC-matched rules (cutoff, anti-spoofing): not located.
        return None if host is None or not host.mac else Location(host.dpid, host.port,
                                                                  host.mac)

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
                    return change
                verify = True  # it holds flows we do not want: read them
            elif held:
                verify = True
            if verify:
                self._repair_base(dpid, timeout)
            actual = (self.read_state(dpid, timeout) if verify
                      else self._actual.get(dpid, SwitchState.empty()))
            change = diff(actual, desired)
            if change.empty:
                self._actual[dpid] = actual
                return change
            self._push(dpid, change, timeout)
            self._actual[dpid] = SwitchState(dict(desired.rules), dict(desired.meters))
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
            self._repair_base(dpid, timeout)
            wanted = len(self._actual[dpid].rules)
        parts = audit_parts(wanted, self.flow_count(dpid, timeout), AUDIT_FLOWS)
        turn = self._audit_turns.get(dpid, 0)
        self._audit_turns[dpid] = turn + 1
        part = turn % parts
        flows = compiler.flow_stats_request(pipeline.NS_ENFORCE, part, parts)
        meters = compiler.meter_config_request()
        replies = self._transact(dpid, [flows, meters], timeout)
        seen = SwitchState.of(
            [compiler.rule_from_stats(dpid, st) for st in replies.get(flows.xid, [])],
            [compiler.meter_from_stats(dpid, st) for st in replies.get(meters.xid, [])])
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
            actual = self._actual.setdefault(dpid, SwitchState.empty())
            change = diff_part(actual, rules, meters)
            self._push(dpid, change, timeout)
            apply_change(actual, change)
            return change

    def _push(self, dpid: int, change, timeout: float) -> None:
        """Sends a change in one confirmed transaction; if the switch refuses
        any of it, what was applied is undone and the refusal raised."""
        if change.empty:
            return
        try:
            self._transact(dpid, compiler.change_messages(change), timeout)
        except SwitchError:
            self._undo(dpid, change, timeout)
            raise

    def _repair_base(self, dpid: int, timeout: float) -> None:
        """Puts back base pipeline flows deleted behind our back (ovs-ofctl
        del-flows), and relearns forwarding, whose flows went with them."""
        request = compiler.flow_stats_request(pipeline.NS_BASE)
        held = {compiler.rule_from_stats(dpid, st)
                for st in self._transact(dpid, [request], timeout).get(request.xid, [])}
        missing = [r for r in forwarding.base_rules(dpid) if r not in held]
        if not missing:
            return
        LOG.warning("switch %016x lost %d base flow(s); restoring", dpid, len(missing))
        self._transact(dpid, [compiler.delete_namespace(pipeline.NS_FORWARD),
                              *map(compiler.flow_add, missing)], timeout)

    def read_state(self, dpid: int, timeout: float) -> SwitchState:
        """The enforcement flows (by cookie namespace) and the meters the
        switch holds right now."""
        flows, meters = compiler.flow_stats_request(pipeline.NS_ENFORCE), \
            compiler.meter_config_request()
        replies = self._transact(dpid, [flows, meters], timeout)
        return SwitchState.of(
            [compiler.rule_from_stats(dpid, st) for st in replies.get(flows.xid, [])],
            [compiler.meter_from_stats(dpid, st) for st in replies.get(meters.xid, [])])

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
        with self._lock:
            switches = tuple(
                SwitchView(dpid, tuple(sorted(
                    (no, p.name.decode() if isinstance(p.name, bytes) else str(p.name))
                    for no, p in getattr(dp, "ports", {}).items()
                    if no < ofproto_v1_3.OFPP_MAX)))
                for dpid, dp in sorted(self._datapaths.items()))
            links = tuple(sorted(self._links, key=dataclasses.astuple))
            hosts = self._hosts.all()
        return TopologyView(switches, links, hosts)

    # ---- switch sessions ---------------------------------------------------

    def start(self):
        started = super().start()
        switches = app_manager.lookup_service_brick("switches")
        if switches is not None and getattr(switches, "link_discovery", False):
            self.threads.append(hub.spawn(discovery.pace, switches))
        return started

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            with self._lock:
                self._datapaths[dp.id] = dp
                ports = {no: d for no, d in getattr(dp, "ports", {}).items()
                         if no < dp.ofproto.OFPP_MAX}
                self._settling.came_up(dp.id, ports)
                for no, desc in ports.items():
                    if not _is_live(dp.ofproto, desc):
                        self._settling.went_down(dp.id, no)
            LOG.info("switch %016x connected", dp.id)
            # Waiting for barriers must happen off the event thread.
            threading.Thread(target=self._prepare_switch, args=(dp.id,),
                             name=f"prepare-{dp.id:x}", daemon=True).start()
        elif ev.state == DEAD_DISPATCHER:
            with self._lock:
                if self._datapaths.get(dp.id) is not dp:
                    return
                del self._datapaths[dp.id]
                self._settling.forget_switch(dp.id)
                self._links = {l for l in self._links
                               if dp.id not in (l.src_dpid, l.dst_dpid)}
                orphans = [t for (dpid, _), t in self._pending.items() if dpid == dp.id]
            for txn in orphans:
                txn.lost = True
                txn.done.set()
            self._actual.pop(dp.id, None)
            self._unread.pop(dp.id, None)
            LOG.warning("switch %016x disconnected", dp.id)

    def _prepare_switch(self, dpid: int) -> None:
        """Base pipeline, then whatever must be enforced on this switch.

        Enforcement flows and meters the switch still holds (from before a
        controller restart, or a short disconnection) are kept, not wiped:
        the service reconciles them against the store, so enforcement never
        lapses. Only the meters and the number of enforcement flows are read
        here; sync() decides whether the flows themselves must be read.
        Learned forwarding is rebuilt from scratch.
        """
        try:
            with self._sync_lock(dpid):
                self._transact(dpid, [
                    compiler.delete_namespace(pipeline.NS_FORWARD),
                    *(compiler.flow_add(r) for r in forwarding.base_rules(dpid)),
                ], self.switch_timeout)
                meters = compiler.meter_config_request()
                replies = self._transact(dpid, [meters], self.switch_timeout)
                self._actual[dpid] = SwitchState({}, {
                    m.meter_id: m for m in (compiler.meter_from_stats(dpid, st)
                                            for st in replies.get(meters.xid, []))})
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
                 ofp_event.EventOFPAggregateStatsReply], MAIN_DISPATCHER)
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

    # ---- topology and forwarding -------------------------------------------

    @set_ev_cls(topo_event.EventLinkAdd)
    def _link_add(self, ev):
        src, dst = ev.link.src, ev.link.dst
        link = LinkView(src.dpid, src.port_no, dst.dpid, dst.port_no)
        with self._lock:
            new = link not in self._links
            self._links.add(link)
            for dpid, port in ((src.dpid, src.port_no), (dst.dpid, dst.port_no)):
                self._hosts.forget_port(dpid, port)
                self._settling.link_found(dpid, port)
        if new:
            LOG.info("link up %016x:%d -> %016x:%d", *dataclasses.astuple(link))
            self._flush_forwarding()
            threading.Thread(target=self.on_links_changed, daemon=True).start()

    @set_ev_cls(topo_event.EventLinkDelete)
    def _link_delete(self, ev):
        src, dst = ev.link.src, ev.link.dst
        link = LinkView(src.dpid, src.port_no, dst.dpid, dst.port_no)
        with self._lock:
            known = link in self._links
            self._links.discard(link)
        if known:
            LOG.info("link down %016x:%d -> %016x:%d", *dataclasses.astuple(link))
            self._flush_forwarding()
            threading.Thread(target=self.on_links_changed, daemon=True).start()

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        ofp, dpid, desc = msg.datapath.ofproto, msg.datapath.id, msg.desc
        with self._lock:
            if msg.reason == ofp.OFPPR_DELETE:
                self._settling.removed(dpid, desc.port_no)
            elif not _is_live(ofp, desc):
                self._settling.went_down(dpid, desc.port_no)
            elif msg.reason == ofp.OFPPR_ADD:
                self._settling.came_up(dpid, [desc.port_no])
            else:
                self._settling.went_up(dpid, desc.port_no)

    def _is_link_port(self, dpid: int, port: int) -> bool:
        return any((l.src_dpid, l.src_port) == (dpid, port)
                   or (l.dst_dpid, l.dst_port) == (dpid, port) for l in self._links)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        in_port = msg.match["in_port"]
        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        sender_ip = None
        if (arp_pkt := pkt.get_protocol(arp.arp)) is not None:
            sender_ip = arp_pkt.src_ip if arp_pkt.src_ip != "0.0.0.0" else None
        elif (ip_pkt := pkt.get_protocol(ipv4.ipv4)) is not None:
            sender_ip = ip_pkt.src

        with self._lock:
            if dp.id not in self._datapaths:
                return
            moved = follow = None
            settling = self._settling.is_settling(dp.id, in_port)
            if (not settling and not self._is_link_port(dp.id, in_port)
                    and not self._settling.was_uplink(dp.id, in_port)
                    and not _is_group(eth.src)):
                before = self._hosts.by_mac(eth.src)
                was = self._hosts.by_ip(sender_ip) if sender_ip else None
                if (pin := self._hosts.pinned_elsewhere(sender_ip, dp.id, in_port)):
                    LOG.warning("%s (%s) seen at %016x port %d, but the inventory pins "
                                "account %s to %016x port %d; location unchanged",
                                sender_ip, eth.src, dp.id, in_port, pin.account,
                                pin.dpid, pin.port)
                elif self._hosts.learn(dp.id, in_port, eth.src, sender_ip):
                    LOG.info("host %s (%s) at %016x port %d", eth.src,
                             sender_ip or "no IP yet", dp.id, in_port)
                    now = self._hosts.by_mac(eth.src)
                    if before is not None and (before.dpid, before.port) != (dp.id, in_port):
                        moved = now
                    elif (now.ip and _place(was) != _place(now)
                          and self.is_enforced(now.ip)):
                        # The address is known here afresh while enforced: it
                        # may have been planned where it was wrongly seen (an
                        # uplink not discovered yet, forgotten since); the
                        # service re-places only what is not at this port.
                        follow = now.ip
            view, graph, tree = self._forwarding_view()
            destination = None if _is_group(eth.dst) else self._hosts.by_mac(eth.dst)
            quiet = self._settling.settling_ports(dp.id) if destination is None else set()

        if moved is not None:
            LOG.info("host %s moved to %016x port %d", moved.mac, moved.dpid, moved.port)
            # Paths toward it are stale on every switch; they are recomputed
            # as traffic comes back to the controller.
            self._flush_forwarding(match_mac=moved.mac)
            follow = moved.ip
        if follow:
            threading.Thread(target=self.on_host_moved, args=(follow,), daemon=True).start()
        ofp, parser = dp.ofproto, dp.ofproto_parser
        if destination is not None:
            out_port = topology.next_hop(view, dp.id, destination, graph)
            if out_port is None or out_port == in_port:
                return
            rule = compiler.flow_add(forwarding.learned_rule(dp.id, eth.dst, out_port))
            rule.datapath = dp
            dp.send_msg(rule)
            out_ports = [out_port]
        else:
            # Broadcast, or a destination not located yet: along the tree only,
            # and neither from nor into a port still settling (settling.py).
            if settling or not topology.accepts_broadcast(view, dp.id, in_port, tree):
                return
            ports = {no for no in getattr(dp, "ports", {}) if no < ofp.OFPP_MAX} - quiet
            out_ports = sorted(topology.flood_ports(view, dp.id, ports, tree) - {in_port})
        if out_ports:
            dp.send_msg(parser.OFPPacketOut(
                datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                actions=[parser.OFPActionOutput(port) for port in out_ports],
                data=msg.data))

    def _forwarding_view(self):
        """The links as a view, its graph and spanning tree, rebuilt only when
        the links changed (every packet-in asks). Caller holds the lock."""
        key = frozenset(self._links)
        if self._tree_cache is None or self._tree_cache[0] != key:
            view = TopologyView(tuple(SwitchView(d, ()) for d in sorted(self._datapaths)),
                                tuple(sorted(self._links, key=dataclasses.astuple)), ())
            graph = switch_graph(view)
            self._tree_cache = (key, view, graph, topology.spanning_tree(graph))
        _, view, graph, tree = self._tree_cache
        return TopologyView(view.switches, view.links, ()), graph, tree

    def _flush_forwarding(self, match_mac: str | None = None) -> None:
        """Drops computed paths (all of them, or toward one MAC) on every
        switch, so that the next packets take paths for the current topology."""
        with self._lock:
            datapaths = list(self._datapaths.values())
        for dp in datapaths:
            message = compiler.delete_namespace(pipeline.NS_FORWARD, eth_dst=match_mac)
            message.datapath = dp
            dp.send_msg(message)


def _is_live(ofp, desc) -> bool:
    return not (desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN)


def _place(host: HostView | None) -> tuple[int, int] | None:
    return None if host is None else (host.dpid, host.port)


def _is_group(mac: str) -> bool:
    return int(mac[:2], 16) & 1 == 1
