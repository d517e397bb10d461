"""A network of simulated switches (tests/flowsim.py), each holding the data
plane the controller computes for it: follow one frame from a host through
every switch it crosses, to every host it reaches.

The rules are built the way controller/openflow/fabric.py builds them:
switch_rules for the switch's ports, host_rules for each host below it on
the tree (controller/topology/graph.py), with its port toward that host.
"""
from __future__ import annotations

import collections
import dataclasses

from controller.openflow.dataplane import Budgets, Ports, switch_rules
from controller.openflow.fabric import host_flows
from controller.topology.graph import Tree, rooted_tree, tree_ports
from enforcement.domain.flows import FlowRule
from enforcement.domain.model import HostView, LinkView, SwitchView, TopologyView
from enforcement.domain.routing import switch_graph
from tests.flowsim import simulate


@dataclasses.dataclass
class Network:
    view: TopologyView
    tree: Tree
    rules: dict[int, list[FlowRule]]

    def send(self, host: HostView, packet: dict) -> collections.Counter:
        """Where one frame from host ends up: (dpid, port) of each host port
        it leaves on, with how many copies. Fails on a loop."""
        peer = {(link.src_dpid, link.src_port): (link.dst_dpid, link.dst_port)
                for link in self.view.links}
        reached: collections.Counter = collections.Counter()
        queue, steps = [(host.dpid, host.port)], 0
        while queue:
            steps += 1
            assert steps < 10_000, "the frame loops"
            dpid, in_port = queue.pop()
            verdict = simulate(self.rules[dpid], dpid, {**packet, "in_port": in_port})
            for port in verdict.ports:
                if (dpid, port) in peer:
                    queue.append(peer[(dpid, port)])
                else:
                    reached[(dpid, port)] += 1
        return reached

    def hosts_at(self, reached) -> dict[str, int]:
        """The same, by host MAC."""
        where = {(h.dpid, h.port): h.mac for h in self.view.hosts}
        return {where[k]: n for k, n in reached.items() if k in where}

    def flows(self, dpid: int) -> int:
        return len(self.rules[dpid])


def build(view: TopologyView, roots=(), budgets: Budgets = Budgets(),
          isolated: bool = False) -> Network:
    """isolated: subscriber isolation below the gateway, roots (the
    provider's hosts: those on the gateway's own ports)."""
    graph = switch_graph(view)
    tree = rooted_tree(graph, roots)
    links = {(link.src_dpid, link.src_port) for link in view.links}
    rules: dict[int, list[FlowRule]] = {}
    for switch in view.switches:
        dpid = switch.dpid
        access = frozenset(p for p, _ in switch.ports if (dpid, p) not in links)
        gateway = isolated and dpid in set(roots)
        provider = frozenset(h.mac for h in view.hosts
                             if h.dpid == dpid and gateway and h.port in access)
        ports = Ports(access=access, tree=frozenset(tree_ports(tree.graph, dpid)),
                      up=tree.up.get(dpid), isolated=isolated, gateway=gateway,
                      provider=provider)
        flows, _ = switch_rules(dpid, ports, budgets)
        here = list(flows)
        down = tree.down.get(dpid, {})
        for host in view.hosts:
            here += host_flows(dpid, host, ports, down)
        rules[dpid] = here
    return Network(view, tree, rules)


def tree_view(depth: int, fanout: int, hosts_per_leaf: int,
              first_leaf: int | None = None) -> TopologyView:
    """Switches numbered breadth first from 1 (the root); a switch's port
    1 leads up, ports 2.. down to its children; leaves have hosts on ports
    2.. instead (the first leaf first_leaf of them, when given). Host n has
    MAC 00:00:00:00:xx:xx and 10.0.x.y."""
    switches: list[SwitchView] = []
    links: list[LinkView] = []
    hosts: list[HostView] = []
    level, number = [1], 1
    ports: dict[int, list[int]] = {1: []}
    for _ in range(depth - 1):
        below = []
        for parent in level:
            for child_port in range(2, 2 + fanout):
                number += 1
                ports[number] = [1]
                ports[parent].append(child_port)
                links += [LinkView(parent, child_port, number, 1),
                          LinkView(number, 1, parent, child_port)]
                below.append(number)
        level = below
    for leaf in level:
        count = first_leaf if first_leaf is not None and leaf == level[0] else hosts_per_leaf
        for port in range(2, 2 + count):
            n = len(hosts) + 1
            hosts.append(HostView(f"00:00:00:00:{n >> 8:02x}:{n & 255:02x}",
                                  f"10.0.{n >> 8}.{n & 255}", leaf, port))
            ports[leaf].append(port)
    switches = [SwitchView(d, tuple((p, f"s{d}-eth{p}") for p in sorted(ps)))
                for d, ps in sorted(ports.items())]
    return TopologyView(tuple(switches), tuple(links), tuple(hosts))


def with_provider(view: TopologyView, count: int, dpid: int = 1,
                  first_port: int = 100) -> TopologyView:
    """The view with `count` provider hosts (a router, a portal...) on
    switch dpid's ports first_port..: MACs 02:00:00:00:00:NN, 10.255.0.NN."""
    extra = tuple(HostView(f"02:00:00:00:00:{n:02x}", f"10.255.0.{n}", dpid, first_port + n)
                  for n in range(count))
    switches = tuple(
        dataclasses.replace(s, ports=s.ports + tuple((h.port, f"s{dpid}-eth{h.port}")
                                                     for h in extra))
        if s.dpid == dpid else s for s in view.switches)
    return TopologyView(switches, view.links, view.hosts + extra)
