"""An ISP access tree as plain data: who is where, before any switch exists.

Pure: a size in, the switches, links, subscribers and services out, the
same every time for the same size (datapath ids, port numbers, addresses
and MACs are fixed), so that a test can name a subscriber on the deepest
access switch and a bench can compare runs. Nothing here starts anything
(testbed/scale/ovs.py builds it in Open vSwitch).

The shape is the lab's ISP tree (testbed/topologies.py, IspTopo) grown
wide: one gateway switch holding the provider's services (the addresses
of the shipped policy's [assets], a router, and the DHCP server whose
port the controller trusts), an aggregation tier under it, and access
switches under those, each carrying its subscribers one per port (a
subscriber line).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Iterable, Mapping

from testbed.topologies import IspTopo

GATEWAY, AGGREGATION, ACCESS = "gateway", "aggregation", "access"
TIERS = (GATEWAY, AGGREGATION, ACCESS)
_TIER_CODE = {GATEWAY: 1, AGGREGATION: 2, ACCESS: 3}

# The provider's side, on the gateway switch: the shipped policy's assets
# (IspTopo.SERVICES, testbed/topologies.py), the DHCP server (IspTopo.DHCP)
# and a router every subscriber talks to (its unicast ARP and neighbour
# advertisements go there, so that making a host appear floods nothing).
SERVICES = (("router", "10.0.0.254"), *IspTopo.SERVICES.items(), IspTopo.DHCP)
SUBSCRIBER_BASE = ipaddress.IPv4Address("10.1.0.0")
IPV6_BASE = ipaddress.IPv6Address("2001:db8:1::")
SERVICE_IPV6_BASE = ipaddress.IPv6Address("2001:db8::")
UPLINK = 1          # an access or aggregation switch's port toward the gateway
FIRST_LINE = 2      # an access switch's first subscriber port
FIRST_DOWNLINK = 2  # an aggregation switch's first port toward an access switch


@dataclasses.dataclass(frozen=True)
class Switch:
    name: str          # the bridge (and the prefix of its ports' names)
    dpid: int
    tier: str
    index: int         # within its tier, from 0


@dataclasses.dataclass(frozen=True)
class Port:
    switch: str        # the bridge's name
    number: int        # its OpenFlow port number (ofport_request)
    name: str          # the netdev's name, unique in the whole vswitchd
    peer: str = ""     # a link's other end (a patch port's peer); "" for a host's port


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    ip: str
    mac: str
    ipv6: str
    switch: str
    dpid: int
    port: int
    port_name: str


@dataclasses.dataclass(frozen=True)
class Tree:
    switches: tuple[Switch, ...]
    ports: tuple[Port, ...]
    subscribers: tuple[Host, ...]
    services: tuple[Host, ...]

    @property
    def gateway(self) -> Switch:
        return self.switches[0]

    def service(self, name: str) -> Host:
        return next(h for h in self.services if h.name == name)

    def tier(self, name: str) -> list[Switch]:
        return [s for s in self.switches if s.tier == name]

    def ports_of(self, switch: str) -> list[Port]:
        return [p for p in self.ports if p.switch == switch]

    @property
    def links(self) -> int:
        """Links between switches (each a pair of patch ports)."""
        return sum(1 for p in self.ports if p.peer) // 2

    def dhcp_trusted(self) -> str:
        """The controller's --dhcp-trusted value: the DHCP server's port."""
        dhcp = self.service("dhcp")
        return f"{dhcp.dpid:016x}:{dhcp.port}"

    def deepest(self) -> Host:
        """A subscriber as far from the gateway as any: on the last access
        switch (probes from there cross every tier)."""
        return self.subscribers[-1]


def dpid_of(tier: str, index: int) -> int:
    """The tier in bits 32-47, so a datapath id says where its switch is."""
    return _TIER_CODE[tier] << 32 | (index + 1)


def tier_of_dpid(dpid: int) -> str:
    code = dpid >> 32
    return next(t for t, c in _TIER_CODE.items() if c == code)


def subscriber(n: int, switch: Switch, port: int) -> Host:
    """Subscriber n (from 0): 10.1.0.1 upwards, skipping .0 and .255 of each /24."""
    ip = SUBSCRIBER_BASE + (n // 254) * 256 + n % 254 + 1
    mac = "02:5c:" + ":".join(f"{b:02x}" for b in (n + 1).to_bytes(4, "big"))
    return Host(f"sub{n}", str(ip), mac, str(IPV6_BASE + n + 1), switch.name, switch.dpid,
                port, f"{switch.name}p{port}")


def build(switches: int, subscribers: int, aggregation: int | None = None) -> Tree:
    """A gateway, `aggregation` aggregation switches (default: about the
    square root of the rest, so both fan-outs stay alike) and the other
    switches at the access tier, the subscribers spread evenly over them
    in contiguous blocks."""
    if switches < 3:
        raise ValueError("a tree needs at least 3 switches (gateway, aggregation, access)")
    if subscribers < 1:
        raise ValueError("a tree needs at least one subscriber")
    n_agg = aggregation or max(1, round(math.sqrt(switches - 1)) - 1)
    n_access = switches - 1 - n_agg
    if n_agg < 1 or n_access < 1:
        raise ValueError(f"{switches} switches leave no room for {n_agg} aggregation "
                         f"switches and at least one access switch")
    gateway = Switch("gw", dpid_of(GATEWAY, 0), GATEWAY, 0)
    aggs = [Switch(f"ag{i}", dpid_of(AGGREGATION, i), AGGREGATION, i) for i in range(n_agg)]
    access = [Switch(f"ac{i}", dpid_of(ACCESS, i), ACCESS, i) for i in range(n_access)]
    ports: list[Port] = []
    services = []
    for number, (name, ip) in enumerate(SERVICES, 1):
        mac = f"02:5e:00:00:00:{number:02x}"
        port_name = f"gw.{name}"
        ports.append(Port(gateway.name, number, port_name))
        services.append(Host(name, ip, mac, str(SERVICE_IPV6_BASE + number), gateway.name,
                             gateway.dpid, number, port_name))
    for i, agg in enumerate(aggs):
        _link(ports, gateway, len(SERVICES) + 1 + i, agg, UPLINK)
    for i, switch in enumerate(access):
        parent = aggs[i % n_agg]
        _link(ports, parent, FIRST_DOWNLINK + i // n_agg, switch, UPLINK)
    subs = []
    for i, switch in enumerate(access):
        first, last = _block(i, n_access, subscribers)
        for k, n in enumerate(range(first, last)):
            host = subscriber(n, switch, FIRST_LINE + k)
            subs.append(host)
            ports.append(Port(switch.name, host.port, host.port_name))
    return Tree((gateway, *aggs, *access), tuple(ports), tuple(subs), tuple(services))


def _block(i: int, parts: int, total: int) -> tuple[int, int]:
    return i * total // parts, (i + 1) * total // parts


def _link(ports: list[Port], a: Switch, a_port: int, b: Switch, b_port: int) -> None:
    a_name, b_name = f"{a.name}.{b.name}", f"{b.name}.{a.name}"
    ports.append(Port(a.name, a_port, a_name, peer=b_name))
    ports.append(Port(b.name, b_port, b_name, peer=a_name))


def tier_counts(tree: Tree, counts: Mapping[int, int]) -> dict[str, list[int]]:
    """Flow entries (or anything counted per switch) by tier, each list in
    the tree's order of switches: {"gateway": [..], "aggregation": [..],
    "access": [..]}. A switch missing from counts is left out."""
    out: dict[str, list[int]] = {tier: [] for tier in TIERS}
    for switch in tree.switches:
        if switch.dpid in counts:
            out[switch.tier].append(counts[switch.dpid])
    return out


def spread(values: Iterable[int]) -> str:
    """min / median / max of a tier's counts, for a report."""
    ordered = sorted(values)
    if not ordered:
        return "-"
    return f"{ordered[0]} / {ordered[len(ordered) // 2]} / {ordered[-1]}"
