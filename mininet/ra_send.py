#!/usr/bin/env python3
"""Sends one IPv6 router advertisement to all nodes on a link, as a rogue
router would (the kernel fills in the ICMPv6 checksum):

    python3 ra_send.py h1-eth0

Stdlib only, for any Mininet host.
"""
import socket
import struct
import sys


def main():
    ifname = sys.argv[1]
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    # Hosts accept router advertisements only with hop limit 255 (RFC 4861).
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    # type 134, code 0, checksum 0 (kernel), cur hop limit 64, no flags,
    # router lifetime 1800 s, reachable time 0, retransmit timer 0.
    advertisement = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    index = socket.if_nametoindex(ifname)
    sock.sendto(advertisement, ("ff02::1", 0, 0, index))


if __name__ == "__main__":
    main()
