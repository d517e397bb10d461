"""The OS-Ken application: a thin shell between switches and the service.

It turns OpenFlow events into calls on the parts that own them:
controller/openflow/sessions.py (sessions, confirmed transactions, errors),
controller/openflow/switchsync.py (enforcement state on the switches),
controller/openflow/fabric.py (the data plane), controller/topology/state.py (links,
ports, hosts, learned from packet-in copies queued by controller/openflow/packetin.py).
Decisions are made elsewhere (enforcement/).

Roles: every instance connects to every switch. The leader claims each one
as OpenFlow MASTER with its epoch as generation_id (which demotes any older
master to SLAVE); followers are SLAVEs that still hear packet-in copies and
port changes, so they know hosts and links when they take over. Only the
leader sends anything that changes a switch.

Threading: OS-Ken runs this app's handlers on one event thread; gRPC calls
sync() from its own worker threads and blocks until the switch's barrier reply
arrives on the event thread. So sync() must never be called from a handler.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3
from os_ken.topology import event as topo_event

from controller.openflow import dataplane
from controller.openflow.dataplane import Budgets
from controller.openflow.fabric import RECONNECT_HOLD, STARTUP_GRACE, Fabric
from controller.openflow.handoff import Coalesced
from controller.openflow.packetin import DEFAULT_DEPTH, PacketInQueue
from controller.openflow.probeframes import is_probe
from controller.openflow.prover import Prover
from controller.openflow.roles import Epochs, Roles
from controller.openflow.sessions import Sessions
from controller.openflow.switchsync import SwitchSync
from controller.osken.learning import Learning
from controller.topology.dhcp.snooping import Snooping
from controller.topology.lldp.discovery import Discovery, Hooks, is_lldp
from controller.topology.state import TopologyState
from enforcement.domain.errors import SwitchError
from enforcement.domain.inventory import Pinned
from enforcement.domain.model import (
    HostView,
    IdentityEvent,
    LinkView,
    Location,
    PortAlarm,
    TopologyView,
)

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    budgets: Budgets = Budgets()
    packet_in_queue: int = DEFAULT_DEPTH
    startup_grace: float = STARTUP_GRACE
    dhcp_trusted: frozenset[tuple[int, int]] = frozenset()  # (dpid, port) of DHCP servers
    switch_timeout: float = 5.0
    gateway: int | None = None     # the gateway switch (--gateway)
    isolated: bool = False         # subscriber isolation below it


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the process entry (controller/main.py) hands OS-Ken for this
    app, which OS-Ken builds itself: its keywords reach every app."""
    inventory: Sequence[Pinned] = ()  # validated already (--inventory)
    settings: Settings = Settings()


class Service(Protocol):
    """What the app tells the service (enforcement.lifecycle.service), all
    called off the event thread: a (re)connected switch has its base
    pipeline; a subscriber's host was seen on another access port; a link
    went down or came up; an access port went over a budget; a claim on who
    is where was refused (from whichever thread refused it). is_enforced:
    whether anything is enforced on a subscriber (by MAC): a host learned
    afresh is handed to host_moved only then, so learning thousands of hosts
    after a restart starts no thread for the unenforced ones."""

    def resync(self, dpid: int) -> None: ...
    def host_moved(self, macs: tuple[str, ...]) -> None: ...
    def is_enforced(self, mac: str) -> bool: ...
    def links_changed(self) -> None: ...
    def report_port_alarm(self, alarm: PortAlarm) -> None: ...
    def report_identity_event(self, event: IdentityEvent) -> None: ...


class _NoService:
    """The service's stand-in until it is connected (it is built after
    OS-Ken, which builds this app): nothing enforced, nothing reported.
    Only switches that connect meanwhile meet it, and they are claimed
    and reconciled when this instance is elected."""

    def resync(self, dpid: int) -> None:
        pass

    def host_moved(self, macs: tuple[str, ...]) -> None:
        pass

    def is_enforced(self, mac: str) -> bool:
        return False

    def links_changed(self) -> None:
        pass

    def report_port_alarm(self, alarm: PortAlarm) -> None:
        pass

    def report_identity_event(self, event: IdentityEvent) -> None:
        pass


