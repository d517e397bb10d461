#!/usr/bin/env python3
"""Accepts TCP connections on the given ports and closes them at once.

Run inside a Mininet host to give the harness something to connect to:
    python3 tcp_listen.py 25 80 587
Stdlib only, so it runs under any python3 a Mininet host has.
"""
import selectors
import socket
import sys


def main(ports):
    selector = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(64)
        selector.register(sock, selectors.EVENT_READ)
    print("listening on " + " ".join(map(str, ports)), flush=True)
    while True:
        for key, _ in selector.select():
            conn, _ = key.fileobj.accept()
            conn.close()


if __name__ == "__main__":
    main([int(p) for p in sys.argv[1:]])
