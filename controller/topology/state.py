"""What the controller knows of the network: links, ports, hosts.

One owner, one lock, for the state the OpenFlow events feed (links from LLDP,
port states, host sightings from packet-in copies) and that the data plane
(controller/openflow/fabric.py), the service (locate) and the view (topology) read.
Learning rules:

- hosts are learned only on access ports: settled, no link on them, never
  found to be an uplink since they last went down (controller/topology/settling.py);
- a port under a learning ban, or holding its maximum of hosts, learns no
  new MAC (controller/topology/portguard.py); the alarm names it;
- an inventory-pinned address stays where the inventory says;
- addresses are learned from ARP and from IPv6 neighbour discovery (a
  solicitation's source, an advertisement's target) and DHCP bindings, never
  from an IP source address alone (which a spoofer writes as it likes);
- a claim on a MAC or an address someone else holds is judged first
  (controller/topology/claims.py): refused, it changes nothing and is reported.
"""
from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import threading

from os_ken.lib.packet import arp, ether_types, ethernet, icmpv6, ipv6, packet

from controller.openflow.dataplane import Budgets, Ports, is_held
from controller.openflow.fabric import Snapshot
from controller.topology import claims
from controller.topology import graph as topology
from controller.topology.hosts import HostTable
from controller.topology.portguard import PortGuard
from controller.topology.settling import Settling
from enforcement.domain.model import (
    HostView,
    IdentityEvent,
    LinkView,
    Location,
    SwitchView,
    TopologyView,
)
from enforcement.domain.routing import switch_graph

LOG = logging.getLogger(__name__)

# Arrivals kept for discovery to read (arrivals_since): it reads every
# second, so only a burst of this many new hosts within a second loses some,
# and those ports are probed at once anyway when a probe is heard on them.
ARRIVALS_KEPT = 4096


@dataclasses.dataclass
class Learned:
    """What one packet-in taught: hosts whose flows must change, subscribers
    (by MAC) whose enforcements must follow them, alarms to raise, claims
    refused, and whether the frame, held by the switch until its claim was
    judged, may now go on its way (release)."""
    macs: set[str] = dataclasses.field(default_factory=set)
    follow: tuple[str, ...] = ()  # MACs
    alarms: list[tuple[int, int, str, float, float]] = dataclasses.field(default_factory=list)
    refused: list[IdentityEvent] = dataclasses.field(default_factory=list)
    release: bool = False


