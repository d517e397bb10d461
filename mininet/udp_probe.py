#!/usr/bin/env python3
"""Sends one UDP datagram and waits for the echo: exit 0 if it came back.
    python3 udp_probe.py 10.0.0.250 53
    python3 udp_probe.py 2001:db8::250 53
"""
import socket
import sys


def main(host, port, timeout=2.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"probe", (host, int(port)))
        try:
            data, _ = sock.recvfrom(2048)
        except OSError:
            return 1
    return 0 if data == b"probe" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
