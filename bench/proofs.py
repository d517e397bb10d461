"""What proving enforcements in the data plane costs, next to the same controller with
proofs off, measured in the same run (issue 26).

Two runs of the real controller on its defaults (SQLite on disk, one Open vSwitch switch
with --hosts Mininet hosts, the typed Python client), --live port blocks in force:

  off   --proofs-per-second 0: the floor;
  on    the defaults: 20 proofs a second, a round at most every 10 s, each enforcement
        also proven soon after it is applied (so the run starts with a backlog of
        --live proofs, worked off at the same rate).

For each: over --window seconds with nothing else happening, the controller's CPU (% of
one core) and the proofs and probe packets per second (from its /metrics); then
--decisions Apply+Lift pairs one after the other (Apply p50/p99), the proofs running.

Run as root, on demand: `bench/proofs.py`, or `bench/proofs.py --live 1000 --decisions
50 --window 10` for a quick look. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import pathlib
import re
import sys
import tempfile
import time
import urllib.request

import bench as issue7  # bench/bench.py: its set-up, requests and helpers
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness

TARGET_P99 = 2.0   # Apply p99 with proofs over without, at most (not from the issue: ours)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    proofs = sum(float(v) for v in re.findall(r"^enforcement_proofs_total\{[^}]*\} (\S+)$",
                                               text, re.M))
    probes = re.search(r"^enforcement_probes_total (\S+)$", text, re.M)
    return {"proofs": proofs, "probes": float(probes.group(1)) if probes else 0.0}


def install(bench: issue7.Bench, count: int) -> None:
    ips = [h.IP() for h in bench.net.hosts]
    for first in range(0, count, 256):
        answers = bench.client.apply_batch([
            issue7.port_block(ips[n % len(ips)], 1000 + n // len(ips), 10**7 + n)
            for n in range(first, min(count, first + 256))])
        refused = [a.message for a in answers if a.code]
        if refused:
            raise RuntimeError(f"install: {refused[0]}")


def measure(args, workdir: pathlib.Path, mode: str) -> dict:
    extra = ["--metrics-listen", "127.0.0.1:0"]
    if mode == "off":
        extra += ["--proofs-per-second", "0"]
    bench = issue7.Bench(args, workdir / mode, controller_args=tuple(extra))
    (workdir / mode).mkdir()
    bench.start()
    try:
        install(bench, args.live)
        pid, address = bench.controller.proc.pid, bench.controller.metrics_address
        cpu, seen, started = issue7.cpu_seconds(pid), scrape(address), time.monotonic()
        time.sleep(args.window)
        elapsed = time.monotonic() - started
        now = scrape(address)
        figures = {
            "cpu": 100 * (issue7.cpu_seconds(pid) - cpu) / elapsed,
            "proofs": (now["proofs"] - seen["proofs"]) / elapsed,
            "probes": (now["probes"] - seen["probes"]) / elapsed,
            "rss": issue7.rss_mib(pid)}
        ips = [h.IP() for h in bench.net.hosts]
        latencies = []
        for n in range(args.decisions):
            begun = time.perf_counter()
            record = bench.client.apply_request(issue7.port_block(ips[n % len(ips)], 25, n))
            latencies.append(time.perf_counter() - begun)
            if record.state != pb.STATE_ACTIVE:
                raise RuntimeError(f"decision {n}: {record.state_reason}")
            bench.client.lift(record.id, "bench")
        figures["p50"] = issue7.percentile(latencies, 50)
        figures["p99"] = issue7.percentile(latencies, 99)
        listed = bench.client.list(states=("active",))
        figures["failed"] = sum(1 for e in listed
                                if e.proof.state == pb.PROOF_STATE_FAILED)
        return figures
    finally:
        bench.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--hosts", type=int, default=8)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch and Mininet)")
    with open(issue7.LOCK_PATH, "w") as lock, tempfile.TemporaryDirectory(prefix="proofs-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        harness.cleanup()
        try:
            off = measure(args, pathlib.Path(tmp), "off")
            on = measure(args, pathlib.Path(tmp), "on")
        finally:
            harness.cleanup()
    ratio = on["p99"] / off["p99"]
    print(f"### Proofs in the data plane, {args.live:,} live port blocks, one switch\n")
    print("| figure | proofs on (defaults) | proofs off (floor) | verdict |")
    print("|---|---|---|---|")
    print(f"| proofs / s, probe packets / s ({args.window:.0f} s idle) | "
          f"{on['proofs']:.1f} / {on['probes']:.1f} | {off['proofs']:.1f} / "
          f"{off['probes']:.1f} | |")
    print(f"| controller CPU, % of one core (same window) | {on['cpu']:.1f} | "
          f"{off['cpu']:.1f} | +{on['cpu'] - off['cpu']:.1f} points |")
    print(f"| controller RSS | {on['rss']:.0f} MiB | {off['rss']:.0f} MiB | |")
    print(f"| Apply p50 / p99 ({args.decisions} decisions, proofs running) | "
          f"{_ms(on['p50'])} / {_ms(on['p99'])} | {_ms(off['p50'])} / {_ms(off['p99'])} | "
          f"x{ratio:.2f}; target <= x{TARGET_P99:g}: "
          f"{'met' if ratio <= TARGET_P99 else 'NOT met'} |")
    print(f"| live enforcements whose last proof failed | {on['failed']} | - | |")
    print(f"\nA round of every live enforcement takes {args.live / 20:.0f} s at the "
          "default 20 proofs/s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
