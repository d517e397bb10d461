"""Forwarding along the rooted tree, through a whole network of simulated
switches (tests/netsim.py): every host reaches every other exactly once on
trees, rings and meshes, unknown destinations still arrive, nothing loops,
and a switch's flow table grows with what is below it, not with the
network."""
import dataclasses

import pytest

from enforcement.domain.model import HostView, TopologyView
from tests.netsim import build, tree_view
from tests.unit.test_topology import ring
from tests.unit.test_topology_mesh import HOST_PORT, mesh

BROADCAST = "ff:ff:ff:ff:ff:ff"


def frame(src: HostView, dst_mac: str) -> dict:
    return {"eth_src": src.mac, "eth_dst": dst_mac, "eth_type": 0x0800,
            "ipv4_src": src.ip, "ipv4_dst": "10.9.9.9"}


SHAPES = {
    "tree": lambda: tree_view(3, 3, 2),
    "ring": lambda: ring(6),
    "mesh": lambda: mesh(5),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_host_reaches_every_other_exactly_once_and_nowhere_else(shape):
    net = build(SHAPES[shape]())
    for src in net.view.hosts:
        for dst in net.view.hosts:
            if dst is not src:
                assert net.hosts_at(net.send(src, frame(src, dst.mac))) == {dst.mac: 1}, \
                    (shape, src, dst)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_broadcast_reaches_every_other_host_once(shape):
    net = build(SHAPES[shape]())
    for src in net.view.hosts:
        reached = net.hosts_at(net.send(src, frame(src, BROADCAST)))
        assert reached == {h.mac: 1 for h in net.view.hosts if h is not src}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_unlocated_destination_still_arrives_wherever_it_is(shape):
    """A destination no switch knows (its flows not in yet): it climbs to
    the root, which floods it everywhere, back down its own branch too, so
    a neighbour on the sender's own switch gets it as well. Each other host
    gets one copy; the sender may see its own frame come back."""
    net = build(SHAPES[shape]())
    for src in net.view.hosts:
        reached = net.hosts_at(net.send(src, frame(src, "00:00:00:99:99:99")))
        others = {h.mac: 1 for h in net.view.hosts if h is not src}
        assert {m: n for m, n in reached.items() if m != src.mac} == others
        assert reached.get(src.mac, 0) <= 1


def test_an_access_switch_holds_its_own_hosts_whatever_the_network_size():
    """Depth 3: root, aggregation, access. An access switch's table is the
    same with 2 or 12 hosts on each of its 8 sibling switches; the root
    holds one forwarding entry per host of the network, an aggregation
    switch one per host of its subtree."""
    small, large = build(tree_view(3, 3, 2)), build(tree_view(3, 3, 12))
    access = [s.dpid for s in small.view.switches if s.dpid > 4]
    grown = build(tree_view(3, 3, 12, first_leaf=2))
    assert len(grown.view.hosts) == 8 * 12 + 2
    assert grown.flows(access[0]) == small.flows(access[0])
    assert grown.flows(1) > small.flows(1)
    forward = {d: sum(1 for r in large.rules[d] if r.table_id == 3 and r.priority == 100)
               for d in large.rules}
    assert forward[1] == len(large.view.hosts) == 9 * 12
    assert forward[2] == 3 * 12 and all(forward[d] == 12 for d in access)


def test_a_ring_is_bounded_per_switch_by_its_subtree():
    """A 6-ring rooted at s1: s4, the far end, holds its own host only; s2
    and s6, next to the root, their half of the ring."""
    net = build(ring(6))
    forward = {d: sorted(int(dict(r.match)["eth_dst"][-2:], 16) for r in net.rules[d]
                         if r.table_id == 3 and r.priority == 100)
               for d in net.rules}
    assert forward == {1: [1, 2, 3, 4, 5, 6], 2: [2, 3, 4], 3: [3, 4], 4: [4],
                       5: [5], 6: [5, 6]}


def test_the_configured_root_is_where_the_tree_hangs_from():
    view = mesh(5)
    net = build(view, roots={3})
    assert net.tree.roots == {3} and set(net.tree.up) == {1, 2, 4, 5}
    forward = {d: sum(1 for r in net.rules[d] if r.table_id == 3 and r.priority == 100)
               for d in net.rules}
    assert forward == {1: 1, 2: 1, 3: 5, 4: 1, 5: 1}
    host = next(h for h in view.hosts if h.dpid == 1)
    assert net.hosts_at(net.send(host, frame(host, "00:00:00:00:00:05"))) == {
        "00:00:00:00:00:05": 1}
    assert host.port == HOST_PORT


def test_a_switch_cut_off_from_the_root_still_forwards_what_is_its_own():
    """Two parts of a network: each has its own root and works on its own."""
    left, right = tree_view(2, 2, 1), tree_view(2, 2, 1)
    shift = 10
    moved = TopologyView(
        tuple(dataclasses.replace(s, dpid=s.dpid + shift) for s in right.switches),
        tuple(dataclasses.replace(link, src_dpid=link.src_dpid + shift,
                                  dst_dpid=link.dst_dpid + shift) for link in right.links),
        tuple(dataclasses.replace(h, dpid=h.dpid + shift, mac=h.mac.replace("00:00:00:00",
                                                                           "00:00:00:01"))
              for h in right.hosts))
    net = build(TopologyView(left.switches + moved.switches, left.links + moved.links,
                             left.hosts + moved.hosts))
    assert net.tree.roots == {1, 11}
    a, b = moved.hosts
    assert net.hosts_at(net.send(a, frame(a, b.mac))) == {b.mac: 1}
