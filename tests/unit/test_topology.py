"""Forwarding decisions on networkx graphs: spanning tree, flooding, paths."""
import itertools

from controller.topology.graph import (
    accepts_broadcast,
    flood_ports,
    next_hop,
    rooted_tree,
    spanning_tree,
)
from enforcement.domain.model import HostView, LinkView, SwitchView, TopologyView
from enforcement.domain.routing import switch_graph
from tests.flowsim import hosts_reached


def ring(n):
    """s1..sn in a ring: port 1 to the next switch, port 2 to the previous,
    port 3 a host."""
    links = []
    for i in range(1, n + 1):
        j = i % n + 1
        links += [LinkView(i, 1, j, 2), LinkView(j, 2, i, 1)]
    hosts = tuple(HostView(f"00:00:00:00:00:{i:02x}", f"10.0.0.{i}", i, 3)
                  for i in range(1, n + 1))
    return TopologyView(tuple(SwitchView(i, tuple((p, f"s{i}-eth{p}") for p in (1, 2, 3)))
                              for i in range(1, n + 1)), tuple(links), hosts)


def test_the_tree_of_a_ring_drops_exactly_one_link_and_is_stable():
    view = ring(4)
    tree = spanning_tree(switch_graph(view))
    assert tree.number_of_edges() == 3 and len(tree.nodes) == 4
    assert not tree.has_edge(3, 4) or not tree.has_edge(4, 1)
    assert sorted(tree.edges) == sorted(spanning_tree(switch_graph(view)).edges)


def flood(view, start):
    """Copies of one broadcast from the host on `start` that each other host got."""
    return hosts_reached(view, start, 3)


def test_a_broadcast_on_a_ring_reaches_every_switch_once():
    for n in (3, 4, 6):
        for start in range(1, n + 1):
            assert flood(ring(n), start) == {i: 1 for i in range(1, n + 1) if i != start}


def test_host_ports_always_flood_and_off_tree_links_never_do():
    view = ring(4)
    tree = spanning_tree(switch_graph(view))
    off_tree = [(a, b) for a, b in itertools.combinations(range(1, 5), 2)
                if switch_graph(view).has_edge(a, b) and not tree.has_edge(a, b)]
    assert len(off_tree) == 1
    a, b = off_tree[0]
    port_a = switch_graph(view).edges[a, b]["ports"][a]
    assert port_a not in flood_ports(view, a, {1, 2, 3}, tree)
    assert 3 in flood_ports(view, a, {1, 2, 3}, tree)
    assert not accepts_broadcast(view, a, port_a, tree)


def test_unicast_climbs_to_the_nearest_common_ancestor_and_never_loops():
    """On a 6-ring rooted at s1 the tree is s1-s2-s3-s4 and s1-s6-s5: from
    s5 to s3 goes up to s1 and down (4 hops where the ring has 2): the
    price of holding, on each switch, only what is below it."""
    view = ring(6)
    tree = rooted_tree(switch_graph(view))
    paths = {}
    for host in view.hosts:
        for start in range(1, 7):
            here, path = start, [start]
            while True:
                port = next_hop(view, here, host, tree)
                if here == host.dpid:
                    assert port == host.port
                    break
                link = next(link for link in view.links
                            if (link.src_dpid, link.src_port) == (here, port))
                here = link.dst_dpid
                path.append(here)
                assert len(path) <= 7, f"a loop: {path}"
            assert all(tree.graph.has_edge(a, b) for a, b in itertools.pairwise(path))
            paths[start, host.dpid] = path
    assert paths[5, 3] == [5, 6, 1, 2, 3] and paths[3, 5] == [3, 2, 1, 6, 5]
    assert paths[3, 4] == [3, 4] and paths[2, 4] == [2, 3, 4]


def test_a_cut_link_reroutes_the_long_way_round():
    view = ring(4)
    dst = view.hosts[1]  # on s2
    assert next_hop(view, 1, dst) == 1  # s1 -> s2 directly
    cut = TopologyView(view.switches, tuple(link for link in view.links
                                            if {link.src_dpid, link.dst_dpid} != {1, 2}),
                       view.hosts)
    assert next_hop(cut, 1, dst) == 2  # s1 -> s4 -> s3 -> s2
    assert flood(cut, 1) == {2: 1, 3: 1, 4: 1}


def test_no_path_is_none():
    view = TopologyView((SwitchView(1, ()), SwitchView(2, ())), (), ())
    assert next_hop(view, 1, HostView("00:00:00:00:00:09", "10.0.0.9", 2, 1)) is None


def test_each_switch_is_a_breadth_first_hop_from_its_root_and_knows_what_is_below():
    """The tree is breadth-first from the root (every switch as close to it
    as the graph allows, parent the lowest dpid one hop closer), and a
    switch's down map names exactly its subtree."""
    import networkx as nx

    graph = nx.random_regular_graph(3, 12, seed=4)
    for a, b in graph.edges:
        graph.edges[a, b]["ports"] = {a: 100 + b, b: 100 + a}
    for root in (0, 7):
        tree = rooted_tree(graph, {root})
        assert tree.roots == {root} and tree.graph.number_of_edges() == 11
        distance = nx.single_source_shortest_path_length(graph, root)
        for node in graph:
            if node == root:
                assert node not in tree.up
                continue
            parent = tree.up[node] - 100
            assert parent == min(n for n in graph.neighbors(node)
                                 if distance[n] == distance[node] - 1)
        rooted = nx.bfs_tree(tree.graph, root)
        for node in graph:
            below = set(nx.descendants(rooted, node))
            assert set(tree.down[node]) == below
            for there, port in tree.down[node].items():
                assert port - 100 in below | {there}
