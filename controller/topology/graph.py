"""Forwarding decisions on the discovered topology, for any shape of switch
graph, redundant links included. Pure: TopologyView in, ports out; networkx
does the graph work.

Everything rides one tree per connected part of the network, rooted at the
gateway switch where one is configured (the provider's side), else at the
lowest datapath id: a breadth-first tree, so every switch is as few hops
from the root as the graph allows.

- Broadcast and unknown destinations go out on the tree only: every host
  (non-link) port, plus the link ports whose link is on the tree. A ring or
  a mesh then carries each broadcast frame once per switch, never round and
  round.
- Unicast climbs toward the root until it reaches a switch whose subtree
  holds the destination, then descends. A switch therefore holds a
  forwarding entry for the hosts below it only, plus one rule up: an access
  switch its own subscribers, an aggregation switch its subtree, the root
  everything. What it costs per shape: on a tree, nothing (the tree is the
  network); on a ring or a mesh, paths between two switches that are not on
  one branch detour through their nearest common ancestor instead of the
  shortest way (the redundant links carry traffic after a failure only).
  The bound is the point: a switch's table grows with what is below it,
  never with the whole network.

The tree is deterministic (ties broken by datapath id), so every switch and
every recomputation agree, and cannot loop: up leads to the root, down only
into a subtree that holds the destination.
"""
from __future__ import annotations

import dataclasses

import networkx as nx

from enforcement.domain.model import HostView, TopologyView
from enforcement.domain.routing import switch_graph


@dataclasses.dataclass(frozen=True)
class Tree:
    """A rooted spanning forest of the switch graph."""
    graph: nx.Graph                    # its edges, with their "ports" as in switch_graph
    roots: frozenset[int]
    up: dict[int, int]                 # switch -> its port toward its root (roots absent)
    down: dict[int, dict[int, int]]    # switch -> each switch below it -> the port toward it


def rooted_tree(graph: nx.Graph, preferred_roots=()) -> Tree:
    """The breadth-first tree of each connected part, from the lowest
    preferred root in it, else its lowest datapath id. A switch's parent is
    its lowest-dpid neighbour one hop closer to the root."""
    tree = nx.Graph()
    tree.add_nodes_from(graph.nodes)
    preferred = set(preferred_roots)
    roots, up, parents = set(), {}, {}
    down: dict[int, dict[int, int]] = {node: {} for node in graph.nodes}
    for part in sorted((sorted(c) for c in nx.connected_components(graph)), key=min):
        root = min((n for n in part if n in preferred), default=part[0])
        roots.add(root)
        distance = nx.single_source_shortest_path_length(graph, root)
        order = sorted(part, key=lambda n: (distance[n], n))
        for node in order[1:]:
            parent = min(n for n in graph.neighbors(node) if distance[n] == distance[node] - 1)
            ports = graph.edges[node, parent]["ports"]
            tree.add_edge(node, parent, ports=ports)
            up[node], parents[node] = ports[node], parent
        # Deepest first, so a child's subtree is complete before its parent reads it.
        for node in reversed(order[1:]):
            parent = parents[node]
            port = tree.edges[node, parent]["ports"][parent]
            down[parent][node] = port
            for below in down[node]:
                down[parent][below] = port
    return Tree(tree, frozenset(roots), up, down)


def spanning_tree(graph: nx.Graph, preferred_roots=()) -> nx.Graph:
    """The rooted tree's edges (rooted_tree), the same ones every time."""
    return rooted_tree(graph, preferred_roots).graph


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
             tree: Tree | None = None) -> int | None:
    """The port of switch dpid toward host: down when the host is below it,
    else up; None at a root that does not reach it."""
    if dpid == host.dpid:
        return host.port
    tree = tree if tree is not None else rooted_tree(switch_graph(view))
    below = tree.down.get(dpid, {})
    if host.dpid in below:
        return below[host.dpid]
    return tree.up.get(dpid)
