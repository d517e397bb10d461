"""The topology model on full meshes (every switch linked to every other):
each broadcast reaches every host exactly once from any starting switch,
unicast takes the direct link, and after cuts it still finds a way."""
import itertools

import pytest

from controller.topology.graph import next_hop, spanning_tree
from enforcement.domain.model import HostView, LinkView, SwitchView, TopologyView
from enforcement.domain.routing import switch_graph
from tests.flowsim import hosts_reached

HOST_PORT = 1


def mesh(n: int, cut: set[frozenset] = frozenset()) -> TopologyView:
    """Port 1 of switch i is its host; ports 2.. lead to the other switches."""
    next_port = dict.fromkeys(range(1, n + 1), HOST_PORT + 1)
    links = []
    for i, j in itertools.combinations(range(1, n + 1), 2):
        pi, pj = next_port[i], next_port[j]
        next_port[i] += 1
        next_port[j] += 1
        if frozenset({i, j}) not in cut:
            links += [LinkView(i, pi, j, pj), LinkView(j, pj, i, pi)]
    switches = tuple(SwitchView(i, tuple((p, f"s{i}-eth{p}") for p in range(1, next_port[i])))
                     for i in range(1, n + 1))
    hosts = tuple(HostView(f"00:00:00:00:00:{i:02x}", f"10.0.0.{i}", i, HOST_PORT)
                  for i in range(1, n + 1))
    return TopologyView(switches, tuple(links), hosts)


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_a_broadcast_in_a_full_mesh_reaches_every_host_exactly_once(n):
    view = mesh(n)
    assert spanning_tree(switch_graph(view)).number_of_edges() == n - 1
    for start in range(1, n + 1):
        others = {i: 1 for i in range(1, n + 1) if i != start}
        assert hosts_reached(view, start, HOST_PORT) == others


def test_unicast_in_a_mesh_takes_the_direct_link_and_detours_after_cuts():
    view = mesh(4)
    h4 = view.hosts[3]
    direct = next(link.src_port for link in view.links
                  if (link.src_dpid, link.dst_dpid) == (1, 4))
    assert next_hop(view, 1, h4) == direct
    cut = mesh(4, cut={frozenset({1, 4})})
    via = next_hop(cut, 1, h4)
    assert via != direct
    # The detour is through s2 (the lowest dpid among the equal ones).
    assert next(link.dst_dpid for link in cut.links
                if (link.src_dpid, link.src_port) == (1, via)) == 2
    # Two more cuts leave s1 reaching s4 only through s3.
    cuts = {frozenset({1, 4}), frozenset({2, 4}), frozenset({1, 3})}
    narrow = mesh(4, cut=cuts)
    assert next_hop(narrow, 1, h4) is not None
    for start in range(1, 5):
        assert hosts_reached(narrow, start, HOST_PORT) == {i: 1 for i in range(1, 5) if i != start}
