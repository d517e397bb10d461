#!/usr/bin/env python3
"""A stand-in for real services inside a Mininet host.

Accepts TCP connections on the given ports and closes them at once, and
answers every UDP datagram on the --udp ports with the same bytes:
    python3 tcp_listen.py 25 80 587 --udp 53
Stdlib only, so it runs under any python3 a Mininet host has.
"""
import argparse
import selectors
import socket


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tcp", nargs="*", type=int)
    parser.add_argument("--udp", nargs="*", type=int, default=[])
    args = parser.parse_args()
    selector = selectors.DefaultSelector()
    for port in args.tcp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(64)
        selector.register(sock, selectors.EVENT_READ, "tcp")
    for port in args.udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        selector.register(sock, selectors.EVENT_READ, "udp")
    print("listening", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "tcp":
                conn, _ = key.fileobj.accept()
                conn.close()
            else:
                data, peer = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(data, peer)


if __name__ == "__main__":
    main()
