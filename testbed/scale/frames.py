"""What the harness's hosts send, built with OS-Ken's packet library, and what
a port's capture shows.

Hosts here are ports without a network stack, so each frame is the one a
real host would send at that moment: its address announced to the router
by a unicast ARP request (what Linux sends to refresh a neighbour it
knows: the claim the controller judges, without a broadcast), its IPv6
address by a solicited neighbour advertisement to the router, the DHCP
server's acknowledgement of its lease (from the trusted port), and TCP
SYNs as probes. Nothing broadcasts but the services announcing
themselves once: the harness measures the controller, not the flood.
"""
from __future__ import annotations

import pathlib
import struct

from os_ken.lib import pcaplib
from os_ken.lib.packet import arp, dhcp, ether_types, ethernet, icmpv6, ipv4, ipv6, packet
from os_ken.lib.packet import tcp as tcp_packet
from os_ken.lib.packet import udp as udp_packet

from testbed.scale.tree import Host

BROADCAST = "ff:ff:ff:ff:ff:ff"
ETH_TYPE_IPV4, ETH_TYPE_ARP, ETH_TYPE_IPV6 = b"\x08\x00", b"\x08\x06", b"\x86\xdd"
ND_FLAGS_SOLICITED_OVERRIDE = 0b011  # nd_neighbor's res: R=0, S=1, O=1
LEASE_SECONDS = 86400


def _serialized(*layers) -> bytes:
    pkt = packet.Packet()
    for layer in layers:
        pkt.add_protocol(layer)
    pkt.serialize()
    return bytes(pkt.data)


def arp_announce(host: Host, router: Host | None = None) -> bytes:
    """host asks for the router's address: unicast to the router when given,
    else broadcast (a service announcing itself)."""
    dst_mac = router.mac if router else BROADCAST
    target = router.ip if router else host.ip
    return _serialized(ethernet.ethernet(dst_mac, host.mac, ether_types.ETH_TYPE_ARP),
                       arp.arp(opcode=arp.ARP_REQUEST, src_mac=host.mac, src_ip=host.ip,
                               dst_mac="00:00:00:00:00:00", dst_ip=target))


def neighbour_advert(host: Host, router: Host) -> bytes:
    """host's answer to the router's solicitation for its IPv6 address."""
    return _serialized(
        ethernet.ethernet(router.mac, host.mac, ether_types.ETH_TYPE_IPV6),
        ipv6.ipv6(src=host.ipv6, dst=router.ipv6, nxt=58, hop_limit=255),
        icmpv6.icmpv6(type_=icmpv6.ND_NEIGHBOR_ADVERT, data=icmpv6.nd_neighbor(
            res=ND_FLAGS_SOLICITED_OVERRIDE, dst=host.ipv6,
            option=icmpv6.nd_option_tla(hw_src=host.mac))))


def dhcp_ack(server: Host, client: Host, lease: int = LEASE_SECONDS) -> bytes:
    """The server's DHCPACK giving client its address (unicast to it, as
    servers answer a renewing client)."""
    options = dhcp.options([
        dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([dhcp.DHCP_ACK])),
        dhcp.option(dhcp.DHCP_IP_ADDR_LEASE_TIME_OPT, struct.pack("!I", lease)),
        dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT, ipv4_bytes(server.ip))])
    return _serialized(
        ethernet.ethernet(client.mac, server.mac, ether_types.ETH_TYPE_IP),
        ipv4.ipv4(src=server.ip, dst=client.ip, proto=17),
        udp_packet.udp(src_port=67, dst_port=68),
        dhcp.dhcp(op=dhcp.DHCP_BOOT_REPLY, chaddr=client.mac, yiaddr=client.ip,
                  siaddr=server.ip, options=options))


def ipv4_bytes(ip: str) -> bytes:
    return bytes(int(part) for part in ip.split("."))


def tcp_syn(src: Host, dst: Host, dst_port: int, src_port: int) -> bytes:
    """A connection attempt from src to dst:dst_port; src_port marks the probe."""
    return _serialized(ethernet.ethernet(dst.mac, src.mac, ether_types.ETH_TYPE_IP),
                       ipv4.ipv4(src=src.ip, dst=dst.ip, proto=6),
                       tcp_packet.tcp(src_port=src_port, dst_port=dst_port,
                                      bits=tcp_packet.TCP_SYN))


class Capture:
    """A port's tx_pcap, read as it grows: each read() parses only the
    records written since the last one (whole records: one Open vSwitch is
    still writing waits for the next read). os_ken's pcaplib.Reader reads
    the whole file and copies its rest at every record, which a capture of
    200,000 frames cannot afford."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self._offset = 0
        self._byteorder: str | None = None

    def read(self) -> list[bytes]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as stream:
            if self._byteorder is None:
                header = stream.read(pcaplib.PcapFileHdr.FILE_HDR_SIZE)
                if len(header) < pcaplib.PcapFileHdr.FILE_HDR_SIZE:
                    return []
                _, self._byteorder = pcaplib.PcapFileHdr.parser(header)
                self._offset = pcaplib.PcapFileHdr.FILE_HDR_SIZE
            stream.seek(self._offset)
            body = stream.read()
        out, at, size = [], 0, pcaplib.PcapPktHdr.PKT_HDR_SIZE
        while len(body) - at >= size:
            header, _ = pcaplib.PcapPktHdr.parser(body[at:at + size], self._byteorder)
            if len(body) - at - size < header.incl_len:
                break
            out.append(body[at + size:at + size + header.incl_len])
            at += size + header.incl_len
        self._offset += at
        return out


def tcp_probe(data: bytes) -> tuple[str, int, int] | None:
    """(IPv4 source, TCP source port, TCP destination port) of a TCP frame."""
    if data[12:14] != ETH_TYPE_IPV4:
        return None
    pkt = packet.Packet(data)
    ip, segment = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp_packet.tcp)
    if ip is None or segment is None:
        return None
    return ip.src, segment.src_port, segment.dst_port


def announcement(data: bytes) -> tuple[str, str] | None:
    """(sender MAC, "arp" or "nd") of an ARP request or a neighbour
    advertisement: what a host announcing itself sent."""
    kind = data[12:14]
    if kind not in (ETH_TYPE_ARP, ETH_TYPE_IPV6):
        return None
    pkt = packet.Packet(data)
    source = pkt.get_protocol(ethernet.ethernet).src
    if pkt.get_protocol(arp.arp) is not None:
        return source, "arp"
    message = pkt.get_protocol(icmpv6.icmpv6)
    if message is not None and message.type_ == icmpv6.ND_NEIGHBOR_ADVERT:
        return source, "nd"
    return None
