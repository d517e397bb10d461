"""The topology model on networkx graphs: the broadcast tree of a ring and a
mesh, path choice and rerouting, where a moved subscriber's enforcement goes."""
import itertools

import networkx as nx

from enforcement.model import HostView, LinkView, Location, SwitchView, TopologyView
from enforcement.topology import Forwarding, moved, spanning_tree


def ring(n: int, cut: tuple[int, int] | None = None) -> TopologyView:
    """Switch i: port 1 its host h{i}, port 2 toward i+1, port 3 toward i-1."""
    links = []
    for i in range(1, n + 1):
        j = i % n + 1
        if cut and {i, j} == set(cut):
            continue
        links += [LinkView(i, 2, j, 3), LinkView(j, 3, i, 2)]
    switches = tuple(SwitchView(i, ((1, f"s{i}-eth1"), (2, f"s{i}-eth2"), (3, f"s{i}-eth3")))
                     for i in range(1, n + 1))
    hosts = tuple(HostView(f"00:00:00:00:00:{i:02x}", f"10.0.0.{i}", i, 1)
                  for i in range(1, n + 1))
    return TopologyView(switches, tuple(links), hosts)


def mesh(n: int) -> TopologyView:
    links, ports = [], {i: 1 for i in range(1, n + 1)}  # port 1: the host
    for i, j in itertools.combinations(range(1, n + 1), 2):
        ports[i] += 1
        ports[j] += 1
        links += [LinkView(i, ports[i], j, ports[j]), LinkView(j, ports[j], i, ports[i])]
    switches = tuple(SwitchView(i, tuple((p, f"s{i}-eth{p}") for p in range(1, ports[i] + 1)))
                     for i in range(1, n + 1))
    hosts = tuple(HostView(f"00:00:00:00:00:{i:02x}", f"10.0.0.{i}", i, 1)
                  for i in range(1, n + 1))
    return TopologyView(switches, tuple(links), hosts)


def flood_reach(fwd: Forwarding, start_dpid: int, start_port: int) -> dict[tuple[int, int], int]:
    """Follows one flooded frame through the switches like the controller
    would; returns how many copies left each (switch, access port). Raises
    when a frame would loop."""
    peer = {}
    for u, v, data in fwd.graph.edges(data=True):
        peer[(u, data["ports"][u])] = (v, data["ports"][v])
        peer[(v, data["ports"][v])] = (u, data["ports"][u])
    delivered: dict[tuple[int, int], int] = {}
    queue, steps = [(start_dpid, start_port)], 0
    while queue:
        steps += 1
        assert steps < 1000, "broadcast storm"
        dpid, in_port = queue.pop()
        for out in fwd.flood_ports(dpid, in_port):
            if (dpid, out) in peer:
                queue.append(peer[(dpid, out)])
            else:
                delivered[(dpid, out)] = delivered.get((dpid, out), 0) + 1
    return delivered


def test_ring_broadcast_reaches_every_host_exactly_once():
    fwd = Forwarding.of(ring(4))
    assert fwd.tree.number_of_edges() == 3
    assert flood_reach(fwd, 1, 1) == {(2, 1): 1, (3, 1): 1, (4, 1): 1}
    assert flood_reach(fwd, 3, 1) == {(1, 1): 1, (2, 1): 1, (4, 1): 1}


def test_mesh_broadcast_reaches_every_host_exactly_once():
    fwd = Forwarding.of(mesh(5))
    assert nx.is_tree(fwd.tree) and fwd.tree.number_of_nodes() == 5
    for start in range(1, 6):
        reached = flood_reach(fwd, start, 1)
        assert reached == {(i, 1): 1 for i in range(1, 6) if i != start}


def test_frame_on_a_link_outside_the_tree_is_dropped():
    fwd = Forwarding.of(ring(4))
    # The tree from s1 breadth-first: s1-s2, s1-s4, s2-s3; s3-s4 is not in it.
    assert set(map(frozenset, fwd.tree.edges)) == {
        frozenset({1, 2}), frozenset({1, 4}), frozenset({2, 3})}
    assert fwd.flood_ports(3, 2) == ()       # s3 port 2 leads to s4
    assert fwd.flood_ports(3, 1) == (3,)     # the host's frame goes toward s2 only


def test_spanning_tree_is_deterministic_and_covers_each_part():
    graph = nx.Graph([(5, 6), (6, 7), (7, 5), (1, 2), (2, 3), (3, 1)])
    tree = spanning_tree(graph)
    assert sorted(map(sorted, tree.edges)) == [[1, 2], [1, 3], [5, 6], [5, 7]]
    assert spanning_tree(graph).edges == tree.edges


def test_unicast_takes_the_shortest_way_round_the_ring_and_reroutes_after_a_cut():
    whole = Forwarding.of(ring(6))
    # s1 to h3 (at s3): clockwise through s2, port 2.
    assert whole.unicast_port(1, "00:00:00:00:00:03") == 2
    # s1 to h5: counter-clockwise through s6, port 3.
    assert whole.unicast_port(1, "00:00:00:00:00:05") == 3
    # Same switch: the host's own port.
    assert whole.unicast_port(3, "00:00:00:00:00:03") == 1
    cut = Forwarding.of(ring(6, cut=(1, 2)))
    assert cut.unicast_port(1, "00:00:00:00:00:03") == 3  # the long way, via s6
    assert cut.path(1, 3) == [1, 6, 5, 4, 3]
    assert nx.is_tree(cut.tree)
    # The cut link's ends count as access ports now (their link is down, so
    # nothing leaves there); every host still gets exactly one copy.
    hosts_reached = {k: v for k, v in flood_reach(cut, 1, 1).items() if k[1] == 1}
    assert hosts_reached == {(i, 1): 1 for i in range(2, 7)}


def test_unknown_or_unreachable_hosts_have_no_unicast_port():
    view = ring(4)
    fwd = Forwarding.of(view)
    assert fwd.unicast_port(1, "00:00:00:00:00:99") is None
    # Two cuts split the ring: h3 is unreachable from s1.
    split = TopologyView(view.switches, tuple(
        l for l in view.links if {l.src_dpid, l.dst_dpid} not in ({2, 3}, {3, 4})), view.hosts)
    assert Forwarding.of(split).unicast_port(1, "00:00:00:00:00:03") is None


def test_tie_between_equal_paths_is_broken_the_same_way_everywhere():
    fwd = Forwarding.of(ring(4))
    # s1 to s3: through s2 or s4, both two hops; the lower dpids win.
    assert fwd.path(1, 3) == [1, 2, 3]
    assert fwd.unicast_port(1, "00:00:00:00:00:03") == 2
    assert fwd.unicast_port(2, "00:00:00:00:00:03") == 2


def test_enforcement_follows_its_subscriber_to_a_new_port():
    placed = Location(2, 1, "00:00:00:00:00:01")
    assert moved(placed, HostView("00:00:00:00:00:01", "10.0.0.1", 2, 1)) is None
    assert moved(placed, None) is None
    assert moved(placed, HostView("00:00:00:00:00:01", "10.0.0.1", 3, 4)) == \
        Location(3, 4, "00:00:00:00:00:01")
    assert moved(placed, HostView("00:00:00:00:00:01", "10.0.0.1", 2, 5)) == \
        Location(2, 5, "00:00:00:00:00:01")
