"""Decision latency as a case system sees it, next to floors measured in the same run.

The controller on its defaults (SQLite store on disk; only the per-client rate limits
raised, as bench/bench.py does) on a multi-switch Mininet network, dual stack, called by
the typed Python client and by grpc-js (bench/js). Floors (bench/floors.py), measured
while all idles: a bare grpcio server (a stub servicer of the same proto) through the same
client code; an OS-Ken app sending one decision's flow_mods + a barrier to an OVS bridge
of its own; the store's commit alone; for throughput, the same worker fleet against the
bare server just before the controller's run (and for batches, the switch's own rate).
Run as root, on demand (tests/e2e/test_latency_bench_smoke.py runs a tiny one):
`bench/latency.py` (add `--live 100000` for 100,000 live enforcements at the end, after
which `--follow N` more of one subscriber follow it to a new address), or
`bench/latency.py --pairs 20 --quick` for a quick look.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import functools
import json
import math
import multiprocessing
import operator
import os
import pathlib
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version

import grpc

import bench as issue7  # bench/bench.py: its workers, requests and helpers
import floors  # bench/floors.py: the floors, two in processes of their own
from controller.topology.settling import SETTLE_SECONDS
from enforcement.clients.client import EnforcementClient
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies

ROOT = pathlib.Path(__file__).resolve().parents[1]
JS = ROOT / "bench" / "js"
PROTO = ROOT / "protos" / "enforcement" / "v1" / "enforcement.proto"
WARMUP = floors.WARMUP  # one for every series, floors included
# The bare server's pool for the throughput floor: more threads than clients, so that
# 32 clients' calls never queue for a thread there (the controller's pool is 128).
FLEET_THREADS = 64
TARGETS = {"apply_p50_ms": 2.0, "apply_p99_ms": 5.0, "trivial_p99_ratio": 1.5,
           "unary_per_s": 5000.0, "batched_per_s": 20000.0}
VERDICT = ("MISS", "pass")  # by whether the target is met
# Rounds (Apply batch + Lift batch) of the switch's own rate for the batched floor.
SWITCH_ROUNDS = 200
WAIT_MS = 2.0  # about what the controller spends on an Apply between request and answer


def summary(ms: list[float]) -> dict:
    some = ms or [math.nan]  # every call failed: the notes say why
    return {"n": len(ms), "p50": issue7.percentile(some, 50),
            "p99": issue7.percentile(some, 99), "max": max(some)}


def _cells(s: dict) -> str:
    return f"{s['n']} | {s['p50']:.2f} | {s['p99']:.2f} | {s['max']:.2f}"


def _out(command: list[str], cwd=None) -> str:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True).stdout.strip()


def _py_calls(address: str, mode: str, count: int, ip: str, results, stop=None) -> None:
    """Typed client: trivial Lists (page_size 1) or Apply then Lift pairs, timed (ms);
    with stop, Apply then Lift until it is set (a loaded run's other case system)."""
    timings: dict[str, list[float]] = {"list": [], "apply": [], "lift": []}
    failures: list[str] = []
    results.put("ready")  # imports done
    parent = multiprocessing.parent_process()  # a loader stops if the bench was killed
    with EnforcementClient(address, timeout=30,  # a connection of its own
                           channel_options=[("grpc.use_local_subchannel_pool", 1)]) as ctl:
        started, n = time.perf_counter(), 0
        while (n < WARMUP + count) if stop is None else not stop.is_set() and parent.is_alive():
            try:
                begin = time.perf_counter()
                if mode == "list":
                    # client.list() walks every page; one page is timed, through
                    # the retrying path every typed call takes.
                    ctl._call("List", pb.ListRequest(page_size=1), None)
                    marks = [("list", begin, time.perf_counter())]
                else:
                    record = ctl.apply_request(issue7.port_block(ip, 25, n))
                    applied = time.perf_counter()
                    if record.state != pb.STATE_ACTIVE:
                        raise RuntimeError(f"not active: {record.state_reason}")
                    ctl.lift(record.id, "bench")
                    marks = [("apply", begin, applied), ("lift", applied, time.perf_counter())]
                for key, begin, end in marks if n >= WARMUP and stop is None else ():
                    timings[key].append((end - begin) * 1e3)
            except Exception as exc:  # counted and reported; the series goes on
                failures.append(str(exc))
            n += 1
    rate = 2 * n / (time.perf_counter() - started)
    results.put({**timings, "failures": failures, "rate": rate})


def _fleet(target, argsets: list[tuple], children: list, ready: int = 0):
    """target(*args, results) per argset, each in a spawned process; returns
    once `ready` messages came, a function that gathers one answer of each."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=target, args=(*args, results)) for args in argsets]
    children += workers
    for worker in workers:
        worker.start()
    for _ in range(ready):
        results.get(timeout=120)

    def gather(timeout: float) -> list:
        answers = [results.get(timeout=timeout) for _ in workers]
        for worker in workers:
            worker.join(30)
        return answers
    return gather


def ensure_js() -> str:
    """node, with bench/js's packages installed (npm ci from the lock; npm install makes it)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise RuntimeError("the grpc-js client needs node and npm (Debian: nodejs, npm)")
    if not (JS / "node_modules" / "@grpc" / "grpc-js").is_dir():
        verb = "ci" if (JS / "package-lock.json").exists() else "install"
        subprocess.run([npm, verb, "--no-audit", "--no-fund"], cwd=JS, check=True,
                       stdout=sys.stderr)
    return node


def js_calls(node: str, address: str, mode: str, count: int, ip: str) -> dict:
    options = json.dumps({"address": address, "proto": str(PROTO), "mode": mode,
                          "count": count, "warmup": WARMUP, "ips": [ip]})
    out = subprocess.run([node, str(JS / "latency.js"), options], cwd=JS, capture_output=True,
                         text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"grpc-js client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class LatencyBench:
    def __init__(self, args, workdir: pathlib.Path):
        self.args, self.workdir, self.floors, self.loads = args, workdir, {}, [os.getloadavg()[0]]
        self.floor_rows: list[tuple] = []  # (what, measured on, stats)
        self.rows: list[tuple] = []  # (call, client, on, stats, floor p50/p99, target, result)
        self.rates: list[tuple] = []
        self.notes: list[str] = []
        self.children: list = []  # processes to kill whatever happens
        self.client = self.net = self.controller = None
        self.code = _out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])  # at start

    def start(self) -> None:
        args, work = self.args, self.workdir
        self.node = ensure_js()
        (work / "access.toml").write_text(issue7.ACCESS)
        # Defaults but for the state directory (a fresh store in this run's
        # folder, on disk) and the rate limits; metrics and the view stay on.
        self.controller = harness.ControllerProcess(
            harness.free_port(), log_path=work / "controller.log",
            extra_args=["--state-dir", str(work / "state"), "--access", str(work / "access.toml")])
        self.controller.wait_ready()
        print(f"controller pid {self.controller.proc.pid}", file=sys.stderr, flush=True)
        need = max(1 + args.load_clients, args.clients)
        access = max(2, math.ceil(need / 8))
        if access > 7:  # IspTopo's access switches are s2..s8
            raise SystemExit(f"{need} subscribers need more than 7 access switches")
        topo = topologies.IspTopo(access=access, subscribers_per_switch=math.ceil(need / access))
        self.net = harness.start_network(topo, self.controller.ofp_port)
        self.client = EnforcementClient(self.controller.grpc_address, timeout=120)
        switches, links = len(self.net.switches), 2 * (len(topo.links()) - len(self.net.hosts))
        harness.wait_until(lambda: len((t := self.client.topology()).switches) == switches
                           and len(t.links) >= links, 60, f"{switches} switches, {links} links")
        time.sleep(SETTLE_SECONDS)  # access ports teach no host before
        self.subscribers = [h for h in self.net.hosts if h.name.startswith("h")]
        for host in self.net.hosts:  # dual stack, as the main job (testbed/run.py)
            host.cmd(f"ip -6 addr add {self.v6(host)}/64 dev {host.defaultIntf()} nodad")
        harness.wait_until(self._located, 60, "every subscriber located, both families")
        self.where = f"{switches} switches, {len(self.subscribers)} subscribers, dual stack"

    @staticmethod
    def v6(host) -> str:
        return f"2001:db8::{host.IP().rsplit('.', 1)[1]}"

    def _located(self) -> bool:
        first, second = self.subscribers[:2]
        for host in self.net.hosts:
            peer = second if host is first else first
            host.cmd(f"ip neigh flush all; ping -c1 -W1 {peer.IP()} >/dev/null;"
                     f" ping -6 -c1 -W1 {self.v6(peer)} >/dev/null")
        known = {h.ip: set(h.ipv6) for h in self.client.topology().hosts}
        return all(self.v6(h) in known.get(h.IP(), ()) for h in self.subscribers)

    def stop(self) -> None:
        for child in self.children:
            with contextlib.suppress(Exception):
                child.kill()
        for step in ("client.close", "net.stop", "controller.stop"):
            with contextlib.suppress(Exception):
                operator.attrgetter(step)(self)()

    def calls(self, client: str, address: str, mode: str, count: int) -> dict:
        ip = self.subscribers[0].IP()
        if client == "python":
            result = _fleet(_py_calls, [(address, mode, count, ip)], self.children, 1)(3600)[0]
        else:
            result = js_calls(self.node, address, mode, count, ip)
        if result["failures"]:
            self.notes.append(f"{client} {mode} on {address}: {len(result['failures'])} failed "
                              f"calls, first: {result['failures'][0]}")
        return result

    def warm_up(self) -> None:
        """One decision: its flows per switch (for the OS-Ken floor), real answers (bare server)."""
        applied = self.client.apply_request(issue7.port_block(self.subscribers[0].IP(), 25, -1))
        lifted = self.client.lift(applied.id, "bench")
        per_switch = collections.Counter(rule.datapath_id for rule in applied.rules)
        self.flows = max(per_switch.values())
        self.decision = (f"{len(applied.rules)} rule(s) on {len(per_switch)} switch(es), "
                         f"{applied.ByteSize()}-byte answer")
        (self.workdir / "answers.json").write_text(json.dumps(
            {"apply": applied.SerializeToString().hex(), "lift": lifted.SerializeToString().hex()}))

    def measure_floors(self) -> None:
        args = self.args
        server, ready = floors._helper(self.children, "--serve-floor",
                                       str(self.workdir / "answers.json"), stdin=subprocess.PIPE)
        bare = (f"grpcio {grpc.__version__} stub servicer, {floors.SERVE_THREADS} threads, own "
                "process, loopback")
        address = f"127.0.0.1:{ready.split()[1]}"
        try:
            for client in ("python", "grpc-js"):
                found = {**self.calls(client, address, "apply", args.pairs),
                         "list": self.calls(client, address, "list", args.calls)["list"]}
                for kind, what in (("list", "trivial List (page_size 1)"),
                                   ("apply", "Apply answered at once (a real answer)"),
                                   ("lift", "Lift answered at once")):
                    self.floors[kind, client] = self._floor(
                        f"bare grpcio server: {what}, {client}", bare, found[kind])
        finally:
            server.stdin.close()
            server.wait(10)
        self._waiting_floor(bare)
        ofp = floors.measure_ofp_floor(args.pairs, self.flows, self.children)
        on = (f"OS-Ken {version('os-ken')} app, own process, one write + barrier; OVS "
              f"{_out(['ovs-vsctl', '--version']).split()[3]} bridge of its own (userspace)")
        self.floors["apply"] = self._floor(f"OS-Ken: {self.flows} flow_mod(s) (as one "
                                           "decision) + barrier", on, ofp["add"])
        self.floors["lift"] = self._floor("OS-Ken: their delete + barrier", on, ofp["delete"])
        self.fs = _out(["df", "--output=fstype,source", str(self.workdir)]).split("\n")[-1]
        self.floors["store"] = self._floor(
            "store commit: 1 record + 1 event + 1 audit entry, one transaction",
            f"enforcement/store/database.py, SQLite WAL synchronous=FULL, file on {self.fs}",
            floors.measure_store_floor(self.workdir / "state" / "enforcement.db",
                                self.workdir / "store-floor.db", args.pairs))

    def _waiting_floor(self, bare: str) -> None:
        """The bare server answering Apply after a sleep as long as a decision: what a
        call's transport costs when the client waits that long (on a VM, waking a
        sleeping thread costs more than one that just went to sleep). Not part of the
        composite floors, which add the parts' at-once figures; shown beside them."""
        server, ready = floors._helper(
            self.children, "--serve-floor", str(self.workdir / "answers.json"), "--delay-ms",
            str(WAIT_MS), stdin=subprocess.PIPE)
        try:
            found = self.calls("python", f"127.0.0.1:{ready.split()[1]}", "apply",
                               self.args.pairs)
        finally:
            server.stdin.close()
            server.wait(10)
        waited = self._floor(f"bare grpcio server: Apply answered after a {WAIT_MS:g} ms "
                             "sleep, python", bare, found["apply"])
        at_once = self.floors["apply", "python"]
        self.notes.append(
            f"waiting: an Apply the bare server answers after a {WAIT_MS:g} ms sleep takes "
            f"{waited['p50'] - WAIT_MS:.2f} ms more than the sleep (p50), against "
            f"{at_once['p50']:.2f} ms for one answered at once: on this machine a call "
            "that waits as long as a decision pays that much for its transport")

    def _floor(self, what: str, on: str, ms: list[float]) -> dict:
        self.floor_rows.append((what, on, summary(ms)))
        return self.floor_rows[-1][2]

    def composite(self, kind: str, client: str) -> tuple[float, float]:
        """A decision's steps once each, in a row: gRPC call, switch confirmation, commit."""
        parts = [self.floors[kind, client], self.floors[kind], self.floors["store"]]
        return sum(p["p50"] for p in parts), sum(p["p99"] for p in parts)

    def latency(self, conditions: str, with_list: bool = False, targeted: bool = True) -> None:
        address, ratio = self.controller.grpc_address, TARGETS["trivial_p99_ratio"]
        p50, p99 = TARGETS["apply_p50_ms"], TARGETS["apply_p99_ms"]
        for client in ("python", "grpc-js"):
            if with_list:
                stats = summary(self.calls(client, address, "list", self.args.calls)["list"])
                floor = self.floors["list", client]
                self.rows.append(("trivial List (page_size 1)", client, conditions, stats,
                                  (floor["p50"], floor["p99"]), f"p99 <= {ratio:g}x floor",
                                  VERDICT[stats["p99"] <= ratio * floor["p99"]]))
            result = self.calls(client, address, "apply", self.args.pairs)
            stats = summary(result["apply"])
            met = stats["p50"] <= p50 and stats["p99"] <= p99
            self.rows.append(("Apply (block TCP 25)", client, conditions, stats,
                              self.composite("apply", client), *(
                                  (f"p50 <= {p50:g} ms, p99 <= {p99:g} ms", VERDICT[met])
                                  if targeted else ("-", "-"))))
            self.rows.append(("Lift", client, conditions, summary(result["lift"]),
                              self.composite("lift", client), "-", "-"))

    def loaded(self) -> None:
        count = self.args.load_clients
        stop = multiprocessing.get_context("spawn").Event()
        gather = _fleet(functools.partial(_py_calls, stop=stop), [
            (self.controller.grpc_address, "apply", 0, h.IP())
            for h in self.subscribers[1:1 + count]], self.children, ready=count)
        time.sleep(1.0)  # every loader past its first calls
        watched, started = self._cpu(), time.perf_counter()
        self.latency(f"{self.where}; while {count} other clients (processes) apply and lift "
                     "on their own subscribers", targeted=False)
        cpu = self._cpu(watched, time.perf_counter() - started)
        stop.set()
        done = gather(120)
        failures = [f for d in done for f in d["failures"]]
        rate = sum(d["rate"] for d in done)
        self.notes.append(f"loaded: the {count} other clients made {rate:.0f} decisions/s "
                          f"meanwhile; CPU (of {os.cpu_count()} cores): {cpu}"
                          + (f"; their failures: {failures[0]}" if failures else ""))

    def throughput(self, clients: int, batch: int = 0) -> None:
        """The same worker fleet (clients, processes, seconds) against the bare grpcio
        server, then against the controller: a floor of the same kind, in the same run."""
        server, ready = floors._helper(
            self.children, "--serve-floor", str(self.workdir / "answers.json"), "--threads",
            str(FLEET_THREADS), stdin=subprocess.PIPE)
        try:  # the controller idles meanwhile, as the bare server does after
            floor, floor_cpu, floor_failures, _ = self._rate(
                f"127.0.0.1:{ready.split()[1]}", clients, batch, {"bare server": server.pid})
        finally:
            server.stdin.close()
            server.wait(10)
        rate, cpu, failures, seconds = self._rate(self.controller.grpc_address, clients, batch)
        target = TARGETS["batched_per_s" if batch else "unary_per_s"]
        how = f"ApplyBatch+LiftBatch of {batch}" if batch else "Apply+Lift"
        bare = (f"grpcio {grpc.__version__} stub servicer answering at once (canned real "
                f"answers), {FLEET_THREADS} threads, own process, loopback")
        floor_text, switch_text = f"{floor:.0f}/s", ""
        if batch:  # the other half of a batch's way: can the switch take that many?
            switch = floors.measure_ofp_floor(SWITCH_ROUNDS, self.flows, self.children,
                                              batch)["per_s"]
            floor_text = f"{floor:.0f}/s (gRPC), {switch:.0f}/s (switch)"
            floor = min(floor, switch)
            switch_text = (
                f". Switch floor: an OS-Ken {version('os-ken')} app of its own sending "
                f"{batch} decisions' flow_mods ({self.flows} each, serialized before the "
                f"clock starts) in one write + barrier, then their deletes the same way, "
                f"{SWITCH_ROUNDS} rounds, to an OVS bridge of its own (userspace)")
        self.rates.append((
            f"decisions/s, {clients} clients ({how})", (
                f"{self.where}; typed Python client, {min(clients, 4)} processes, {seconds:.0f} "
                f"s; CPU (of {os.cpu_count()} cores): {cpu}. Floor: the same clients, processes "
                f"and seconds just before, against a {bare}; CPU: {floor_cpu}{switch_text}"),
            f"{rate:.0f}/s", floor_text, f"x{rate / floor:.2f}" if floor else "-",
            f">= {target:g}/s", VERDICT[rate >= target]))
        for failed, where in ((floor_failures, "the bare server"), (failures, "the controller")):
            if failed:
                self.notes.append(f"{clients} clients ({how}) on {where}: failed calls, "
                                  f"first: {failed[0]}")

    def _rate(self, address: str, clients: int, batch: int, pids: dict | None = None):
        """bench.py's worker, each client its own connection and subscriber, in 4
        processes at most: decisions/s, the CPU of `pids` (the controller's by
        default) while they ran, their failures, the seconds they ran."""
        ips = [h.IP() for h in self.subscribers]
        processes = min(clients, 4)
        start_at = time.time() + 5.0  # time for the workers to start and connect
        gather = _fleet(functools.partial(issue7._client_process, batch=batch), [(
            address, [(i, ips[i]) for i in range(p, clients, processes)],
            start_at, self.args.seconds) for p in range(processes)], self.children)
        time.sleep(max(0.0, start_at + 0.5 - time.time()))
        span, watched = max(0.5, self.args.seconds - 1.5), self._cpu(pids=pids)
        time.sleep(span)
        cpu = self._cpu(watched, span, pids)
        done = gather(self.args.seconds + 300)
        seconds = max(d[2] for d in done)
        return (sum(d[0] for d in done) / seconds, cpu, [f for d in done for f in d[1]],
                seconds)

    def live(self, count: int) -> None:
        ips = [h.IP() for h in self.subscribers]
        # One TCP port each (no two share a rule); bench.py's installer, 4 x 8 connections.
        jobs = [(ips[n % len(ips)], 1000 + n // len(ips), n) for n in range(count)]
        started = time.perf_counter()
        done = _fleet(issue7._install_process, [(
            self.controller.grpc_address, jobs[p::4], 8) for p in range(4)], self.children)(7200)
        seconds = time.perf_counter() - started
        installed = sum(d[0] for d in done)
        failures = [f for d in done for f in d[1]]
        flows = sum(int(harness.ofctl("dump-aggregate", s.name).split("flow_count=")[1].split()[0])
                    for s in self.net.switches)
        with contextlib.closing(sqlite3.connect(f"file:{self.workdir}/state/enforcement.db?mode=ro",
                                                uri=True)) as db:  # every List reads them all
            held = db.execute("SELECT count(*) FROM enforcements").fetchone()[0]
        self.notes.append(f"live: {installed} enforcements installed by Apply from 32 clients "
                          f"in {seconds:.0f} s ({installed / seconds:.0f}/s), {flows} flows on the "
                          f"switches, {held} records (live and ended) in the controller"
                          + (f"; failures: {failures[0]}" if failures else ""))
        self.latency(f"{self.where}; {installed} live enforcements", with_list=True)

    def follow(self, count: int) -> None:
        """A subscriber with `count` more live enforcements shows a new IPv6 address, and
        they all follow it (re-planned, pushed, stored) while the typed Python client
        applies and lifts on another subscriber: how long a decision waits meanwhile."""
        mover, ip = self.subscribers[-1], self.subscribers[0].IP()
        jobs = [(mover.IP(), 40000 + n, 10**7 + n) for n in range(count)]  # ports of its own
        _fleet(issue7._install_process, [(self.controller.grpc_address, jobs[p::4], 8)
                                         for p in range(4)], self.children)(7200)
        live = len(self.client.list(subscriber_ip=mover.IP(), states=("active",)))
        log = self.workdir / "controller.log"
        before, pairs, stop = log.read_text().count("planned again"), [], threading.Event()

        def decide():
            with EnforcementClient(self.controller.grpc_address, timeout=120) as ctl:
                n = 0
                while not stop.is_set():
                    begin = time.perf_counter()
                    try:
                        record = ctl.apply_request(issue7.port_block(ip, 25, 2 * 10**7 + n))
                        applied = time.perf_counter()
                        ctl.lift(record.id, "bench")
                    except Exception as exc:  # reported; the row then counts fewer calls
                        self.notes.append(f"follow: a call failed: {exc}")
                        return
                    pairs.append((begin, applied, time.perf_counter()))
                    n += 1
        thread = threading.Thread(target=decide, daemon=True)
        thread.start()
        time.sleep(1.0)  # its first calls made
        started = time.perf_counter()
        mover.cmd(f"ip -6 addr add 2001:db8::f0:1/64 dev {mover.defaultIntf()} nodad; "
                  f"ping -6 -c3 -i0.2 -I 2001:db8::f0:1 {self.v6(self.subscribers[0])} >/dev/null")
        harness.wait_until(lambda: log.read_text().count("planned again") - before >= live,
                           600, f"{live} enforcements following {mover.IP()}")
        took = time.perf_counter() - started
        stop.set()
        thread.join(60)
        during = [p for p in pairs if p[0] >= started and p[2] <= started + took]
        conditions = (f"{self.where}; while another subscriber's {live} live enforcements "
                      f"follow it to a new address ({took:.1f} s)")
        for kind, part in (("apply", ((a, b) for a, b, _ in during)),
                           ("lift", ((b, c) for _, b, c in during))):
            self.rows.append((("Apply (block TCP 25)" if kind == "apply" else "Lift"), "python",
                              conditions, summary([(e - b) * 1e3 for b, e in part]),
                              self.composite(kind, "python"), "-", "-"))

    def _cpu(self, before: dict | None = None, span: float = 0.0, pids: dict | None = None):
        pids = pids or {"controller": self.controller.proc.pid,
                        "ovs-vswitchd": issue7.vswitchd_pid()}
        now = {k: issue7.cpu_seconds(p) for k, p in pids.items()}
        return now if before is None else ", ".join(
            f"{k} {100 * (now[k] - before[k]) / span:.0f}%" for k in now)

    def report(self) -> str:
        cpu = _out(["sed", "-n", "s/^model name\\s*: //p;T;q", "/proc/cpuinfo"])
        grpc_js = _out([self.node, "-p", "require('@grpc/grpc-js/package.json').version"], JS)
        lines = [
            (f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"grpcio {grpc.__version__}, Node {_out([self.node, '--version'])} with "
            f"@grpc/grpc-js {grpc_js}; 1-minute load average at start and end: "
            f"{', '.join(f'{x:.2f}' for x in self.loads)}; "
            f"code {self.code}; {time.strftime('%Y-%m-%d %H:%M %Z')}."), "",
            (f"Controller on its defaults (discovery, drift audit every 10 s, SQLite store on "
            f"{self.fs}, metrics and view on), rate limits raised; {self.where}. One "
            f"decision: {self.decision}. Milliseconds; the first {WARMUP} calls of each "
            "series are not counted."), "",
            "| floor | measured on | n | p50 | p99 | max |", "|---" * 6 + "|",
            *(f"| {what} | {on} | {_cells(s)} |" for what, on, s in self.floor_rows), "",
            ("| call | client | measured on | n | p50 | p99 | max | floor p50 / p99 | ratio p50 "
            "/ p99 | target | result |"), "|---" * 11 + "|"]
        for call, client, on, s, floor, target, result in self.rows:
            ratio = f"x{s['p50'] / floor[0]:.2f} / x{s['p99'] / floor[1]:.2f}" if s["n"] else "-"
            lines.append(f"| {call} | {client} | {on} | {_cells(s)} | {floor[0]:.2f} / "
                         f"{floor[1]:.2f} | {ratio} | {target} | {result} |")
        lines += ["", "| throughput | measured on | measured | floor | ratio | target | result |",
                  "|---" * 7 + "|", *(f"| {' | '.join(r)} |" for r in self.rates), "",
                  ("- An Apply's (Lift's) floor: the bare server's Apply (Lift) for the same "
                  "client + the OS-Ken flow_mods (delete) + the store commit, percentile by "
                  "percentile."),
                  ("- A throughput's floor: the same worker fleet against the bare grpcio "
                   "server (no switch, no store), just before the controller's run; for "
                   "batches, also the switch's own rate for batches of that size (no gRPC, "
                   "no store), and the ratio is to the lower of the two."),
                  *(f"- {note}" for note in self.notes)]
        return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--pairs", type=int, default=300, help="Apply+Lift pairs per series (300)")
    add("--calls", type=int, help="trivial Lists per series (500; --pairs with --quick)")
    add("--load-clients", type=int, default=8, help="the loaded run's other clients (8)")
    add("--clients", type=int, default=32, help="throughput clients, unary and batched (32)")
    add("--batch", type=int, default=64, help="decisions per ApplyBatch (64)")
    add("--seconds", type=float, default=10.0, help="each throughput run (10)")
    add("--live", type=int, default=10000, help="live enforcements at the end (10000)")
    add("--follow", type=int, default=10000,
        help="live enforcements of a subscriber that shows a new address, at the end (10000)")
    add("--quick", action="store_true", help="2 loaders, 4 clients for 1 s, 100 live and follow")
    args = parser.parse_args(argv)
    if args.quick:
        args.load_clients, args.clients, args.batch, args.seconds = 2, 4, 8, 1.0
        args.live = args.follow = 100
    args.calls = args.calls or (args.pairs if args.quick else 500)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch and Mininet)")
    # On disk, as the controller's default state directory is (/tmp may be tmpfs).
    with open(issue7.LOCK_PATH, "w") as lock, \
            tempfile.TemporaryDirectory(prefix="latency-", dir="/var/tmp") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        harness.cleanup()
        bench = LatencyBench(args, pathlib.Path(tmp))
        try:
            bench.start()
            bench.warm_up()
            bench.measure_floors()
            bench.latency(f"{bench.where}; idle", with_list=True)
            bench.loaded()
            bench.throughput(args.clients)
            bench.throughput(args.clients, batch=args.batch)
            if args.live:
                bench.live(args.live)
            if args.follow:
                bench.follow(args.follow)
            bench.loads.append(os.getloadavg()[0])
        finally:
            bench.stop()
            harness.cleanup()
        print(bench.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
