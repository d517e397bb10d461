"""The frames of probes (enforcement/domain/probes.py), each carrying a nonce
that tells the prover which probe a caught frame was: in IPv4's
identification, IPv6's flow label, or a trailer after an ARP body (fields
no rule of ours matches, so the nonce changes nothing of a probe's fate)."""
from __future__ import annotations

import struct

from os_ken.lib.packet import arp, ethernet, icmp, icmpv6, ipv4, ipv6, packet, tcp, udp

from enforcement.domain import probes
from enforcement.domain.probes import Probe

NONCES = 1 << 16
_ARP_TRAILER = b"SDN-PROBE"


def frame(probe: Probe, nonce: int) -> bytes:
    """nonce: below NONCES."""
    f = dict(probe.fields)
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=f["eth_dst"], src=f["eth_src"],
                                       ethertype=f["eth_type"]))
    if f["eth_type"] == probes.ETH_ARP:
        pkt.add_protocol(arp.arp(opcode=f.get("arp_op", 1), src_mac=f["eth_src"],
                                 src_ip=f["arp_spa"], dst_mac="00:00:00:00:00:00",
                                 dst_ip=f["arp_tpa"]))
        pkt.add_protocol(_ARP_TRAILER + struct.pack("!H", nonce))
        pkt.serialize()
        return bytes(pkt.data)
    proto = f.get("ip_proto", probes.TCP)
    if f["eth_type"] == probes.ETH_IPV6:
        pkt.add_protocol(ipv6.ipv6(src=f["ipv6_src"], dst=f["ipv6_dst"], nxt=proto,
                                   hop_limit=255, flow_label=nonce))
    else:
        pkt.add_protocol(ipv4.ipv4(src=f["ipv4_src"], dst=f["ipv4_dst"], proto=proto,
                                   identification=nonce))
    if proto == probes.TCP:
        pkt.add_protocol(tcp.tcp(src_port=f["tcp_src"], dst_port=f["tcp_dst"],
                                 bits=tcp.TCP_SYN))
    elif proto == probes.UDP:
        pkt.add_protocol(udp.udp(src_port=f["udp_src"], dst_port=f["udp_dst"]))
        pkt.add_protocol(b"probe")
    elif proto == probes.ICMP:
        pkt.add_protocol(icmp.icmp(type_=f.get("icmpv4_type", 8), code=0,
                                   data=icmp.echo(id_=1, seq=1, data=b"probe")))
    elif proto == probes.ICMPV6:
        kind = f.get("icmpv6_type", 128)
        if kind in (icmpv6.ND_NEIGHBOR_SOLICIT, icmpv6.ND_NEIGHBOR_ADVERT):
            body = icmpv6.nd_neighbor(dst=f.get("ipv6_nd_target", f["ipv6_src"]))
        elif kind in (icmpv6.ICMPV6_ECHO_REQUEST, icmpv6.ICMPV6_ECHO_REPLY):
            body = icmpv6.echo(id_=1, seq=1, data=b"probe")
        elif kind == icmpv6.ND_ROUTER_SOLICIT:
            body = icmpv6.nd_router_solicit()
        elif kind == icmpv6.ND_ROUTER_ADVERT:
            body = icmpv6.nd_router_advert()
        else:
            body = None
        pkt.add_protocol(icmpv6.icmpv6(type_=kind, code=0, data=body))
        if body is None:
            # A body of zeros long enough for the switch to read the type
            # at all (Open vSwitch reads none from under 8 bytes).
            pkt.add_protocol(b"\x00" * 12)
    pkt.serialize()
    return bytes(pkt.data)


def nonce_of(data: bytes) -> int | None:
    """The nonce of a caught probe frame, None for anything else."""
    if not is_probe(data):
        return None
    try:
        pkt = packet.Packet(data)
    except Exception:  # a frame a subscriber wrote to the probe MAC
        return None
    if (v4 := pkt.get_protocol(ipv4.ipv4)) is not None:
        return v4.identification
    if (v6 := pkt.get_protocol(ipv6.ipv6)) is not None:
        return v6.flow_label & (NONCES - 1)
    at = data.find(_ARP_TRAILER)
    if at >= 0 and len(data) >= at + len(_ARP_TRAILER) + 2:
        return struct.unpack("!H", data[at + len(_ARP_TRAILER):][:2])[0]
    return None


def is_probe(data: bytes) -> bool:
    """A frame to or from the probe MAC (what the data plane's catch rules
    return): cheap, for every packet-in."""
    return data[0:6] == _PROBE or data[6:12] == _PROBE


_PROBE = bytes.fromhex(probes.PROBE_MAC.replace(":", ""))
