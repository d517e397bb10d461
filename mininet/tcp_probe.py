#!/usr/bin/env python3
"""Which TCP ports of one address accept a connection, tried all at once.

    python3 tcp_probe.py 10.0.0.200 80 587 20000-20499 --timeout 1.5

Prints one JSON object: port -> true (connected) or false (refused, or no
answer within the timeout: a drop rule). Stdlib only, for any Mininet host.
"""
import argparse
import concurrent.futures
import json
import socket


def ports(text):
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def connects(address, port, timeout):
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("ports", nargs="+", type=ports)
    parser.add_argument("--timeout", type=float, default=1.5)
    args = parser.parse_args()
    wanted = sorted({p for group in args.ports for p in group})
    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        results = pool.map(lambda p: connects(args.address, p, args.timeout), wanted)
        print(json.dumps(dict(zip(map(str, wanted), results, strict=True))))


if __name__ == "__main__":
    main()