class TopologyState:
    def __init__(self, pinned, budgets: Budgets, roots: frozenset[int] = frozenset(),
                 isolated: bool = False):
        """roots: the gateway switches, which the forwarding tree hangs from
        where they are connected (controller/topology/graph.py); isolated:
        subscriber isolation below them (controller/openflow/dataplane.py)."""
        self._lock = threading.Lock()
        self._budgets = budgets
        self._roots = roots
        self._isolated = isolated
        self.hosts = HostTable(pinned)
        self.settling = Settling()
        self.guard = PortGuard(budgets)
        self._links: set[LinkView] = set()
        self._ports: dict[int, dict[int, tuple[str, bool]]] = {}  # dpid -> port -> (name, live)
        self._cache: _Graphs | None = None
        # Bumped whenever the host table changes: the located hosts are
        # rebuilt for the data plane only then.
        self._hosts_version = 0
        self._located: tuple[int, dict[str, HostView], collections.Counter,
                             dict[int, list[HostView]]] | None = None
        self._full_alarmed: set[tuple[int, int]] = set()
        # Bumped whenever ports, links or settling change (the hosts have
        # their own version): the data plane recomputes only then
        # (generation); links_version keys the graphs alone.
        self._changes = 0
        self._links_version = 0
        # (number, (dpid, port)) of each host seen at a port it was not at
        # before, newest last: discovery probes such a port again
        # (controller/topology/lldp/schedule.py arrived).
        self._arrivals: collections.deque[tuple[int, tuple[int, int]]] = \
            collections.deque(maxlen=ARRIVALS_KEPT)
        self._arrived = 0

    # ---- switches and ports ------------------------------------------------

    def switch_up(self, dpid: int, ports: dict[int, tuple[str, bool]]) -> None:
        with self._lock:
            self._changes += 1
            self._links_version += 1
            self._ports[dpid] = dict(ports)
            self.settling.came_up(dpid, ports)
            for no, (_, live) in ports.items():
                if not live:
                    self.settling.went_down(dpid, no)

    def switch_down(self, dpid: int) -> None:
        with self._lock:
            self._changes += 1
            self._links_version += 1
            self._ports.pop(dpid, None)
            self.settling.forget_switch(dpid)
            self._links = {link for link in self._links
                       if dpid not in (link.src_dpid, link.dst_dpid)}

    def port_changed(self, dpid: int, port: int, name: str, live: bool, added: bool,
                     deleted: bool) -> None:
        with self._lock:
            self._changes += 1
            if dpid not in self._ports:
                self._links_version += 1
            ports = self._ports.setdefault(dpid, {})
            if deleted:
                ports.pop(port, None)
                self.settling.removed(dpid, port)
                self.guard.forget_port(dpid, port)
                return
            ports[port] = (name, live)
            if not live:
                self.settling.went_down(dpid, port)
            elif added:
                self.settling.came_up(dpid, [port])
            else:
                self.settling.went_up(dpid, port)

    # ---- links -------------------------------------------------------------

    def link_added(self, link: LinkView) -> tuple[bool, list[str]]:
        """A link heard both ways (controller/topology/lldp/linkpairs.py): both its
        directions. Returns whether it is new, and the hosts forgotten
        because their port turned out to be an uplink."""
        with self._lock:
            self._changes += 1
            self._links_version += 1
            new = link not in self._links
            self._links |= {link, _reverse(link)}
            gone = []
            self._hosts_version += 1
            for dpid, port in ((link.src_dpid, link.src_port), (link.dst_dpid, link.dst_port)):
                gone += self.hosts.forget_port(dpid, port)
                self.settling.link_found(dpid, port)
                self.guard.forget_port(dpid, port)
        return new, gone

    def link_deleted(self, link: LinkView) -> bool:
        """One direction gone: the link no longer counts, either way."""
        with self._lock:
            self._changes += 1
            self._links_version += 1
            known = link in self._links
            self._links -= {link, _reverse(link)}
        return known

    def repin(self, pinned) -> None:
        """A reloaded inventory: where its subscribers are from now on."""
        with self._lock:
            self.hosts.repin(pinned)
            self._hosts_version += 1

    # ---- reading -----------------------------------------------------------

    def locate(self, ip: str) -> Location | None:
        with self._lock:
            host = self.hosts.by_ip(ip)
        # A pinned line whose MAC is neither in the inventory nor seen yet
        # cannot take MAC-matched rules (cutoff, anti-spoofing): not located.
        return None if host is None or not host.mac else Location(host.dpid, host.port,
                                                                  host.mac)

    def host(self, ip: str) -> HostView | None:
        """The host an address of either family belongs to, with all its
        addresses."""
        with self._lock:
            return self.hosts.by_ip(ip)

    def subscriber(self, mac: str) -> HostView | None:
        """The host with this MAC, with the addresses it holds now."""
        with self._lock:
            return self.hosts.subscriber(mac)

    def _live(self, dpid: int, port: int) -> bool:
        """Whether a port still holds what was learned on it: known and up,
        or on a switch not connected now (its hosts are still there).
        Caller holds the lock."""
        known = self._ports.get(dpid)
        if known is None:
            return True
        state = known.get(port)
        return state is not None and state[1]

    def view(self) -> TopologyView:
        with self._lock:
            switches = tuple(SwitchView(dpid, tuple(sorted(
                (no, name) for no, (name, _) in ports.items())))
                for dpid, ports in sorted(self._ports.items()))
            links = tuple(sorted(self._links, key=dataclasses.astuple))
            return TopologyView(switches, links, self.hosts.all())

    def _graphs(self) -> _Graphs:
        """The links as a view, its rooted tree and every switch's way up
        and switches below, rebuilt only when links or switches changed (the data
        plane asks ten times a second, learning at every packet-in). Caller
        holds the lock."""
        key = self._links_version
        if self._cache is None or self._cache.key != key:
            view = TopologyView(tuple(SwitchView(d, ()) for d in sorted(self._ports)),
                                tuple(sorted(self._links, key=dataclasses.astuple)), ())
            tree = topology.rooted_tree(switch_graph(view), self._roots)
            self._cache = _Graphs(
                key, view,
                links={d: topology.link_ports(view, d) for d in self._ports},
                tree={d: topology.tree_ports(tree.graph, d) for d in self._ports},
                up={d: tree.up.get(d) for d in self._ports},
                down={d: tree.down.get(d, {}) for d in self._ports})
        return self._cache

    def _is_access(self, dpid: int, port: int, graphs: _Graphs) -> bool:
        return (port in self._ports.get(dpid, {}) and self._ports[dpid][port][1]
                and port not in graphs.links.get(dpid, ())
                and not self.settling.is_settling(dpid, port)
                and not self.settling.was_uplink(dpid, port))

    def generation(self) -> tuple[int, int]:
        """Changes whenever the snapshot may: a port, a link, a host, or a
        settle period or learning ban that ran out. The data plane takes a
        snapshot only then, so an idle network of a thousand switches costs
        it nothing."""
        with self._lock:
            if self.settling.due() or self.guard.due():
                self._changes += 1
                self.settling.rearm()
                self.guard.rearm()
            return self._changes, self._hosts_version

    def snapshot(self) -> Snapshot:
        """What the data plane is computed from (controller/openflow/fabric.py)."""
        with self._lock:
            graphs = self._graphs()
            if self._located is None or self._located[0] != self._hosts_version:
                located = {h.mac: h for h in self.hosts.located()}
                per_port = collections.Counter((h.dpid, h.port) for h in located.values())
                at: dict[int, list[HostView]] = {}
                for host in located.values():
                    at.setdefault(host.dpid, []).append(host)
                self._located = (self._hosts_version, located, per_port, at)
            _, located, per_port, at = self._located
            ports, closed = {}, {}
            for dpid, known in self._ports.items():
                live = {no for no, (_, up) in known.items() if up}
                access = frozenset(no for no in live if self._is_access(dpid, no, graphs))
                gateway = self._isolated and dpid in self._roots
                provider = frozenset(h.mac for h in at.get(dpid, ()) if h.port in access
                                     ) if gateway else frozenset()
                ports[dpid] = Ports(access=access, tree=frozenset(graphs.tree[dpid] & live),
                                    up=graphs.up[dpid], isolated=self._isolated,
                                    gateway=gateway, provider=provider)
                full = {no for no in access
                        if per_port[(dpid, no)] >= self._budgets.max_hosts}
                closed[dpid] = frozenset(self.guard.banned_ports(dpid) | full)
            down = {d: graphs.down[d] for d in self._ports}
        return Snapshot(ports, located, down, closed, at)

    # ---- learning ----------------------------------------------------------

    def links_held(self, dpid: int, ports: set[int], seconds: float) -> None:
        """Ports a reconnecting switch's flows show as tree links: not taken
        for access ports for this long, unless LLDP finds their link first
        (controller/topology/settling.py)."""
        with self._lock:
            self._changes += 1
            self.settling.came_up(dpid, ports, period=seconds)

    def adopt(self, hosts: list[HostView]) -> set[str]:
        """Hosts read back from a switch's flows (a restarted controller):
        learned unless known elsewhere already."""
        learned = set()
        with self._lock:
            for host in hosts:
                if self.hosts.by_mac(host.mac) is None and self.hosts.learn(
                        host.dpid, host.port, host.mac, host.ip):
                    learned.add(host.mac)
                    for address in host.ipv6:
                        self.hosts.learn(host.dpid, host.port, host.mac, None, address)
            self._hosts_version += 1
        if learned:
            LOG.info("%d host(s) read back from the switches' flows", len(learned))
        return learned

    def learn(self, dpid: int, in_port: int, data: bytes,
              is_enforced=lambda mac: False) -> Learned:
        """is_enforced(mac): whether that subscriber has live enforcements
        (only those are handed back to follow)."""
        out = Learned()
        pkt = packet.Packet(data)
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP or _is_group(eth.src):
            return out
        # Addresses come from ARP and neighbour discovery only
        # (controller/openflow/dataplane.py says why).
        sender_ip = None
        if (arp_pkt := pkt.get_protocol(arp.arp)) is not None:
            sender_ip = arp_pkt.src_ip
        if sender_ip is not None and not _is_unicast(sender_ip):
            sender_ip = None  # an ARP probe's 0.0.0.0 teaches nothing
        sender_ipv6, tentative = _nd_address(pkt)
        held = is_held(arp_pkt is not None, sender_ip, *_nd_kind(pkt))
        with self._lock:
            if not self._is_access(dpid, in_port, self._graphs()):
                return out
            before = self.hosts.by_mac(eth.src)
            refusal = claims.judge_mac(eth.src, dpid, in_port, before, self._live)
            if refusal is not None:
                out.refused.append(self._refused(refusal, dpid, in_port, eth.src))
                LOG.warning("a frame at %016x port %d claimed MAC %s, held by %s: refused",
                            dpid, in_port, eth.src, refusal.owner)
                return out
            if tentative and not self._may_claim(before, eth.src, sender_ipv6):
                sender_ipv6 = None
            claimed = sender_ip or sender_ipv6
            was = self.hosts.by_ip(claimed) if claimed else None
            if claimed and (refusal := claims.judge_address(
                    claimed, eth.src, dpid, in_port, was, self.hosts.bound_to(claimed),
                    self._live)) is not None:
                out.refused.append(self._refused(refusal, dpid, in_port, eth.src))
                LOG.warning("%s at %016x port %d claimed %s, held by %s: refused",
                            eth.src, dpid, in_port, claimed, refusal.owner)
                # The MAC itself is still learned (its own traffic goes on);
                # the claim and the frame that made it go no further.
                sender_ip = sender_ipv6 = claimed = None
                held = False
            new_here = before is None or (before.dpid, before.port) != (dpid, in_port)
            if new_here and self.guard.banned(dpid, in_port):
                return out
            if new_here and self.hosts.count_at(dpid, in_port) >= self._budgets.max_hosts:
                if (dpid, in_port) not in self._full_alarmed:
                    self._full_alarmed.add((dpid, in_port))
                    out.alarms.append((dpid, in_port, "max_hosts",
                                       float(self.hosts.count_at(dpid, in_port)),
                                       float(self._budgets.max_hosts)))
                return out
            if not self.hosts.learn(dpid, in_port, eth.src, sender_ip, sender_ipv6):
                # Known already, claim and all: a retry the switch held
                # before the first one's flows were in.
                out.release = held
                return out
            self._hosts_version += 1
            LOG.info("host %s (%s) at %016x port %d", eth.src, claimed or "no IP yet",
                     dpid, in_port)
            out.release = held
            out.macs.add(eth.src)
            follow = [eth.src]
            if was is not None and was.mac and was.mac != eth.src:
                out.macs.add(was.mac)  # the address moved to this MAC
                follow.append(was.mac)
            if new_here:
                self._arrived += 1
                self._arrivals.append((self._arrived, (dpid, in_port)))
                if before is not None:
                    self._full_alarmed.discard((before.dpid, before.port))
                    LOG.info("host %s moved to %016x port %d", eth.src, dpid, in_port)
                rate = self.guard.new_mac(dpid, in_port)
                if rate is not None:
                    LOG.warning("%016x port %d: %.1f new MACs/s; learning banned there "
                                "for %.0f s", dpid, in_port, rate, self._budgets.ban_seconds)
                    out.alarms.append((dpid, in_port, "learning_ban", rate,
                                       self._budgets.churn_macs
                                       / self._budgets.churn_seconds))
            # A subscriber at another port, holding other addresses, or
            # known afresh (it may have been planned where it was wrongly
            # seen): its enforcements are re-placed; the service changes
            # only what differs.
            out.follow = tuple(mac for mac in follow if is_enforced(mac))
        return out

    def _refused(self, refusal: claims.Refusal, dpid: int, port: int,
                 mac: str) -> IdentityEvent:
        """Caller holds the lock."""
        ips = sorted(h.ip for h in self.hosts.located()
                     if (h.dpid, h.port) == (dpid, port) and h.ip)
        return IdentityEvent(refusal.kind, dpid, port, mac, refusal.claimed, refusal.owner,
                             ips[0] if ips else None)

    def bind(self, mac: str, ip: str) -> Learned:
        """A DHCP server gave ip to mac (controller/topology/dhcp/replies.py): the
        address is that subscriber's from now on, taken from whoever held
        it, and claims on it by anyone else are refused."""
        out = Learned()
        with self._lock:
            if self.hosts.pinned_elsewhere(ip, -1, -1) is not None:
                LOG.warning("DHCP gave %s to %s, but the inventory pins it; ignored", ip, mac)
                return out
            taken = self.hosts.bind(mac, ip)
            me = self.hosts.by_mac(mac)
            if taken is not None:
                out.macs.add(taken)
                LOG.info("DHCP gave %s to %s: taken from %s", ip, mac, taken)
            v4, v6 = (None, ip) if ":" in ip else (ip, None)
            if me is not None and self.hosts.learn(me.dpid, me.port, mac, v4, v6):
                out.macs.add(mac)
            if out.macs:
                self._hosts_version += 1
            out.follow = tuple(sorted(out.macs))
        return out

    def unbind(self, mac: str, ip: str) -> None:
        """The lease ended: the address is no longer reserved for mac (who
        holds it keeps it; its enforcements never depended on it)."""
        with self._lock:
            self.hosts.unbind(mac, ip)

    def _may_claim(self, host: HostView | None, mac: str, address: str | None) -> bool:
        """Whether a host checking an address for duplicates (a solicitation
        from ::) takes it, first come first served (RFC 6620): only an
        address nobody holds, and only its link-local or one in a /64 it
        already uses, so that checking an address is no way to pick any
        source (its anti-spoofing takes in what it learns). Caller holds
        the lock."""
        if host is None or address is None:
            return False
        owner = self.hosts.by_ip(address)
        if owner is not None and owner.mac != mac:
            return False
        claimed = ipaddress.IPv6Address(address)
        if claimed.is_link_local:
            return True
        return any(ipaddress.IPv6Network(f"{a}/64", strict=False).network_address
                   == ipaddress.IPv6Network(f"{claimed}/64", strict=False).network_address
                   for a in host.ipv6 if "/" not in a
                   and not ipaddress.IPv6Address(a).is_link_local)

    def arrivals_since(self, cursor: int) -> tuple[int, list[tuple[int, int]]]:
        """The ports where a host was seen for the first time (there) after
        cursor, oldest first, and the cursor to ask with next: a subscriber
        line where something new appears may have a switch behind it now."""
        fresh = []
        with self._lock:
            for number, port in reversed(self._arrivals):
                if number <= cursor:
                    break
                fresh.append(port)
            return self._arrived, fresh[::-1]

    def subscriber_at(self, dpid: int, port: int) -> str | None:
        with self._lock:
            ips = sorted(h.ip for h in self.hosts.located()
                         if (h.dpid, h.port) == (dpid, port) and h.ip)
        return ips[0] if ips else None


