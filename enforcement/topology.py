"""The topology model: what forwarding and placement decide from.

Pure functions of a TopologyView (what the controller discovered), with
networkx doing the graph work, so that path choice, the broadcast tree and
re-placement are tested without a switch.

Redundant links (rings, meshes) make flooding dangerous: a broadcast sent out
of every port circles forever. So broadcast and unknown-destination traffic
only ever leaves through a spanning tree of the switch graph plus the access
ports, while unicast follows shortest paths over the whole graph.
"""
from __future__ import annotations

import dataclasses

import networkx as nx

from enforcement.model import HostView, Location, TopologyView
from enforcement.routing import switch_graph


def spanning_tree(graph: nx.Graph) -> nx.Graph:
    """A breadth-first tree from the lowest dpid of each connected part.

    Breadth-first keeps broadcast paths as short as the graph allows, and
    sorted neighbours make the same graph always give the same tree, so a
    flood never takes a different route on two switches at once.
    """
    tree = nx.Graph()
    tree.add_nodes_from(graph.nodes)
    for part in nx.connected_components(graph):
        root = min(part)
        for here, there in nx.bfs_edges(graph, root, sort_neighbors=sorted):
            tree.add_edge(here, there, **graph.edges[here, there])
    return tree


@dataclasses.dataclass(frozen=True)
class Forwarding:
    """Forwarding decisions for one snapshot of the network."""
    graph: nx.Graph
    tree: nx.Graph
    ports: dict[int, frozenset[int]]        # every port of every switch
    link_ports: dict[int, frozenset[int]]   # ports that lead to another switch
    tree_ports: dict[int, frozenset[int]]   # link ports the broadcast tree uses
    hosts_by_mac: dict[str, HostView]

    @classmethod
    def of(cls, view: TopologyView) -> "Forwarding":
        graph = switch_graph(view)
        tree = spanning_tree(graph)
        link_ports: dict[int, set[int]] = {s.dpid: set() for s in view.switches}
        for link in view.links:
            link_ports.setdefault(link.src_dpid, set()).add(link.src_port)
            link_ports.setdefault(link.dst_dpid, set()).add(link.dst_port)
        tree_ports: dict[int, set[int]] = {dpid: set() for dpid in link_ports}
        for here, there, data in tree.edges(data=True):
            tree_ports[here].add(data["ports"][here])
            tree_ports[there].add(data["ports"][there])
        return cls(graph, tree,
                   {s.dpid: frozenset(no for no, _ in s.ports) for s in view.switches},
                   {d: frozenset(p) for d, p in link_ports.items()},
                   {d: frozenset(p) for d, p in tree_ports.items()},
                   {h.mac: h for h in view.hosts})

    def flood_ports(self, dpid: int, in_port: int) -> tuple[int, ...]:
        """Where a broadcast or unknown-destination frame goes next: every
        access port and every tree port but the one it came in by. A frame
        that came in on a link the tree does not use is a copy already
        delivered along the tree (or a leftover of a changed tree): dropped."""
        links = self.link_ports.get(dpid, frozenset())
        tree = self.tree_ports.get(dpid, frozenset())
        if in_port in links and in_port not in tree:
            return ()
        access = self.ports.get(dpid, frozenset()) - links
        return tuple(sorted((access | tree) - {in_port}))

    def path(self, from_dpid: int, to_dpid: int) -> list[int]:
        """The shortest switch path; ties broken by the lowest dpids so that
        every switch on it computes the same one."""
        return min(nx.all_shortest_paths(self.graph, from_dpid, to_dpid), key=tuple)

    def unicast_port(self, dpid: int, dst_mac: str) -> int | None:
        """The port toward a known host, or None (unknown host, no path):
        the caller floods along the tree then."""
        host = self.hosts_by_mac.get(dst_mac)
        if host is None:
            return None
        if host.dpid == dpid:
            return host.port
        try:
            path = self.path(dpid, host.dpid)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None
        return self.graph.edges[path[0], path[1]]["ports"][dpid]


def moved(placed: Location, now: HostView | None) -> Location | None:
    """Where an enforcement placed at `placed` must go now that its
    subscriber is seen at `now`: the new access switch and port, or None
    when it stays (not seen anywhere: keep it where it was rather than lift
    it silently)."""
    if now is None or (now.dpid, now.port) == (placed.dpid, placed.port):
        return None
    return Location(now.dpid, now.port, now.mac)
