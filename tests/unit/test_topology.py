"""Forwarding decisions on networkx graphs: spanning tree, flooding, paths."""
import itertools

from controller.topology.graph import accepts_broadcast, flood_ports, next_hop, spanning_tree
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


def test_unicast_takes_a_shortest_path_and_never_loops():
    view = ring(6)
    for host in view.hosts:
        for start in range(1, 7):
            here, hops = start, 0
            while True:
                port = next_hop(view, here, host)
                if here == host.dpid:
                    assert port == host.port
                    break
                link = next(link for link in view.links
                            if (link.src_dpid, link.src_port) == (here, port))
                here, hops = link.dst_dpid, hops + 1
                assert hops <= 3, "longer than the shortest path on a 6-ring"
            distance = min(abs(start - host.dpid), 6 - abs(start - host.dpid))
            assert hops == distance


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


def test_next_hops_take_the_first_step_of_the_least_shortest_path_everywhere():
    """One rule for every switch and every computation: the neighbour on the
    lexicographically least shortest path (so paths never loop)."""
    import networkx as nx

    from controller.topology.graph import next_hops
    graph = nx.random_regular_graph(3, 12, seed=4)
    for a, b in graph.edges:
        graph.edges[a, b]["ports"] = {a: 100 + b, b: 100 + a}
    distances = dict(nx.all_pairs_shortest_path_length(graph))
    for here in graph:
        hops = next_hops(graph, distances, here)
        for there in graph:
            if there != here:
                path = min(nx.all_shortest_paths(graph, here, there), key=tuple)
                assert hops[there] == graph.edges[path[0], path[1]]["ports"][here]
