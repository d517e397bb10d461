"""Mininet topologies for the enforcement controller.

Imported by the tests, the benches and the main job (testbed.run); `mn
--custom mininet/topologies.py --topo enf-linear,2,2 ...` loads the same
classes through that file. Hosts are h1..hN with 10.0.0.N/24 in the order
they are added; switches s1..sM.

Debian's mn loads this module by its path under /usr/bin/python3, where
neither this project nor its dependencies are installed: it imports nothing
but Mininet and the standard library.
"""
from typing import ClassVar

from mininet.topo import Topo


class SingleSwitchTopo(Topo):
    """n hosts on one switch."""

    def build(self, hosts=3):
        switch = self.addSwitch("s1")
        for i in range(1, hosts + 1):
            self.addLink(self.addHost(f"h{i}", ip=f"10.0.0.{i}/24"), switch)


class LinearTopo(Topo):
    """A chain of switches, each with its own hosts."""

    def build(self, switches=2, hosts_per_switch=2):
        previous = None
        number = 0
        for s in range(1, switches + 1):
            switch = self.addSwitch(f"s{s}")
            for _ in range(hosts_per_switch):
                number += 1
                self.addLink(self.addHost(f"h{number}", ip=f"10.0.0.{number}/24"),
                             switch)
            if previous is not None:
                self.addLink(previous, switch)
            previous = switch


class TreeTopo(Topo):
    """A tree of switches of the given depth and fanout, hosts at the leaves."""

    def build(self, depth=2, fanout=2):
        self._switches = 0
        self._hosts = 0
        self._subtree(depth, fanout)

    def _subtree(self, depth, fanout):
        if depth == 0:
            self._hosts += 1
            return self.addHost(f"h{self._hosts}", ip=f"10.0.0.{self._hosts}/24")
        self._switches += 1
        switch = self.addSwitch(f"s{self._switches}")
        for _ in range(fanout):
            self.addLink(switch, self._subtree(depth - 1, fanout))
        return switch


def _switches_with_hosts(topo: Topo, switches: int, hosts_per_switch: int) -> list[str]:
    """s1..sN, each with its own hosts h1, h2, ... numbered across switches."""
    names = [topo.addSwitch(f"s{s}") for s in range(1, switches + 1)]
    number = 0
    for switch in names:
        for _ in range(hosts_per_switch):
            number += 1
            topo.addLink(topo.addHost(f"h{number}", ip=f"10.0.0.{number}/24"), switch)
    return names


class RingTopo(Topo):
    """Switches in a ring (a redundant path between any two), each with its
    hosts; chords=True adds a link across the ring from every other switch
    (a partial mesh)."""

    def build(self, switches=4, hosts_per_switch=1, chords=False):
        ring = _switches_with_hosts(self, switches, hosts_per_switch)
        for i, switch in enumerate(ring):
            self.addLink(switch, ring[(i + 1) % switches])
        if chords:
            for i in range(0, switches // 2, 2):
                self.addLink(ring[i], ring[i + switches // 2])


class MeshTopo(Topo):
    """Every switch linked to every other (the most redundant shape: n-2
    spare paths between any two switches), each with its own hosts."""

    def build(self, switches=4, hosts_per_switch=1):
        mesh = _switches_with_hosts(self, switches, hosts_per_switch)
        for i, here in enumerate(mesh):
            for there in mesh[i + 1:]:
                self.addLink(here, there)


class IspTopo(Topo):
    """A small access network behind an aggregation switch.

    s1 aggregation; access switches s2..s(1+access), each with its
    subscribers h1, h2, ...; s9 the provider's services segment: dns
    (10.0.0.250), portal, the walled-garden remediation portal (10.0.0.251),
    mail (10.0.0.252), and inet (10.0.0.200), a stand-in for the rest of the
    Internet. The service addresses match the shipped policy's [assets].
    With dhcp, also a host for a DHCP server (dhcp, 10.0.0.253: testbed/dhcp.py).
    """

    SERVICES: ClassVar[dict[str, str]] = {"dns": "10.0.0.250", "portal": "10.0.0.251",
                                          "mail": "10.0.0.252", "inet": "10.0.0.200"}

    DHCP: ClassVar[tuple[str, str]] = ("dhcp", "10.0.0.253")

    def build(self, access=2, subscribers_per_switch=2, dhcp=False):
        aggregation = self.addSwitch("s1")
        number = 0
        for a in range(access):
            switch = self.addSwitch(f"s{a + 2}")
            self.addLink(switch, aggregation)
            for _ in range(subscribers_per_switch):
                number += 1
                self.addLink(self.addHost(f"h{number}", ip=f"10.0.0.{number}/24"), switch)
        services = self.addSwitch("s9")
        self.addLink(services, aggregation)
        for name, ip in self.SERVICES.items():
            self.addLink(self.addHost(name, ip=f"{ip}/24"), services)
        if dhcp:  # the last port of s9: the others keep their numbers
            self.addLink(self.addHost(self.DHCP[0], ip=f"{self.DHCP[1]}/24"), services)


topos = {
    "enf-single": SingleSwitchTopo,
    "enf-linear": LinearTopo,
    "enf-tree": TreeTopo,
    "enf-ring": RingTopo,
    "enf-mesh": MeshTopo,
    "enf-isp": IspTopo,
}
