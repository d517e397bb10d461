#!/usr/bin/env python3
"""Layer-2 frames a subscriber forges to rewrite who is where (stdlib only,
run inside a Mininet host as root):

    python3 l2_forge.py garp IFNAME IP [MAC] [COUNT]
        gratuitous ARP replies, to broadcast, claiming IP for MAC (default:
        the interface's own), COUNT times (default 3), 0.1 s apart
    python3 l2_forge.py frames IFNAME MAC [COUNT]
        UDP broadcasts sent with a copied source MAC

Each exits 0 once the frames are handed to the kernel; whether they got
anywhere is for the receivers' neighbour tables and captures to say.
"""
import pathlib
import socket
import struct
import sys
import time

BROADCAST = b"\xff" * 6


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _own(ifname: str) -> str:
    return pathlib.Path(f"/sys/class/net/{ifname}/address").read_text().strip()


def _send(ifname: str, frames: list[bytes], gap: float = 0.1) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        for i, frame in enumerate(frames):
            if i:
                time.sleep(gap)
            sock.send(frame)


def garp(ifname: str, ip: str, mac: str = "", count: str = "3") -> None:
    sender = _mac(mac or _own(ifname))
    address = socket.inet_aton(ip)
    # Ethernet, then ARP: Ethernet/IPv4, reply (2), sender = target = ip.
    frame = (BROADCAST + sender + struct.pack("!H", 0x0806)
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
             + sender + address + BROADCAST + address)
    _send(ifname, [frame] * int(count))


def frames(ifname: str, mac: str, count: str = "5") -> None:
    source = _mac(mac)
    payload = b"copied-mac"
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton("0.0.0.0"), socket.inet_aton("255.255.255.255"))
    checksum = 0
    for i in range(0, 20, 2):
        checksum += (header[i] << 8) + header[i + 1]
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    header = header[:10] + struct.pack("!H", ~checksum & 0xFFFF) + header[12:]
    frame = BROADCAST + source + struct.pack("!H", 0x0800) + header + udp
    _send(ifname, [frame] * int(count))


if __name__ == "__main__":
    {"garp": garp, "frames": frames}[sys.argv[1]](*sys.argv[2:])
