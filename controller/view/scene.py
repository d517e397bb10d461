"""What the topology view draws, as JSON-ready dicts: switches with their
host counts and a stable position, links (up or down), hosts with their
addresses and live enforcements, and each quarantine's path to the walled
garden. Pure apart from reading the service and the network; the HTTP side
is controller.view.server, the push side controller.view.feed.
"""
from __future__ import annotations

import math
import threading
import time

import networkx as nx

from enforcement.domain import routing
from enforcement.domain.hostaddresses import AddressIndex
from enforcement.domain.model import ActionKind, State, TopologyView


def dpid_text(dpid: int) -> str:
    """A datapath id as enforcementctl prints it (16 hex digits)."""
    return f"{dpid:016x}"


class SwitchLayout:
    """Switch positions in [0, 1]², each fixed once given: the first set of
    two or more switches gets a seeded spring layout, later switches are
    placed next to their neighbours already on the map, at a distance from
    every other (switches connect one by one: a layout that let them pile
    up would hide one behind another), and a switch that leaves and comes
    back returns to where it was. An engineer's mental map survives updates."""

    def __init__(self, seed: int = 7):
        self._seed = seed
        self._at: dict[str, tuple[float, float]] = {}

    def positions(self, switches: list[str], edges: list[tuple[str, str]]) -> dict:
        new = sorted(s for s in switches if s not in self._at)
        if new:
            graph = nx.Graph()
            graph.add_nodes_from(sorted(switches))
            graph.add_edges_from(sorted(e for e in edges if e[0] in graph and e[1] in graph))
            if not self._at and len(new) > 1:
                self._spring(graph)
            else:
                self._place(new, graph)
        return {s: {"x": self._at[s][0], "y": self._at[s][1]} for s in switches}

    def _spring(self, graph: nx.Graph) -> None:
        raw = nx.spring_layout(graph, seed=self._seed)
        xs, ys = [p[0] for p in raw.values()], [p[1] for p in raw.values()]
        span_x, span_y = (max(xs) - min(xs)) or 1, (max(ys) - min(ys)) or 1
        for s, p in raw.items():
            self._at[s] = (round(0.05 + 0.9 * (p[0] - min(xs)) / span_x, 4),
                           round(0.05 + 0.9 * (p[1] - min(ys)) / span_y, 4))

    def _place(self, new: list[str], graph: nx.Graph) -> None:
        # The ones linked to the map first, so that a chain grows outward.
        gap = min(0.25, 0.7 / math.sqrt(len(graph)))
        waiting = list(new)
        while waiting:
            linked = [s for s in waiting if any(n in self._at for n in graph.neighbors(s))]
            switch = (linked or waiting)[0]
            waiting.remove(switch)
            anchors = [self._at[n] for n in graph.neighbors(switch) if n in self._at]
            if anchors:
                centre = (sum(a[0] for a in anchors) / len(anchors),
                          sum(a[1] for a in anchors) / len(anchors))
            else:
                centre = (0.5, 0.5)
            self._at[switch] = self._free_spot(centre, gap)

    def _free_spot(self, centre: tuple[float, float], gap: float) -> tuple[float, float]:
        """The first point on a golden-angle spiral around centre that is
        on the map and gap away from every switch (closest otherwise)."""
        best, best_room = centre, -1.0
        for k in range(1, 4000):
            # Candidates about gap/2 apart: fine enough to find room.
            radius, angle = gap * math.sqrt(k) * 0.25, k * GOLDEN_ANGLE
            x = centre[0] + radius * math.cos(angle)
            y = centre[1] + radius * math.sin(angle)
            if not (0.02 <= x <= 0.98 and 0.02 <= y <= 0.98):
                continue
            room = min((math.dist((x, y), p) for p in self._at.values()), default=1.0)
            if room >= gap:
                return round(x, 4), round(y, 4)
            if room > best_room:
                best, best_room = (round(x, 4), round(y, 4)), room
        return best


GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))


class HostSlots:
    """Each host's slot around its switch (the page draws slot n on a
    sunflower spiral): kept while the host stays, the lowest free one for a
    newcomer, so hosts arriving or leaving never move the others."""

    def __init__(self):
        self._slots: dict[str, dict[str, int]] = {}

    def assign(self, hosts_by_switch: dict[str, list[str]]) -> dict[tuple[str, str], int]:
        for switch in set(self._slots) - set(hosts_by_switch):
            del self._slots[switch]
        found = {}
        for switch, macs in hosts_by_switch.items():
            slots = self._slots.setdefault(switch, {})
            for gone in set(slots) - set(macs):
                del slots[gone]
            taken = set(slots.values())
            free = (n for n in range(len(macs) + len(taken) + 1) if n not in taken)
            for mac in sorted(macs):
                if mac not in slots:
                    slots[mac] = next(free)
                found[switch, mac] = slots[mac]
        return found


