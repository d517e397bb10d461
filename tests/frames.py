"""What a switch hands the controller, built with OS-Ken's own library (an
implementation other than the parsers under test): frames a host sends,
DHCP server replies, and switch ports."""
import struct

from os_ken.lib.packet import (
    arp,
    dhcp,
    ether_types,
    ethernet,
    icmpv6,
    ipv4,
    ipv6,
    packet,
    udp,
    vlan,
)


def arp_frame(mac, ip, target="10.0.0.254"):
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", mac, ether_types.ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(src_mac=mac, src_ip=ip, dst_ip=target))
    pkt.serialize()
    return bytes(pkt.data)


def ip_frame(mac, src):
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("ff:ff:ff:ff:ff:ff", mac, ether_types.ETH_TYPE_IP))
    pkt.add_protocol(ipv4.ipv4(src=src, dst="255.255.255.255", proto=17))
    pkt.serialize()
    return bytes(pkt.data)


def nd_frame(mac, kind, src, target):
    """A neighbour solicitation (135) or advertisement (136) as a host sends it."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet("33:33:ff:00:00:01", mac, ether_types.ETH_TYPE_IPV6))
    pkt.add_protocol(ipv6.ipv6(src=src, dst="ff02::1:ff00:1", nxt=58, hop_limit=255))
    pkt.add_protocol(icmpv6.icmpv6(type_=kind, data=icmpv6.nd_neighbor(dst=target)))
    pkt.serialize()
    return bytes(pkt.data)


# ---- DHCP server replies (controller/topology/dhcp/replies.py reads them)

CLIENT = "02:00:00:00:00:01"
SERVER = "02:00:00:00:00:fd"
ACK, NAK, OFFER, DISCOVER = 5, 6, 2, 1


def v4_frame(kind=ACK, *, yiaddr="10.0.0.101", lease=120, server_id="10.0.0.253",
             chaddr=CLIENT, sport=67, dport=68, op=2, extra=(), tag=None):
    options = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([kind]))]
    if lease is not None:
        options.append(dhcp.option(51, struct.pack("!I", lease)))
    if server_id:
        options.append(dhcp.option(54, bytes(int(x) for x in server_id.split("."))))
    options += [dhcp.option(code, value) for code, value in extra]
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=chaddr, src=SERVER,
                                       ethertype=0x8100 if tag else 0x0800))
    if tag:
        pkt.add_protocol(vlan.vlan(vid=tag, ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src="10.0.0.253", dst=yiaddr, proto=17))
    pkt.add_protocol(udp.udp(src_port=sport, dst_port=dport))
    pkt.add_protocol(dhcp.dhcp(op=op, chaddr=chaddr, yiaddr=yiaddr,
                               options=dhcp.options(options)))
    pkt.serialize()
    return bytes(pkt.data)


def port(no):
    """Port no of switch 1, as OS-Ken's topology app holds it."""
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    from os_ken.topology.switches import Port
    desc = ofproto_v1_3_parser.OFPPort(port_no=no, hw_addr="00:00:00:00:00:01",
                                       name=f"s1-eth{no}".encode(), config=0, state=0,
                                       curr=0, advertised=0, supported=0, peer=0,
                                       curr_speed=0, max_speed=0)
    return Port(1, ofproto_v1_3, desc)
