"""A subscriber flooding the control plane: raw Ethernet frames as fast as
one process can send them, every other one broadcast, the rest to random
unicast MACs nobody has (with --random-src, from random source MACs too:
MAC flooding).

Run inside a Mininet host: python3 flood.py IFACE SECONDS [--random-src] [--rate FPS]
Prints one line: "sent=N seconds=S fps=F". With --forged-lldp, sends LLDP
frames a parser must survive (a chassis id that is not text, truncated
TLVs) instead, a few per second. Only ever sends on IFACE, a Mininet host's
own interface.
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import time


def frames(own_mac: bytes, random_src: bool, count: int = 4096) -> list[bytes]:
    rng = random.Random(7)
    out = []
    for i in range(count):
        # odd frames to a locally administered unicast: never anybody's real address
        dst = (b"\xff" * 6 if i % 2 == 0
               else bytes([0x02, *(rng.randrange(256) for _ in range(5))]))
        src = bytes([0x02, 0xf1, *(rng.randrange(256) for _ in range(4))]) \
            if random_src else own_mac
        payload = struct.pack("!I", i) + bytes(42)
        out.append(dst + src + b"\x88\xb5" + payload)  # local experimental ethertype
    return out


def forged_lldp(own_mac: bytes) -> list[bytes]:
    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack("!H", kind << 9 | len(value)) + value
    head = b"\x01\x80\xc2\x00\x00\x0e" + own_mac + b"\x88\xcc"
    end = tlv(0, b"")
    return [
        # locally assigned chassis id that is no text
        head + tlv(1, b"\x07dpid:\xff\xfe\xfd") + tlv(2, b"\x02\x00\x00\x00\x01")
        + tlv(3, b"\x00\x78") + end,
        # OS-Ken's own chassis format, a port id of the wrong size
        head + tlv(1, b"\x07dpid:0000000000000001") + tlv(2, b"\x02\x01") + tlv(3, b"\x00\x78")
        + end,
        # truncated after the chassis id
        head + tlv(1, b"\x07dpid:00"),
        # an empty LLDP payload (zero padding only)
        head + bytes(46),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("iface")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--random-src", action="store_true")
    parser.add_argument("--forged-lldp", action="store_true")
    parser.add_argument("--rate", type=float, default=0,
                        help="frames/s to aim at (0: as fast as possible)")
    args = parser.parse_args()
    with open(f"/sys/class/net/{args.iface}/address") as f:
        own = bytes.fromhex(f.read().strip().replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    if args.forged_lldp:
        end = time.monotonic() + args.seconds
        sent = 0
        while time.monotonic() < end:
            for frame in forged_lldp(own):
                sent += sock.send(frame) > 0
            time.sleep(0.25)
        print(f"sent={sent} seconds={args.seconds:.2f} fps={sent / args.seconds:.0f}",
              flush=True)
        os._exit(0)
    batch = frames(own, args.random_src)
    send = sock.send
    sent = 0
    start = time.monotonic()
    end = start + args.seconds
    chunk = 1024
    while time.monotonic() < end:
        for i in range(0, len(batch), chunk):
            for frame in batch[i:i + chunk]:
                try:
                    send(frame)
                    sent += 1
                except OSError:  # ENOBUFS: the interface queue is full
                    pass
            if args.rate:
                ahead = start + sent / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    elapsed = time.monotonic() - start
    print(f"sent={sent} seconds={elapsed:.2f} fps={sent / elapsed:.0f}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
