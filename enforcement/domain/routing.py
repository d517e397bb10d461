"""Paths through the switch graph, for steering quarantined traffic.

Pure: built from a TopologyView (what the controller discovered), with
networkx doing the graph work.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import itertools

import networkx as nx

from enforcement.domain.model import TopologyView


@dataclasses.dataclass(frozen=True)
class Hop:
    dpid: int
    in_port: int | None  # None on the first hop: the subscriber's own port
    out_port: int


class NoRoute(LookupError):
    pass


def switch_graph(view: TopologyView) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(s.dpid for s in view.switches)
    reported = {(link.src_dpid, link.src_port, link.dst_dpid, link.dst_port)
                for link in view.links}
    for link in view.links:
        # LLDP reports each direction; a link carries traffic only when both
        # do (a one-way link is half-discovered, or failing silently).
        if (link.dst_dpid, link.dst_port, link.src_dpid, link.src_port) not in reported:
            continue
        graph.add_edge(link.src_dpid, link.dst_dpid,
                       ports={link.src_dpid: link.src_port, link.dst_dpid: link.dst_port})
    return graph


def _ipv6_text(text: str) -> str | None:
    """An IPv6 address as ipaddress writes it; None for anything else (an
    IPv4 address, a prefix: a prefix is no host's address)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address) if address.version == 6 else None


def route(view: TopologyView, from_dpid: int, to_ip: str) -> tuple[Hop, ...]:
    """The hops from a switch to the port a host (by its IPv4 or one of its
    IPv6 addresses) is attached to."""
    # IPv6 has several spellings of one address (2001:DB8::1, 2001:db8:0::1).
    wanted = _ipv6_text(to_ip)
    host = next((h for h in view.hosts if h.ip == to_ip
                 or (wanted is not None and any(_ipv6_text(a) == wanted for a in h.ipv6))),
                None)
    if host is None:
        raise NoRoute(f"{to_ip} has not been seen on any switch")
    graph = switch_graph(view)
    try:
        # Ties broken by dpid so that the same topology always gives the same path.
        path = min(nx.all_shortest_paths(graph, from_dpid, host.dpid), key=tuple)
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise NoRoute(f"no path from switch {from_dpid:016x} to {to_ip} "
                      f"at switch {host.dpid:016x}") from None
    hops = []
    in_port = None
    for here, there in itertools.pairwise(path):
        ports = graph.edges[here, there]["ports"]
        hops.append(Hop(here, in_port, ports[here]))
        in_port = ports[there]
    hops.append(Hop(host.dpid, in_port, host.port))
    return tuple(hops)
