"""High availability, measured: failover time and decisions/s, one run.

Runs the real controller processes (each on its defaults but for the shared
PostgreSQL store), a throwaway PostgreSQL server, and a Mininet network
whose switches connect to every instance (testbed/halab.py); prints a
Markdown table. Run as root, on demand (not a test):

    sudo .venv/bin/python bench/failover.py                  # the full run
    sudo .venv/bin/python bench/failover.py --kills 2 --decisions 200   # a quick look

What is measured:
- failover, over several kills: the leader is killed (SIGKILL) while 4
  clients, each given every instance's address, apply decisions without a
  pause; then the time until another instance leads (it says so once every
  switch confirmed its MASTER claim and its memory is the store's), and the
  longest wait any client saw between two acknowledged decisions (the gap
  as a case system sees it). The killed instance is restarted and rejoins
  as a follower before the next kill. Median and worst.
- decisions/s with 8 clients: three instances, clients on the leader only,
  and clients spread over all three (two thirds of the calls forwarded by a
  follower); the floor, same run, same machine: one instance alone on the
  same kind of store (PostgreSQL).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import os
import pathlib
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from enforcement.v1 import enforcement_pb2 as pb
from testbed import halab, topologies

LOCK_PATH = "/run/lock/sdn-enforcement-mininet.lock"
SUBSCRIBERS = 4


def block(port: int) -> pb.ActionRequest:
    return pb.ActionRequest(kind=pb.ACTION_KIND_BLOCK, protocol="tcp", ports=[port])


def decision(n: int, tag: str) -> dict:
    return dict(ip=f"10.0.0.{n % SUBSCRIBERS + 1}", violation="spam", case_id=f"BENCH-{tag}",
                request_id=f"{tag}-{n}", action=block(30000 + n % 30000))


@contextlib.contextmanager
def lab(instances: int, workdir: pathlib.Path, name: str):
    topo = topologies.IspTopo(access=2, subscribers_per_switch=SUBSCRIBERS // 2)
    with halab.running(topo, instances=instances, log_dir=workdir, name=name,
                       workdir=workdir / name, links=6) as running:
        yield running


def lift_all(ha, tag: str) -> None:
    """Lifts every active decision of a series, 256 to a batch."""
    with ha.client() as ctl:
        ids = [r.id for r in ctl.list(case_id=f"BENCH-{tag}", states=("active",))]
        for start in range(0, len(ids), 256):
            ctl.lift_batch(ids[start:start + 256], "bench")


def throughput(ha, targets, decisions: int, clients: int, tag: str) -> float:
    """Apply calls per second, clients at once, each given targets (in a
    rotated order, so that spread targets share the calls)."""
    done = [0] * clients
    errors: list[str] = []

    def run(k: int) -> None:
        order = targets[k % len(targets):] + targets[:k % len(targets)]
        with ha.client(*order, timeout=60) as ctl:
            for n in range(k, decisions, clients):
                try:
                    ctl.apply(**decision(n, tag))
                    done[k] += 1
                except Exception as exc:  # reported, never hidden in the figure
                    errors.append(str(exc))
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} decisions failed, first: {errors[0]}")
    lift_all(ha, tag)  # so that the next series starts alike
    return sum(done) / took


class Stream:
    """Four clients applying decisions without a pause, each given every
    instance, until stopped; when each answer came."""

    def __init__(self, ha, tag: str):
        self._ha, self._tag = ha, tag
        self._stop = threading.Event()
        self.acks: list[list[float]] = [[] for _ in range(4)]
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(4)]
        for thread in self._threads:
            thread.start()

    def _run(self, k: int) -> None:
        with self._ha.client(timeout=30) as ctl:
            n = k
            while not self._stop.is_set():
                try:
                    ctl.apply(**decision(n, self._tag))
                    self.acks[k].append(time.monotonic())
                except Exception as exc:  # reported, never hidden in the figure
                    self.errors.append(str(exc))
                n += 4

    def stop(self) -> list[float]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return sorted(t for times in self.acks for t in times)


def failover(ha, kills: int) -> tuple[list[float], list[float]]:
    """(seconds to a new leader, longest gap a client saw) per kill."""
    takeovers, gaps = [], []
    for kill in range(kills):
        leader = ha.leader()
        stream = Stream(ha, f"kill{kill}")
        time.sleep(1.5)
        leader.signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.process.proc.wait()
        successor, took = ha.wait_new_leader(leader, killed)
        time.sleep(2.0)
        answered = stream.stop()
        if stream.errors:
            raise RuntimeError(f"kill {kill + 1}: {len(stream.errors)} decisions failed: "
                               f"{stream.errors[0]}")
        gap = max(b - a for a, b in itertools.pairwise(answered) if b > killed - 1)
        takeovers.append(took)
        gaps.append(gap)
        print(f"kill {kill + 1}: instance {leader.index} killed, instance "
              f"{successor.index} led {took:.2f} s later; longest client wait "
              f"{gap:.2f} s; {len(answered)} decisions", flush=True)
        leader.start()
        leader.process.wait_ready()
        ha.wait_roles(successor)
        lift_all(ha, f"kill{kill}")
    return takeovers, gaps


def machine() -> str:
    ovs = subprocess.run(["ovs-vsctl", "--version"], capture_output=True,
                         text=True).stdout.splitlines()[0]
    pg = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return (f"{os.cpu_count()} CPU(s), {platform.python_implementation()} "
            f"{platform.python_version()}, {ovs}, PostgreSQL {pg[-1].parts[-3] if pg else '?'} "
            "(throwaway, fsync off), userspace datapath")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch, Mininet, PostgreSQL)")
    rows = []
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="failover-bench-"))
    print(f"controller logs in {workdir}", flush=True)
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with lab(1, workdir, "one") as one:
            alone = throughput(one, one.instances, args.decisions, args.clients, "one")
        with lab(3, workdir, "three") as three:
            leader = three.leader()
            on_leader = throughput(three, [leader], args.decisions, args.clients, "lead")
            spread = throughput(three, three.instances, args.decisions, args.clients,
                                "spread")
            takeovers, gaps = failover(three, args.kills)
    rows.append(("decisions/s, one instance (the floor)", f"{alone:.0f}", ""))
    rows.append(("decisions/s, three instances, clients on the leader",
                 f"{on_leader:.0f}", f"{on_leader / alone:.2f}x the floor"))
    rows.append(("decisions/s, three instances, clients on all three",
                 f"{spread:.0f}", f"{spread / alone:.2f}x the floor"))
    rows.append((f"failover: kill -9 to a new leader holding every switch ({args.kills} kills)",
                 f"median {statistics.median(takeovers):.2f} s, worst {max(takeovers):.2f} s",
                 "target 3 s"))
    rows.append(("failover as clients see it: longest wait for an answer",
                 f"median {statistics.median(gaps):.2f} s, worst {max(gaps):.2f} s", ""))
    print()
    print(f"Measured on {machine()}; {args.clients} clients, {args.decisions} decisions "
          "per series, each confirmed by the switch and committed before its answer.\n")
    print("| what | measured | compared |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
