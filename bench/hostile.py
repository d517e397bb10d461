"""Decisions while the API is besieged, next to the same decisions measured idle in the same run.

The controller on its defaults with mutual TLS (SQLite store on disk; only the per-client
request rate lifted, as bench/bench.py does; stream limits at their defaults), one Open
vSwitch switch with --hosts Mininet hosts, called by the typed Python client over mutual
TLS. Each scenario times --decisions Apply+Lift pairs, one after the other (Apply p50/p99),
while:

  idle      nothing else happens (the floor every other row is compared with);
  streams   16 clients (certificates of their own) each ask for 8 Watch streams, 128 in
            all: how many are served and refused, and Apply meanwhile (issue 24: p99 within
            2x idle);
  scraper   /metrics is scraped 20 times a second with --live enforcements in force
            (within 1.2x of idle at the same number live);
  refusals  --refusals plaintext handshakes from as many loopback addresses within 30 s
            (within 2x idle), and the audit rows they cost.

Run as root, on demand: `bench/hostile.py`, or `bench/hostile.py --decisions 100 --live 2000
--refusals 1000` for a quick look. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import multiprocessing
import os
import pathlib
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

import bench as issue7  # bench/bench.py: its set-up, requests and helpers
from enforcement.clients import certs
from enforcement.clients.client import TlsFiles
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness

WATCHERS = 16
STREAMS_EACH = 8
SCRAPES_PER_S = 20
TARGETS = {"streams": 2.0, "scraper": 1.2, "refusals": 2.0}  # p99 over idle p99, at most
CALLS = ["Apply", "Lift", "ApplyBatch", "LiftBatch", "Get", "List", "Plan", "Watch",
         "GetTopology", "ListAudit"]
ACCESS = issue7.ACCESS + f"""
[roles]
bench = {CALLS!r}