class _ServiceLink:
    """The parts built with the app (learning, snooping) hold this from the
    start; EnforcementApp.connect points it at the service."""

    def __init__(self) -> None:
        self._to: Service = _NoService()

    def connect(self, service: Service) -> None:
        self._to = service

    def resync(self, dpid: int) -> None:
        self._to.resync(dpid)

    def host_moved(self, macs: tuple[str, ...]) -> None:
        self._to.host_moved(macs)

    def is_enforced(self, mac: str) -> bool:
        return self._to.is_enforced(mac)

    def links_changed(self) -> None:
        self._to.links_changed()

    def report_port_alarm(self, alarm: PortAlarm) -> None:
        self._to.report_port_alarm(alarm)

    def report_identity_event(self, event: IdentityEvent) -> None:
        self._to.report_identity_event(event)


class EnforcementApp(app_manager.OSKenApp):
    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, setup: Setup = Setup(), **kwargs):
        """setup: from the process entry, by way of OS-Ken's
        AppManager.instantiate_apps; the other keywords are OS-Ken's (and
        the other apps')."""
        super().__init__(*args, **kwargs)
        self.inventory = list(setup.inventory)
        self._lines = _lines_of(self.inventory)
        settings = setup.settings
        self.switch_timeout = settings.switch_timeout
        self.service = _ServiceLink()
        self.sessions = Sessions(on_fenced=lambda dpid: self.roles.fenced(dpid))
        self.roles = Roles(self.sessions.transact, lambda: self.switch_timeout)
        self.net = TopologyState(self.inventory, settings.budgets,
                                 roots=(frozenset() if settings.gateway is None
                                        else frozenset({settings.gateway})),
                                 isolated=settings.isolated)
        self.fabric = Fabric(self.sessions.transact, self.net.snapshot, settings.budgets,
                             on_budget=lambda *alarm: self.learning.budget_alarm(*alarm),
                             startup_grace=settings.startup_grace,
                             dhcp_trusted=settings.dhcp_trusted,
                             generation=self.net.generation)
        self.fabric.active = False
        self.switches = SwitchSync(self.sessions.transact, self.fabric)
        # DHCP snooping (controller/topology/dhcp/snooping.py): a binding made or renewed
        # (controller.topology.dhcp.bindings.Binding) or ended (its Release),
        # in order, on the packet-in worker or the lease-expiry thread.
        # The host table takes them in (controller/osken/learning.py).
        self.snooping = Snooping(
            settings.dhcp_trusted,
            on_change=lambda change: self.learning.binding_changed(change),
            on_untrusted=self.service.report_identity_event,
            leading=lambda: self.roles.leading,
            subscriber_at=lambda dpid, port: self.net.subscriber_at(dpid, port))
        self.learning = Learning(self.service, self.net, self.fabric,
                                 lambda: self.roles.leading, self.is_connected,
                                 snooping=self.snooping)
        self.packet_ins = PacketInQueue(self.learning.learn, settings.packet_in_queue)
        self.prover = Prover(self.sessions.transact)
        # Told of each switch made ready on the leader, after its reconcile.
        self.ready_listeners: list[Callable[[int], None]] = []
        # One thread at most: a burst of link changes must not start a
        # thread each (controller/openflow/handoff.py).
        self._links_changed = Coalesced(self.service.links_changed, "links-changed")
        self._discovery: Discovery | None = None

    def connect(self, service: Service, epochs: Epochs) -> None:
        """The service and the leadership, which are built after OS-Ken has
        built and started this app (the service needs it as its network):
        the process entry's one call (controller/main.py). The roles' own
        are controller/openflow/roles.py's, as controller/process/ha.py
        answers them."""
        self.service.connect(service)
        self.roles.connect(epochs)

    # ---- the switch port of the lifecycle (enforcement.lifecycle.network) --

    def locate(self, ip: str) -> Location | None:
        return self.net.locate(ip)

    def host(self, ip: str) -> HostView | None:
        return self.net.host(ip)

    def subscriber(self, mac: str) -> HostView | None:
        return self.net.subscriber(mac)

    def is_connected(self, dpid: int) -> bool:
        return self.sessions.is_connected(dpid)

    def repin(self, pinned) -> None:
        """A reloaded inventory (controller/process/reload.py): forwarding is
        rebuilt for where its subscribers are now, and the enforcements of
        a subscriber it moved follow it, as for a host seen elsewhere.
        Called on the reload thread."""
        before = {p.ip: (p.dpid, p.port) for p in self.inventory}
        self.inventory = list(pinned)
        self._lines = _lines_of(self.inventory)
        self.net.repin(self.inventory)
        self.fabric.mark_all()
        for pin in self.inventory:
            host = self.net.host(pin.ip)
            if before.get(pin.ip, (pin.dpid, pin.port)) != (pin.dpid, pin.port) \
                    and host is not None and host.mac \
                    and self.service.is_enforced(host.mac):
                self.service.host_moved((host.mac,))

    def is_subscriber_line(self, dpid: int, port: int) -> bool:
        """Whether the inventory pins a subscriber to this switch port."""
        return (dpid, port) in self._lines

    def connected_switches(self) -> list[int]:
        return self.sessions.dpids()

    def sync(self, dpid, desired, timeout, verify=False):
        return self.switches.sync(dpid, desired, timeout, verify)

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        return self.switches.sync_part(dpid, rules, meters, timeout, meanwhile)

    def audit(self, dpid, timeout):
        return self.switches.audit(dpid, timeout)

    def prove_many(self, dpid, items):
        return self.prover.prove_many(dpid, items)

    def flow_counters(self, dpid: int, cookie: int, timeout: float = 2.0) -> dict:
        return self.switches.flow_counters(dpid, cookie, timeout)

    def topology(self) -> TopologyView:
        return self.net.view()

    # ---- roles -------------------------------------------------------------

    def lead(self, epoch: int) -> float:
        """Claims every connected switch as MASTER at epoch, then starts
        pushing. Returns the seconds the claims took."""
        started = time.monotonic()
        self.switches.distrust_all()
        self.roles.epoch, self.roles.leading = epoch, True
        self._on_every_switch(self.roles.claim)
        if self.roles.leading and self.roles.epoch >= epoch:
            self.fabric.forget_all()
            self.fabric.active = True
            if self._discovery is not None:
                self._discovery.start_probing()
        return time.monotonic() - started

    def lead_on_at(self, epoch: int) -> None:
        """The lead goes on at a raised epoch (controller/process/ha.py):
        the claims from now on are made with it."""
        self.roles.epoch = epoch

    def claimed_epoch(self) -> int:
        """The epoch the switches are claimed with (0: none yet)."""
        return self.roles.epoch

    def newest_generation(self) -> int:
        """The newest generation id any connected switch has seen (above
        the store's epoch when the store is younger: controller/openflow/roles.py)."""
        seen: dict[int, int] = {}

        def ask(dpid: int) -> None:
            try:
                seen[dpid] = self.roles.generation(dpid)
            except SwitchError as exc:
                LOG.warning("switch %016x: role not read: %s", dpid, exc)
        self._on_every_switch(ask)
        return max(seen.values(), default=0)

    def prepare_all(self) -> None:
        """After a takeover: every switch read back and reconciled, as if it
        had just connected (adopted, not flushed)."""
        self._on_every_switch(self._prepare_switch)

    def follow(self) -> None:
        """Stops changing anything, and tells the switches so."""
        self.roles.leading = False
        self.fabric.active = False
        if self._discovery is not None:
            self._discovery.stop_probing()
        self._on_every_switch(self.roles.claim)

    def _on_every_switch(self, work: Callable[[int], object]) -> None:
        threads = [threading.Thread(target=work, args=(dpid,), daemon=True)
                   for dpid in self.sessions.dpids()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.switch_timeout * 3)

    # ---- switch sessions ---------------------------------------------------

    def start(self):
        started = super().start()
        switches = app_manager.lookup_service_brick("switches")
        if isinstance(switches, Discovery):
            self._discovery = switches
            switches.connect(Hooks(is_subscriber_line=self.is_subscriber_line,
                                   refused=self.learning.report_identity,
                                   arrivals=self.net.arrivals_since))
        self.packet_ins.start()
        threading.Thread(target=self.fabric.run, name="data-plane", daemon=True).start()
        threading.Thread(target=self.snooping.run, name="dhcp-leases", daemon=True).start()
        return started

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            self.sessions.connected(dp)
            self.net.switch_up(dp.id, {
                no: (_name(d), _is_live(dp.ofproto, d))
                for no, d in getattr(dp, "ports", {}).items() if no < dp.ofproto.OFPP_MAX})
            LOG.info("switch %016x connected", dp.id)
            # Waiting for barriers must happen off the event thread.
            threading.Thread(target=self._prepare_switch, args=(dp.id, True),
                             name=f"prepare-{dp.id:x}", daemon=True).start()
        elif ev.state == DEAD_DISPATCHER:
            if not self.sessions.disconnected(dp):
                return
            self.net.switch_down(dp.id)
            self.fabric.forget(dp.id)
            self.switches.forget(dp.id)
            LOG.warning("switch %016x disconnected", dp.id)

    def _prepare_switch(self, dpid: int, claim: bool = False) -> None:
        """Role, data plane, then whatever must be enforced on this switch.

        Nothing the switch holds is wiped: its data-plane flows are adopted
        (controller/openflow/fabric.py), and its enforcement flows and meters (from
        before a restart, a takeover or a short disconnection) are
        reconciled by the service against the store, so neither forwarding
        nor enforcement lapses. A follower reads the same (the hosts the
        switch knows) and changes nothing.
        """
        if claim:
            self.roles.claim(dpid)

        def adopt(meters):
            flows = self.fabric.read(dpid)
            self.net.links_held(dpid, dataplane.tree_ports_of(flows), RECONNECT_HOLD)
            self.fabric.mark_hosts(self.net.adopt(self.fabric.adopt(dpid, flows, meters)))
        try:
            self.switches.prepare(dpid, self.switch_timeout, adopt)
        except SwitchError as exc:
            LOG.error("switch %016x could not be prepared: %s", dpid, exc)
            return
        LOG.info("switch %016x ready (%s)", dpid, "master" if self.roles.leading else "slave")
        if self.roles.leading:
            if self._discovery is not None:
                self._discovery.probe_switch(dpid)
            self.service.resync(dpid)
            for listener in self.ready_listeners:
                listener(dpid)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        self.sessions.barrier_reply(ev.msg)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPMeterConfigStatsReply,
                 ofp_event.EventOFPAggregateStatsReply, ofp_event.EventOFPMeterStatsReply,
                 ofp_event.EventOFPRoleReply], MAIN_DISPATCHER)
    def _reply(self, ev):
        self.sessions.reply(ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev):
        self.sessions.error(ev.msg)

    # ---- topology and learning ---------------------------------------------

    @set_ev_cls(topo_event.EventLinkAdd)
    def _link_add(self, ev):
        src, dst = ev.link.src, ev.link.dst
        link = LinkView(src.dpid, src.port_no, dst.dpid, dst.port_no)
        new, gone = self.net.link_added(link)
        if gone:
            self.fabric.mark_hosts(gone)
        if new:
            LOG.info("link up %016x:%d <-> %016x:%d", *dataclasses.astuple(link))
            self.fabric.mark_all()
            self._links_changed.request()

    @set_ev_cls(topo_event.EventLinkDelete)
    def _link_delete(self, ev):
        src, dst = ev.link.src, ev.link.dst
        link = LinkView(src.dpid, src.port_no, dst.dpid, dst.port_no)
        if self.net.link_deleted(link):
            LOG.info("link down %016x:%d <-> %016x:%d", *dataclasses.astuple(link))
            self.fabric.mark_all()
            self._links_changed.request()

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
        # Queued, never handled here (controller/openflow/packetin.py says why).
        # LLDP teaches no host (discovery hears it): not queued, not parsed.
        # A probe the catch rules returned (controller/openflow/prover.py)
        # teaches nothing either.
        msg = ev.msg
        if is_lldp(msg.data):
            return
        if is_probe(msg.data):
            self.prover.caught(msg.datapath.id, msg.data)
            return
        self.packet_ins.put(msg.datapath.id, msg.match["in_port"], msg.data)

    def lldp_refused(self) -> dict[str, int]:
        """LLDP frames refused so far, by reason (every one, reported or not)."""
        if self._discovery is None:
            return {}
        return dict(self._discovery.refusals.counts)

    def lldp_probes(self) -> dict[str, int]:
        """LLDP packet-outs sent so far, by what they probed
        (controller/topology/lldp/schedule.py Probe.label)."""
        if self._discovery is None:
            return {}
        return dict(self._discovery.probes_sent)

    def lldp_ports(self) -> dict[str, int]:
        """Switch ports up, by how discovery probes them (link, new, settled)."""
        if self._discovery is None:
            return {}
        return self._discovery.port_kinds()

    def lldp_link_timeout(self) -> float | None:
        """How long a link direction may go unheard before it goes down."""
        if self._discovery is None:
            return None
        return self._discovery.schedule.link_timeout()

    @property
    def alarms_raised(self) -> int:
        return self.learning.alarms_raised


def _lines_of(pinned) -> frozenset[tuple[int, int]]:
    return frozenset((p.dpid, p.port) for p in pinned)


def _is_live(ofp, desc) -> bool:
    return not (desc.state & ofp.OFPPS_LINK_DOWN or desc.config & ofp.OFPPC_PORT_DOWN)


def _name(desc) -> str:
    return desc.name.decode() if isinstance(desc.name, bytes) else str(desc.name)
