#!/usr/bin/env python3
"""A stand-in for real services inside a Mininet host.

Accepts TCP connections on the given ports and closes them at once, and
answers every UDP datagram on the --udp ports with the same bytes; with
--v6, over IPv6 as well:
    python3 tcp_listen.py 25 80 587 --udp 53 --v6
Stdlib only, so it runs under any python3 a Mininet host has.
"""
import argparse
import contextlib
import selectors
import socket


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tcp", nargs="*", type=int)
    parser.add_argument("--udp", nargs="*", type=int, default=[])
    parser.add_argument("--v6", action="store_true")
    args = parser.parse_args()
    selector = selectors.DefaultSelector()
    families = [(socket.AF_INET, "0.0.0.0")] + ([(socket.AF_INET6, "::")] if args.v6 else [])
    for port in args.tcp:
        for family, anywhere in families:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((anywhere, port))
            sock.listen(64)
            selector.register(sock, selectors.EVENT_READ, "tcp")
    for port in args.udp:
        for family, anywhere in families:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((anywhere, port))
            selector.register(sock, selectors.EVENT_READ, "udp")
    print("listening", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "tcp":
                conn, _ = key.fileobj.accept()
                conn.close()
            else:
                data, peer = key.fileobj.recvfrom(2048)
                # A forged source may be unreachable: that must not stop
                # the service for everybody else.
                with contextlib.suppress(OSError):
                    key.fileobj.sendto(data, peer)


if __name__ == "__main__":
    main()