[clients.bench]
role = "bench"
""" + "".join(f'\n[clients.watcher-{n}]\nrole = "engineer"\n' for n in range(WATCHERS))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


class Hostile:
    def __init__(self, args, workdir: pathlib.Path):
        self.args = args
        self.pki = workdir / "pki"
        certs.generate(self.pki, clients=["bench", *(f"watcher-{n}" for n in range(WATCHERS))],
                       server_hosts=["localhost", "127.0.0.1"])
        tls = ["--tls-cert", str(self.pki / "server.pem"), "--tls-key",
               str(self.pki / "server.key"), "--tls-client-ca", str(self.pki / "ca.pem"),
               "--metrics-listen", "127.0.0.1:0"]
        self.bench = issue7.Bench(args, workdir, controller_args=tuple(tls), access=ACCESS,
                                  tls=self._files("bench"))
        self.floor = 0.0  # idle Apply p99, measured in this run

    def _files(self, who: str) -> TlsFiles:
        return TlsFiles(ca=self.pki / "ca.pem", cert=self.pki / f"{who}.pem",
                        key=self.pki / f"{who}.key")

    # ---- the measure every scenario takes ----------------------------------------------

    def decisions(self, label: str, target: float | None) -> float:
        client = self.bench.client
        ips = [h.IP() for h in self.bench.net.hosts]
        latencies = []
        for n in range(self.args.decisions):
            request = issue7.port_block(ips[n % len(ips)], 25, n)
            started = time.perf_counter()
            record = client.apply_request(request)
            latencies.append(time.perf_counter() - started)
            if record.state != pb.STATE_ACTIVE:
                raise RuntimeError(f"{label}: decision {n} not active: {record.state_reason}")
            client.lift(record.id, "bench")
        p50, p99 = (issue7.percentile(latencies, p) for p in (50, 99))
        if target is None:
            self.bench.row(f"Apply p50 / p99, idle ({len(latencies)} decisions)",
                           f"{_ms(p50)} / {_ms(p99)}")
            return p99
        ratio = p99 / self.floor
        self.bench.row(f"Apply p50 / p99, {label}", f"{_ms(p50)} / {_ms(p99)}",
                       f"idle p99 {_ms(self.floor)}",
                       f"x{ratio:.2f}; target <= x{target:g}: "
                       + ("met" if ratio <= target else "NOT met"))
        return p99

    # ---- scenarios ------------------------------------------------------------------------

    def streams(self) -> None:
        # The watchers are a process of their own (as they would be another
        # client's), reading every event as it comes; measured once they
        # have caught up with what was stored before.
        context = multiprocessing.get_context("spawn")
        results, stop = context.Queue(), context.Event()
        watchers = context.Process(target=_watchers, args=(
            self.bench.controller.grpc_address, str(self.pki), results, stop))
        watchers.start()
        try:
            served, refused, codes = results.get(timeout=120)
            self.bench.row(f"Watch streams asked for by {WATCHERS} clients",
                           f"{served + refused}: {served} served, {refused} refused "
                           f"({', '.join(codes) or 'none'})")
            self.decisions(f"with {served} Watch streams open", TARGETS["streams"])
        finally:
            stop.set()
            received = results.get(timeout=60)
            watchers.join(30)
        self.bench.row("events the Watch streams received meanwhile", f"{received}")

    def scraper(self) -> None:
        installed = self._install(self.args.live)
        self.floor = self.decisions(f"idle with {installed} live", None)
        url = f"http://{self.bench.controller.metrics_address}/metrics"
        stop, scrapes, costs = threading.Event(), [0], []

        def scrape() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                with urllib.request.urlopen(url, timeout=10) as response:
                    response.read()
                costs.append(time.perf_counter() - started)
                scrapes[0] += 1
                stop.wait(max(0.0, 1 / SCRAPES_PER_S - (time.perf_counter() - started)))
        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        try:
            self.decisions(f"{SCRAPES_PER_S} scrapes/s with {installed} live",
                           TARGETS["scraper"])
        finally:
            stop.set()
            scraper.join(10)
        self.bench.row(f"one scrape with {installed} live (p50 / p99)",
                       f"{_ms(issue7.percentile(costs, 50))} / "
                       f"{_ms(issue7.percentile(costs, 99))} ({scrapes[0]} scrapes)")

    def _install(self, count: int) -> int:
        """count port blocks in force (ApplyBatch, 256 at a time)."""
        ips = [h.IP() for h in self.bench.net.hosts]
        done = 0
        for first in range(0, count, 256):
            answers = self.bench.client.apply_batch([
                issue7.port_block(ips[n % len(ips)], 1000 + n // len(ips), 10**7 + n)
                for n in range(first, min(count, first + 256))])
            refused = [a.message for a in answers if a.code]
            if refused:
                raise RuntimeError(f"install: {refused[0]}")
            done += len(answers)
        return done

    def refusals(self) -> None:
        audit_before = self._audit_rows()
        port = int(self.bench.controller.grpc_address.rsplit(":", 1)[1])
        stop, sent = threading.Event(), [0]
        count = self.args.refusals

        def knock() -> None:
            # Plaintext where TLS is expected, each from an address of its own.
            for n in range(count):
                if stop.is_set():
                    return
                with contextlib.suppress(OSError), socket.socket() as s:
                    s.bind((f"127.{10 + n // 62500}.{n // 250 % 250}.{n % 250 + 1}", 0))
                    s.settimeout(2)
                    s.connect(("127.0.0.1", port))
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    sent[0] += 1
                time.sleep(max(0.0, 30.0 / count - 0.0005))
        knocker = threading.Thread(target=knock, daemon=True)
        started = time.perf_counter()
        knocker.start()
        try:
            self.decisions(f"while {count} handshakes are refused in 30 s",
                           TARGETS["refusals"])
        finally:
            knocker.join(60)
            stop.set()
        time.sleep(11)  # one summary interval of the refusal writer
        rows = self._audit_rows() - audit_before
        self.bench.row(f"refused handshakes from {count} addresses",
                       f"{sent[0]} sent in {time.perf_counter() - started:.0f} s; "
                       f"{rows} audit rows written for them")

    def _audit_rows(self) -> int:
        """Refused connections on record, counted in the store itself (the
        decisions' own audit rows would push them out of a ListAudit page)."""
        with contextlib.closing(sqlite3.connect(self.bench.workdir / "bench.db")) as db:
            return db.execute("SELECT count(*) FROM audit WHERE call = 'connect'").fetchone()[0]


def _watchers(address: str, pki: str, results, stop) -> None:
    """WATCHERS clients, each one connection (as a client's channel carries
    its streams) asking for STREAMS_EACH streams; reports (served, refused,
    codes) once every served stream has caught up, then how many events
    they received until stop."""
    folder = pathlib.Path(pki)
    channels, calls = [], []
    for n in range(WATCHERS):
        files = TlsFiles(ca=folder / "ca.pem", cert=folder / f"watcher-{n}.pem",
                         key=folder / f"watcher-{n}.key")
        channel = grpc.secure_channel(address, files.credentials(),
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        channels.append(channel)
        stub = pb_grpc.EnforcementServiceStub(channel)
        calls.extend(stub.Watch(pb.WatchRequest(), timeout=3600) for _ in range(STREAMS_EACH))
    received, last_at = [0], [time.monotonic()]

    def read(call) -> None:
        with contextlib.suppress(grpc.RpcError):
            for _ in call:
                received[0] += 1
                last_at[0] = time.monotonic()
    readers = [threading.Thread(target=read, args=(call,), daemon=True) for call in calls]
    for reader in readers:
        reader.start()
    while time.monotonic() - last_at[0] < 2.0:  # caught up: nothing new for 2 s
        time.sleep(0.2)
    refused = [c for c in calls if c.done()]
    results.put((len(calls) - len(refused), len(refused),
                 sorted({c.code().name for c in refused})))
    caught_up = received[0]
    stop.wait()
    results.put(received[0] - caught_up)
    for call in calls:
        call.cancel()
    for channel in channels:
        channel.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=1000,
                        help="Apply+Lift pairs per scenario")
    parser.add_argument("--live", type=int, default=100_000,
                        help="enforcements in force for the scraper scenario")
    parser.add_argument("--refusals", type=int, default=10_000,
                        help="refused TLS handshakes, each from its own loopback address")
    parser.add_argument("--hosts", type=int, default=8)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch and Mininet)")
    with open(issue7.LOCK_PATH, "w") as lock, tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        harness.cleanup()
        hostile = Hostile(args, pathlib.Path(tmp))
        try:
            hostile.bench.start()
            hostile.floor = hostile.decisions("idle", None)
            hostile.streams()
            hostile.refusals()
            hostile.scraper()
        finally:
            hostile.bench.stop()
            harness.cleanup()
        print(hostile.bench.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
