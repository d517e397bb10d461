#!/usr/bin/env python3
"""Sends an exact number of TCP SYNs to one IPv4 address and port, nothing else.

    python3 syn_send.py 10.0.0.200 25 --count 137 [--interval 0.01]

A raw socket (the kernel adds the IPv4 header and resolves the neighbour):
each SYN is one 54-byte Ethernet frame, from a new source port, and no
connection is ever opened, so no retransmission adds to the count, which a
connect() would (the evidence tests count every frame). Prints how many
were sent. Stdlib only, for any Mininet host.
"""
import argparse
import socket
import struct
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    return header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]


def source_for(dst: str) -> str:
    """The address the kernel sends from toward dst (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((dst, 9))
        return probe.getsockname()[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.002)
    args = parser.parse_args()
    src = source_for(args.address)
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP) as raw:
        for i in range(args.count):
            raw.sendto(syn(src, args.address, 40000 + i % 20000, args.port, 1000 + i),
                       (args.address, 0))
            sent += 1
            time.sleep(args.interval)
    print(sent)


if __name__ == "__main__":
    main()
