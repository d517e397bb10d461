"""A subscriber flooding the control plane: raw Ethernet frames as fast as
one process can send them, every other one broadcast, the rest to random
unicast MACs nobody has (with --random-src, from random source MACs too:
MAC flooding).

Run inside a Mininet host: python3 flood.py IFACE SECONDS [--random-src]
Prints one line: "sent=N seconds=S fps=F". Only ever sends on IFACE, a
Mininet host's own interface.
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
        if i % 2 == 0:
            dst = b"\xff" * 6
        else:
            # locally administered unicast: never anybody's real address
            dst = bytes([0x02, *(rng.randrange(256) for _ in range(5))])
        src = bytes([0x02, 0xf1, *(rng.randrange(256) for _ in range(4))]) \
            if random_src else own_mac
        payload = struct.pack("!I", i) + bytes(42)
        out.append(dst + src + b"\x88\xb5" + payload)  # local experimental ethertype
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("iface")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--random-src", action="store_true")
    args = parser.parse_args()
    with open(f"/sys/class/net/{args.iface}/address") as f:
        own = bytes.fromhex(f.read().strip().replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    batch = frames(own, args.random_src)
    send = sock.send
    sent = 0
    start = time.monotonic()
    end = start + args.seconds
    while time.monotonic() < end:
        for frame in batch:
            try:
                send(frame)
                sent += 1
            except OSError:  # ENOBUFS: the interface queue is full
                pass
    elapsed = time.monotonic() - start
    print(f"sent={sent} seconds={elapsed:.2f} fps={sent / elapsed:.0f}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
