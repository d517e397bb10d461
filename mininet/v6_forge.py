#!/usr/bin/env python3
"""Packets a hostile subscriber forges, one per call, for the dual-stack
tests (stdlib only, run inside a Mininet host as root):

    python3 v6_forge.py udp SRC DST PORT         one UDP datagram from any IPv6 source
    python3 v6_forge.py na IFNAME TARGET         an unsolicited neighbour advertisement
                                                 (override) for TARGET, to all nodes
    python3 v6_forge.py dhcp6 IFNAME DST         a DHCPv6 server message (547 -> 546)
    python3 v6_forge.py dhcp4 IFNAME             a DHCPv4 discover from 0.0.0.0:68

Each exits 0 once the packet is handed to the kernel; whether it got
anywhere is for the receiver's capture to say.
"""
import pathlib
import socket
import struct
import sys

IPV6_FREEBIND = 78  # Linux: bind to an address the host does not hold


def _mac(ifname: str) -> str:
    return pathlib.Path(f"/sys/class/net/{ifname}/address").read_text().strip()


def udp(src: str, dst: str, port: str) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        sock.bind((src, 0))
        sock.sendto(b"forged", (dst, int(port)))


def na(ifname: str, target: str) -> None:
    mac = _mac(ifname)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    # type 136, code 0, checksum by the kernel, flags: override; the target;
    # option 2 (target link-layer address), 1 unit of 8 bytes: this MAC.
    message = (struct.pack("!BBHI", 136, 0, 0, 0x20 << 24)
               + socket.inet_pton(socket.AF_INET6, target)
               + struct.pack("!BB", 2, 1) + bytes.fromhex(mac.replace(":", "")))
    sock.sendto(message, ("ff02::1", 0, 0, socket.if_nametoindex(ifname)))


def dhcp6(ifname: str, dst: str) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.bind(("::", 547))
        # message type 2 (advertise), a transaction id, no options.
        sock.sendto(bytes([2, 0x12, 0x34, 0x56]), (dst, 546, 0, socket.if_nametoindex(ifname)))


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dhcp4(ifname: str) -> None:
    """A client without an address: source 0.0.0.0, to broadcast. Built by
    hand on a packet socket, since the kernel would write the interface's
    address as the source."""
    mac = bytes.fromhex(_mac(ifname).replace(":", ""))
    # op 1, htype 1, hlen 6, hops 0, xid, secs, flags, 4 addresses, chaddr
    # padded to 16, sname and file empty, the magic cookie, option 53
    # (message type) = 1 (discover), end.
    payload = (struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x5EED, 0, 0x8000) + bytes(16)
               + mac + bytes(10) + bytes(192) + bytes([99, 130, 83, 99, 53, 1, 1, 255]))
    segment = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0, 64, 17, 0,
                         bytes(4), b"\xff" * 4)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    frame = b"\xff" * 6 + mac + b"\x08\x00" + header + segment
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        sock.send(frame)


if __name__ == "__main__":
    {"udp": udp, "na": na, "dhcp6": dhcp6, "dhcp4": dhcp4}[sys.argv[1]](*sys.argv[2:])
