"""The planner tests' world: s1 with h1 and h2 on access ports 1 and 2 and
everything else behind uplink port 3, s2 with the provider's services; what
a switch holds for a plan, packets through it, and their fate (through the
simulated switch, tests.flowsim)."""
from controller.openflow.dataplane import Budgets, Ports, host_rules, switch_rules
from enforcement.domain.model import HostView, LinkView, Location, SwitchView, TopologyView
from enforcement.domain.policy import load
from tests.flowsim import simulate

POLICY = load()
# s1 (access: h1 port 1, h2 port 2) --port 3 / port 3-- s2 (dns port 1, portal port 2)
VIEW = TopologyView(
    switches=(SwitchView(1, ()), SwitchView(2, ())),
    links=(LinkView(1, 3, 2, 3), LinkView(2, 3, 1, 3)),
    hosts=(HostView("00:00:00:00:00:fa", "10.0.0.250", 2, 1),
           HostView("00:00:00:00:00:fb", "10.0.0.251", 2, 2)))
H1 = Location(dpid=1, port=1, mac="00:00:00:00:00:01")
MACS = {"10.0.0.1": ("00:00:00:00:00:01", 1), "10.0.0.2": ("00:00:00:00:00:02", 2),
        "10.0.0.3": ("00:00:00:00:00:03", 3), "10.0.0.250": ("00:00:00:00:00:fa", 3),
        "10.0.0.251": ("00:00:00:00:00:fb", 3), "10.0.0.252": ("00:00:00:00:00:fc", 3)}
UPLINK = 3


def switch(*plans):
    """s1: h1 on port 1, h2 on port 2, everything else behind uplink port 3."""
    base, _ = switch_rules(1, Ports(access=frozenset({1, 2}), tree=frozenset({UPLINK})),
                           Budgets())
    located = [r for ip, (mac, port) in MACS.items()
               for r in host_rules(1, HostView(mac, ip, 1 if port < UPLINK else 2, port),
                                   port, port < UPLINK)]
    return [*base, *located, *(r for p in plans for r in p.rules)]


def ip_packet(src, dst, proto="tcp", dport=None, sport=40000, in_port=None, eth_src=None):
    packet = {"in_port": in_port or MACS.get(src, (None, UPLINK))[1],
              "eth_src": eth_src or MACS.get(src, ("00:00:00:00:00:99",))[0],
              "eth_dst": MACS[dst][0], "eth_type": 0x0800,
              "ipv4_src": src, "ipv4_dst": dst, "ip_proto": {"tcp": 6, "udp": 17, "icmp": 1}[proto]}
    if proto != "icmp":
        packet[f"{proto}_dst"] = dport
        packet[f"{proto}_src"] = sport
    return packet


def arp_packet(spa, tpa, in_port=None, eth_src=None):
    return {"in_port": in_port or MACS[spa][1], "eth_src": eth_src or MACS[spa][0],
            "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806, "arp_spa": spa, "arp_tpa": tpa}


def fate(rules, packet):
    verdict = simulate(rules, 1, packet)
    if verdict.outcome == "dropped":
        return "dropped"
    assert verdict.outcome in ("output", "controller")
    return "metered" if verdict.enforcement_meters else "passes"


def step(violation, n=1):
    return POLICY.rung(violation).ladder[n - 1]