@dataclasses.dataclass(frozen=True)
class _Graphs:
    key: int
    view: TopologyView
    links: dict[int, set[int]]   # switch -> its link ports
    tree: dict[int, set[int]]    # switch -> its ports on the spanning tree
    up: dict[int, int | None]    # switch -> its port toward the root (None: a root)
    down: dict[int, dict[int, int]]  # switch -> switch below it -> port toward it


def _reverse(link: LinkView) -> LinkView:
    return LinkView(link.dst_dpid, link.dst_port, link.src_dpid, link.src_port)


def _is_group(mac: str) -> bool:
    return int(mac[:2], 16) & 1 == 1


def _nd_kind(pkt: packet.Packet) -> tuple[int | None, str | None]:
    """A neighbour discovery message's type and its IPv6 source, if it is
    one."""
    message = pkt.get_protocol(icmpv6.icmpv6)
    header = pkt.get_protocol(ipv6.ipv6)
    if message is None or header is None:
        return None, None
    return message.type_, header.src


def _nd_address(pkt: packet.Packet) -> tuple[str | None, bool]:
    """The IPv6 address a neighbour discovery message shows its sender
    owns: a solicitation's source, an advertisement's target; and whether
    it is only tentative (duplicate address detection: a solicitation from
    :: for its target)."""
    message = pkt.get_protocol(icmpv6.icmpv6)
    header = pkt.get_protocol(ipv6.ipv6)
    if message is None or header is None or message.data is None:
        return None, False
    tentative = False
    if message.type_ == icmpv6.ND_NEIGHBOR_SOLICIT:
        address, tentative = header.src, header.src == "::"
        if tentative:
            address = message.data.dst
    elif message.type_ == icmpv6.ND_NEIGHBOR_ADVERT:
        address = message.data.dst
    else:
        return None, False
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return None, False
    if parsed.is_unspecified or parsed.is_multicast or parsed.is_loopback:
        return None, False
    return str(parsed), tentative


def _is_unicast(ip: str) -> bool:
    try:
        address = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast
                or address == ipaddress.IPv4Address("255.255.255.255"))
