"""DHCP in the data plane: the trusted servers' replies are copied to the
controller, and no other port may answer as a DHCP server.

Pure, beside controller/openflow/dataplane.py (switch_rules adds these). Table 2
(learn), above every learning rule, so it holds for known and unknown
sources alike:

  a trusted port (where an operator's DHCP server is): a server reply
      (IPv4 UDP 67 -> 68, IPv6 UDP 547 -> 546) is copied to the controller
      and goes on to forwarding. No port meter: the server is ours, and it
      answers for every subscriber at once; the switch-wide controller
      meter still bounds the copies;
  every other access port: anything sent from a server port (IPv4 UDP
      source 67, IPv6 UDP source 547) is dropped in the switch, counted by
      the rule's own counters: a rogue server on a subscriber line reaches
      nobody. A client's own messages come from 68 and 546 and never match.

Ports with a switch behind them are left alone: the trusted servers'
replies cross them. Always on, whatever is enforced: the anti-spoofing
action's drop of DHCPv6 server messages (enforcement/domain/planner.py) only
repeats it in table 0 for an enforced port.

Trusted ports are configured as DPID:PORT pairs, the datapath id in hex as
the controller's logs and `ovs-ofctl show` print it (leading zeros and 0x
optional), the port as OpenFlow numbers it.
"""
from __future__ import annotations

from enforcement.domain import pipeline
from enforcement.domain.flows import FlowRule, GotoTable, ToController

PRIORITY_DHCP = 400   # table 2: above the hosts' learning rules (300 at most)

_ETH_IPV4, _ETH_IPV6, _UDP = 0x0800, 0x86DD, 17
SERVER_REPLIES = (  # what a server sends a client, in each family
    (("eth_type", _ETH_IPV4), ("ip_proto", _UDP), ("udp_src", 67), ("udp_dst", 68)),
    (("eth_type", _ETH_IPV6), ("ip_proto", _UDP), ("udp_src", 547), ("udp_dst", 546)),
)
FROM_SERVER_PORT = (  # what only a server (or a relay) sends
    (("eth_type", _ETH_IPV4), ("ip_proto", _UDP), ("udp_src", 67)),
    (("eth_type", _ETH_IPV6), ("ip_proto", _UDP), ("udp_src", 547)),
)
_OFPP_MAX = 0xFFFFFF00


def dhcp_rules(dpid: int, access: frozenset[int],
               trusted: frozenset[int]) -> tuple[FlowRule, ...]:
    """The rules of switch dpid, for its access ports and the ports of it
    configured as trusted (whatever their class: a server port still
    settling is snooped all the same)."""
    fwd = pipeline.COOKIE_FORWARD
    rules = []
    for port in sorted(trusted):
        rules += [FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_DHCP, fwd,
                           (("in_port", port), *reply),
                           (ToController(), GotoTable(pipeline.TABLE_FORWARD)))
                  for reply in SERVER_REPLIES]
    for port in sorted(access - trusted):
        rules += [FlowRule(dpid, pipeline.TABLE_LEARN, PRIORITY_DHCP, fwd,
                           (("in_port", port), *sent))
                  for sent in FROM_SERVER_PORT]
    return tuple(rules)


def is_drop(rule: FlowRule) -> bool:
    """Whether a rule is one of the drops above (for reading its counters)."""
    return (rule.table_id == pipeline.TABLE_LEARN and rule.priority == PRIORITY_DHCP
            and not rule.instructions)


def on_switch(trusted: frozenset[tuple[int, int]], dpid: int) -> frozenset[int]:
    return frozenset(port for switch, port in trusted if switch == dpid)


def parse_trusted(text: str | None) -> tuple[frozenset[tuple[int, int]], list[str]]:
    """"DPID:PORT,DPID:PORT..." -> {(dpid, port)}, and what is wrong with
    it (each mistake once, naming the item)."""
    found: set[tuple[int, int]] = set()
    errors: list[str] = []
    if text is None:
        return frozenset(), errors
    for item in text.split(","):
        item = item.strip()
        if not item:
            errors.append("an empty item (give DPID:PORT,DPID:PORT...)")
            continue
        dpid_text, colon, port_text = item.partition(":")
        if not colon:
            errors.append(f"{item!r}: give DPID:PORT (the datapath id in hex, a colon, "
                          "the OpenFlow port number)")
            continue
        digits = dpid_text.strip().lower().removeprefix("0x")
        try:
            dpid = int(digits, 16) if digits.isalnum() else -1
        except ValueError:
            dpid = -1
        if not 0 < dpid < 1 << 64:
            errors.append(f"{item!r}: {dpid_text.strip()!r} is not a datapath id "
                          "(1 to 16 hex digits)")
            continue
        port_text = port_text.strip()
        if not port_text.isdigit() or not 0 < int(port_text) <= _OFPP_MAX:
            errors.append(f"{item!r}: {port_text!r} is not an OpenFlow port number "
                          f"(1 to {_OFPP_MAX})")
            continue
        found.add((dpid, int(port_text)))
    return frozenset(found), errors