class ViewModel:
    """Turns what the controller knows into the JSON the page draws. Keeps
    the links it has seen, so that a link that goes away shows as down
    instead of vanishing."""

    def __init__(self, service, network):
        # The feed watches both for change.
        self.service, self.network = service, network
        self._service = service
        self._network = network
        self._seen_links: dict[tuple, dict] = {}
        self._layout = SwitchLayout()
        self._slots = HostSlots()
        self._lock = threading.Lock()

    def topology(self) -> dict:
        view, _ = self._service.topology()
        live = {r.id: r for r in self._service.list(states=[State.ACTIVE, State.PENDING])}
        by_address: dict[str, list[str]] = {}
        for record in live.values():
            for address in dict.fromkeys((str(record.decision.subscriber.ip),
                                          *record.addresses)):
                by_address.setdefault(address, []).append(record.id)
        owned = AddressIndex(by_address)
        # A host's enforcements oldest first, whichever of its addresses named them.
        rank = {enforcement_id: n for n, enforcement_id in enumerate(live)}
        per_switch: dict[str, list[str]] = {dpid_text(s.dpid): [] for s in view.switches}
        for h in view.hosts:
            per_switch.setdefault(dpid_text(h.dpid), []).append(h.mac)
        with self._lock:
            current = {}
            for link in view.links:
                key = tuple(sorted([(link.src_dpid, link.src_port),
                                    (link.dst_dpid, link.dst_port)]))
                current[key] = {"a": dpid_text(key[0][0]), "a_port": key[0][1],
                                "b": dpid_text(key[1][0]), "b_port": key[1][1]}
            self._seen_links.update(current)
            links = [dict(data, up=key in current) for key, data in sorted(
                self._seen_links.items())]
            positions = self._layout.positions(
                [dpid_text(s.dpid) for s in view.switches],
                [(link["a"], link["b"]) for link in links])
            slots = self._slots.assign(per_switch)
        hosts = []
        for h in view.hosts:
            records = [live[i] for i in sorted(owned.of(h.ip, h.ipv6), key=rank.__getitem__)]
            hosts.append({
                "mac": h.mac, "ip": h.ip or "", "ipv6": list(h.ipv6),
                "switch": dpid_text(h.dpid), "port": h.port,
                "account": h.account, "pinned": h.pinned,
                "slot": slots[dpid_text(h.dpid), h.mac],
                "enforcements": [summary(r) for r in records]})
        counts: dict[str, list[int]] = {}
        for host in hosts:
            count = counts.setdefault(host["switch"], [0, 0])
            count[0] += 1
            count[1] += bool(host["enforcements"])
        switches = [{"id": dpid_text(s.dpid), "name": dpid_text(s.dpid),
                     "ports": [{"number": n, "name": name} for n, name in s.ports],
                     "hosts": counts.get(dpid_text(s.dpid), [0, 0])[0],
                     "enforced": counts.get(dpid_text(s.dpid), [0, 0])[1],
                     **positions[dpid_text(s.dpid)]}
                    for s in view.switches]
        return {"switches": switches, "links": links, "hosts": hosts,
                "paths": self._quarantine_paths(view, live.values()),
                "generated_at": time.time()}

    def _quarantine_paths(self, view: TopologyView, records) -> list[dict]:
        """Each quarantine's switch path to each walled-garden server it may
        reach: the same servers and the same routing.route the decider
        steers along (Decider._walled_garden_routes), from the switch the
        enforcement sits at."""
        policy = getattr(self._service, "policy", None)
        quarantines = [r for r in records if r.action.kind is ActionKind.QUARANTINE]
        if policy is None or not quarantines:
            return []
        macs = {h.ip: h.mac for h in view.hosts if h.ip}
        routes: dict[tuple[int, str], tuple | None] = {}
        paths = []
        for record in quarantines:
            decision = record.decision
            try:
                spec = (decision.requested_action or policy.rung(decision.violation)
                        .ladder[record.escalation.step - 1])
                servers = [*policy.assets.dns, *policy.assets.listed(spec.portal)]
            except (KeyError, IndexError, AttributeError):
                continue  # a policy changed since: no path to show rather than a wrong one
            for server in dict.fromkeys(str(s.network_address) for s in servers):
                key = (record.location.dpid, server)
                if key not in routes:
                    try:
                        routes[key] = routing.route(view, *key)
                    except routing.NoRoute:
                        routes[key] = None
                hops = routes[key]
                paths.append({
                    "enforcement": record.id, "garden": server,
                    "garden_host": macs.get(server, ""),
                    "host": record.location.mac or macs.get(str(decision.subscriber.ip), ""),
                    "switches": [dpid_text(h.dpid) for h in hops] if hops else [],
                    "reachable": hops is not None})
        return paths

    def enforcement(self, enforcement_id: str) -> dict | None:
        try:
            record = self._service.get(enforcement_id)
        except Exception:
            return None
        counters: dict[str, dict] = {}
        for dpid in sorted({r.dpid for r in record.rules}):
            try:
                counts = self._network.flow_counters(dpid, record.cookie)
            except Exception as exc:  # switch away: say so, keep the rest
                counters[dpid_text(dpid)] = {"error": str(exc)}
                continue
            counters[dpid_text(dpid)] = counts
        packets = sum(c.get("packets", 0) for c in counters.values())
        octets = sum(c.get("bytes", 0) for c in counters.values())
        proofs = getattr(self._service, "proofs", None)
        proof = proofs.latest(record.id) if proofs is not None else None
        return {**summary(record), "rules": [r.text() for r in record.rules],
                "proof": None if proof is None else {
                    "state": proof.state, "at": proof.at, "reason": proof.reason,
                    "shadows": list(proof.shadows), "probes": proof.probes},
                "meters": [m.text() for m in record.meters],
                "reason": record.decision.reason, "state_reason": record.state_reason,
                "escalation": record.escalation.reason, "clause": record.escalation.clause,
                "location": {"switch": dpid_text(record.location.dpid),
                             "port": record.location.port},
                "counters": {"per_switch": counters, "packets": packets, "bytes": octets}}


def summary(record) -> dict:
    return {"id": record.id, "case": record.decision.case_id,
            "subscriber": str(record.decision.subscriber.ip),
            "addresses": list(record.addresses),
            "violation": record.decision.violation.value,
            "action": record.action.kind.value, "description": record.action.description,
            "state": record.state.value}

