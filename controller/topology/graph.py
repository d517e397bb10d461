"""Forwarding decisions on the discovered topology, for any shape of switch
graph, redundant links included. Pure: TopologyView in, ports out; networkx
does the graph work.

- Broadcast and unknown destinations go out on a spanning tree only: every
  host (non-link) port, plus the link ports whose link is on the tree. A ring
  or a mesh then carries each broadcast frame once per switch, never round
  and round.
- Unicast to a located host follows a shortest path, chosen per destination:
  each switch sends toward a neighbour strictly closer to the destination
  switch, so paths cannot loop, whatever each switch computed when.

The tree and the paths are deterministic (ties broken by datapath id), so
every switch and every recomputation agree.
"""
from __future__ import annotations

import networkx as nx

from enforcement.domain.model import HostView, TopologyView
from enforcement.domain.routing import switch_graph


def spanning_tree(graph: nx.Graph) -> nx.Graph:
    """A spanning forest of the switch graph, the same one every time."""
    weighted = nx.Graph()
    weighted.add_nodes_from(graph.nodes)
    for a, b, data in graph.edges(data=True):
        low, high = sorted((a, b))
        # Distinct weights make the minimum spanning tree unique.
        weighted.add_edge(a, b, weight=(low << 64) | high, ports=data["ports"])
    return nx.minimum_spanning_tree(weighted, weight="weight", algorithm="kruskal")


def link_ports(view: TopologyView, dpid: int) -> set[int]:
    return ({link.src_port for link in view.links if link.src_dpid == dpid}
            | {link.dst_port for link in view.links if link.dst_dpid == dpid})


def flood_ports(view: TopologyView, dpid: int, ports: set[int],
                tree: nx.Graph | None = None) -> set[int]:
    """Where a broadcast leaves switch dpid: its host ports and the ports of
    its tree links. ports: every port the switch has."""
    tree = tree if tree is not None else spanning_tree(switch_graph(view))
    return (set(ports) - link_ports(view, dpid)) | tree_ports(tree, dpid)


def tree_ports(tree: nx.Graph, dpid: int) -> set[int]:
    """The ports of switch dpid on the spanning tree."""
    return ({data["ports"][dpid] for _, _, data in tree.edges(dpid, data=True)}
            if dpid in tree else set())


def accepts_broadcast(view: TopologyView, dpid: int, in_port: int,
                      tree: nx.Graph | None = None) -> bool:
    """A broadcast that arrives on a link off the tree is a copy that went
    round a loop (or raced a topology change): drop it."""
    if in_port not in link_ports(view, dpid):
        return True
    return in_port in flood_ports(view, dpid, {in_port}, tree)


def next_hop(view: TopologyView, dpid: int, host: HostView,
             graph: nx.Graph | None = None) -> int | None:
    """The port of switch dpid toward host, or None when no path exists
    (next_hops for one destination)."""
    if dpid == host.dpid:
        return host.port
    graph = graph if graph is not None else switch_graph(view)
    if dpid not in graph or host.dpid not in graph:
        return None
    distances = {n: nx.single_source_shortest_path_length(graph, n) for n in graph}
    return next_hops(graph, distances, dpid).get(host.dpid)


def next_hops(graph: nx.Graph, distances: dict, dpid: int) -> dict[int, int]:
    """next_hop for every switch reachable from dpid at once: destination
    switch -> port. distances: every switch's hop counts to every other
    (dict(nx.all_pairs_shortest_path_length(graph))), computed once per
    topology. Same choice as next_hop: the neighbour one hop closer with the
    lowest datapath id (the first step of the lexicographically least
    shortest path)."""
    hops = {}
    for dst, d in distances.get(dpid, {}).items():
        if dst == dpid:
            continue
        closer = min(n for n in graph.neighbors(dpid) if distances[n].get(dst) == d - 1)
        hops[dst] = graph.edges[dpid, closer]["ports"][dpid]
    return hops
