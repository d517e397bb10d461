#!/usr/bin/env python3
"""A subscriber carrying the controller's own LLDP probes between two of its
lines (stdlib only, run inside a Mininet host as root, one per line):

    python3 lldp_relay.py IFNAME PEER_IP PORT SECONDS

Every LLDP frame arriving on IFNAME (a probe the controller sent out of this
line's switch port: authentic and fresh) goes by UDP to PEER_IP:PORT, where
the other line's relay sends it out of its own interface, as if the two
switch ports were cabled together; and what arrives by UDP on PORT is sent
out of IFNAME. Prints "carried=N injected=M". Only ever sends on IFNAME and
to PEER_IP, a Mininet host.
"""
import select
import socket
import sys
import time

ETH_P_LLDP = 0x88CC
PACKET_OUTGOING = 4


def main() -> None:
    ifname, peer, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LLDP))
    raw.bind((ifname, ETH_P_LLDP))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    carried = injected = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([raw, udp], [], [], left)
        if raw in ready:
            frame, where = raw.recvfrom(2048)
            if where[2] != PACKET_OUTGOING:  # not what this relay itself sent
                udp.sendto(frame, (peer, port))
                carried += 1
        if udp in ready:
            frame, _ = udp.recvfrom(2048)
            raw.send(frame)
            injected += 1
    print(f"carried={carried} injected={injected}", flush=True)


if __name__ == "__main__":
    main()
