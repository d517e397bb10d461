"""The controller's speed, against the switch's own floor, in one run.

Runs the real controller process, a real Open vSwitch switch with Mininet
hosts (one per client), and the typed client over gRPC; prints a Markdown
table. Run as root, on demand (not a test; tests/e2e/test_bench_smoke.py runs
a tiny version so that it cannot rot):

    sudo .venv/bin/python bench/bench.py                      # the full run
    sudo .venv/bin/python bench/bench.py --decisions 50 --seconds 2 \\
        --clients 1,2 --reconcile 200 --hosts 4               # a quick look

What is measured:
- latency: Apply sent -> answer received, the answer coming only after the
  switch confirmed the rules with a barrier (p50, p99, max);
- throughput: Apply and Lift calls per second (each confirmed by the switch)
  with 1, 8, 32 concurrent clients, each on its own connection and subscriber;
- reconcile: a switch holding K enforcements reconnects (the control channel
  is cut and restored, so OVS keeps its flows): time until the controller has
  reconciled it (counted, re-added in place, counted again), and again after
  the switch lost every enforcement flow (all K re-installed); plus
  controller memory per 10,000 enforcements;
- the floor, same run, same switch: the same flows installed by
  `ovs-ofctl -O OpenFlow14 --bundle add-flows` from a file (for latency, one
  decision's flows per ovs-ofctl run; for throughput, 1,000 decisions' flows
  in one bundle; for reconcile, all N flows in one bundle).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import multiprocessing
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time

from controller.topology.settling import SETTLE_SECONDS
from enforcement.clients.client import EnforcementClient
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies

LOCK_PATH = "/run/lock/sdn-enforcement-mininet.lock"
ENFORCE_COOKIE = "0x5de0000000000000/0xffff000000000000"
TARGETS = {"p99_ms": 10.0, "decisions_per_s": 2000.0, "reconcile_ratio": 3.0}
# The bench measures the controller, not the guard: lift the per-client caps.
ACCESS = """
[limits]
requests_per_second = 1000000
burst = 1000000
max_in_flight = 1000
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process (all its threads) has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vswitchd_pid() -> int:
    return int(pathlib.Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text())


def ofctl(*args: str) -> str:
    return subprocess.run(["ovs-ofctl", *args], capture_output=True, text=True,
                          check=True).stdout


def enforcement_flows(switch: str) -> list[str]:
    """The switch's enforcement flows in ovs-ofctl's own syntax, stats removed."""
    out = ofctl("-O", "OpenFlow14", "--no-stats", "dump-flows", switch,
                f"cookie={ENFORCE_COOKIE}")
    return [line.strip() for line in out.splitlines()
            if line.strip() and not line.startswith(("OFPST", "NXST"))]


def bundle_add(switch: str, flows: list[str], workdir: pathlib.Path) -> float:
    """Seconds for ovs-ofctl to install flows from a file in one bundle."""
    path = workdir / "flows.txt"
    path.write_text("\n".join(flows) + "\n")
    started = time.perf_counter()
    ofctl("-O", "OpenFlow14", "--bundle", "add-flows", switch, str(path))
    return time.perf_counter() - started


def delete_enforcement_flows(switch: str) -> None:
    ofctl("-O", "OpenFlow14", "del-flows", switch, f"cookie={ENFORCE_COOKIE}")


def spam(ip: str, n: int) -> pb.ApplyRequest:
    return pb.ApplyRequest(request_id=f"bench-{n}-{time.monotonic_ns()}", case_id="BENCH",
                           subscriber=pb.Subscriber(ip=ip), violation=pb.VIOLATION_SPAM,
                           reason="bench")


def port_block(ip: str, port: int, n: int) -> pb.ApplyRequest:
    """A spam decision with the action given (block one TCP port), so that
    repeats do not climb the escalation ladder and every decision costs the
    same; with distinct ports, no two decisions share a rule."""
    request = spam(ip, n)
    request.action.CopyFrom(pb.ActionRequest(kind=pb.ACTION_KIND_BLOCK, protocol="tcp",
                                             ports=[port]))
    return request


def _stamp(line: str) -> float:
    """Seconds of a controller log line's timestamp (2026-11-25 04:10:11,123)."""
    import datetime
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _client_process(address: str, clients: list[tuple[int, str]], start_at: float,
                    seconds: float, results, batch: int = 0) -> None:
    """Client threads of one worker process: each its own connection and
    subscriber, Apply then Lift in a loop from start_at for `seconds`; with
    batch, ApplyBatch of that many decisions (one TCP port each) then
    LiftBatch of them."""
    counts = [0] * len(clients)
    failures: list[str] = []

    def run(slot: int, i: int, ip: str) -> None:
        # Its own TCP connection, as separate case-system workers would have.
        with EnforcementClient(address, timeout=60,
                               channel_options=[("grpc.use_local_subchannel_pool", 1)]) as ctl:
            ctl.topology()  # connected before the clock starts
            time.sleep(max(0.0, start_at - time.time()))
            n = 0
            while time.time() < start_at + seconds:
                try:
                    if batch:
                        answers = ctl.apply_batch([port_block(ip, 1000 + k, i * 10**6 + n + k)
                                                   for k in range(batch)])
                        refused = [a.message for a in answers if a.code]
                        if refused:
                            raise RuntimeError(refused[0])
                        ctl.lift_batch([a.enforcement.id for a in answers], "bench")
                        counts[slot] += 2 * batch
                        n += batch
                        continue
                    record = ctl.apply_request(port_block(ip, 25, i * 10**6 + n))
                    ctl.lift(record.id, "bench")
                except Exception as exc:  # reported, the run goes on
                    failures.append(str(exc))
                    continue
                counts[slot] += 2
                n += 1

    threads = [threading.Thread(target=run, args=(slot, i, ip))
               for slot, (i, ip) in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((sum(counts), failures[:5], time.time() - start_at))


def _install_process(address: str, jobs: list, threads: int, results) -> None:
    """Applies (ip, port, n) port blocks over `threads` connections."""
    done, failures = [0], []

    def run(part: list) -> None:
        with EnforcementClient(address, timeout=600) as ctl:
            for ip, port, n in part:
                try:
                    ctl.apply_request(port_block(ip, port, n))
                    done[0] += 1
                except Exception as exc:  # reported, the install goes on
                    failures.append(str(exc))

    workers = [threading.Thread(target=run, args=(jobs[t::threads],)) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    results.put((done[0], failures[:5]))


class Bench:
    def __init__(self, args, workdir: pathlib.Path,
                 controller_args: tuple[str, ...] = ("--metrics-listen", "off"),
                 access: str = ACCESS, tls=None):
        """controller_args: added to the controller's command line; access:
        its access file; tls: the client's TlsFiles when it serves mutual TLS."""
        self.args = args
        self.workdir = workdir
        self.controller_args = controller_args
        self.access = access
        self.tls = tls
        self.rows: list[tuple[str, str, str, str]] = []
        self.notes: list[str] = []

    def row(self, what: str, measured: str, floor: str = "", verdict: str = "") -> None:
        self.rows.append((what, measured, floor, verdict))
        print(f"  {what}: {measured} {('| floor ' + floor) if floor else ''} {verdict}",
              file=sys.stderr, flush=True)

    # ---- set-up ----------------------------------------------------------------------

    def start(self) -> None:
        (self.workdir / "access.toml").write_text(self.access)
        self.controller = harness.ControllerProcess(
            harness.free_port(), log_path=self.workdir / "controller.log",
            extra_args=["--db", f"sqlite:///{self.workdir}/bench.db",
                        "--audit-interval", "0", "--switch-timeout", "120",
                        "--access", str(self.workdir / "access.toml"),
                        "--log-level", "INFO", *self.controller_args])
        self.controller.wait_ready()
        self.proxy = harness.ControlProxy(self.controller.ofp_port)
        self.net = harness.start_network(
            topologies.SingleSwitchTopo(hosts=self.args.hosts), self.proxy.port,
            protocols="OpenFlow13,OpenFlow14")
        self.client = EnforcementClient(self.controller.grpc_address, timeout=180,
                                        tls=self.tls)
        harness.wait_until(lambda: len(self.client.topology().switches) == 1, 30,
                           "the switch to connect")
        ips = {h.IP() for h in self.net.hosts}

        def located() -> bool:
            # Ports learn no host while they settle (controller/topology/settling.py);
            # ARP always reaches the controller, with the sender's address.
            first = self.net.hosts[0].IP()
            for host in self.net.hosts[1:]:
                host.cmd(f"ip neigh flush all; ping -c1 -W1 {first} >/dev/null")
            self.net.hosts[0].cmd(f"ping -c1 -W1 {self.net.hosts[1].IP()} >/dev/null")
            return ips <= {h.ip for h in self.client.topology().hosts}

        time.sleep(SETTLE_SECONDS)
        harness.wait_until(located, 30, "every host located")

    def batching(self) -> None:
        """Group commit at work, from the controller's 10-second log lines."""
        log = self.workdir / "controller.log"
        lines = [line.split(": ", 1)[-1].strip() for line in log.read_text().splitlines()
                 if "batch(es) in the last 10 s" in line]
        if lines:
            self.notes.append("group commit (controller log, per 10 s): "
                              + "; ".join(lines[-6:]))

    def stop(self) -> None:
        for step in (lambda: self.client.close(), lambda: self.net.stop(),
                     lambda: self.proxy.close(), lambda: self.controller.stop()):
            with contextlib.suppress(Exception):
                step()

    # ---- latency ---------------------------------------------------------------------

    def latency(self) -> None:
        ips = [h.IP() for h in self.net.hosts]
        latencies, lift_latencies = [], []
        one_decision_flows = None
        for n in range(self.args.decisions):
            request = port_block(ips[n % len(ips)], 25, n)
            started = time.perf_counter()
            record = self.client.apply_request(request)
            latencies.append(time.perf_counter() - started)
            if record.state != pb.STATE_ACTIVE:
                raise RuntimeError(f"decision {n} not active: {record.state_reason}")
            if one_decision_flows is None:
                one_decision_flows = enforcement_flows("s1")
            started = time.perf_counter()
            self.client.lift(record.id, "bench")
            lift_latencies.append(time.perf_counter() - started)
        floor = []
        for _ in range(min(100, self.args.decisions)):
            floor.append(bundle_add("s1", one_decision_flows, self.workdir))
            delete_enforcement_flows("s1")
        self.bulk_floor_rate = self._bulk_floor(one_decision_flows)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        f50, f99 = percentile(floor, 50), percentile(floor, 99)
        ms = lambda s: f"{s * 1000:.2f} ms"  # noqa: E731
        target = TARGETS["p99_ms"] / 1000
        self.row(f"Apply latency p50 ({len(latencies)} decisions)", ms(p50), ms(f50),
                 f"x{p50 / f50:.2f}")
        self.row("Apply latency p99", ms(p99), ms(f99),
                 f"x{p99 / f99:.2f}; target <= {TARGETS['p99_ms']:g} ms: "
                 + ("met" if p99 <= target else "NOT met"))
        self.row("Apply latency max", ms(max(latencies)), ms(max(floor)))
        self.row("Lift latency p50 / p99", f"{ms(percentile(lift_latencies, 50))} / "
                 f"{ms(percentile(lift_latencies, 99))}")
        self.floor_per_decision = f50

    def _bulk_floor(self, decision_flows: list[str], count: int = 1000) -> float:
        """Decisions per second the switch itself takes when handed the flows
        of `count` decisions (one TCP port each) in one bundle from a file."""
        if not any("tp_dst=25" in line for line in decision_flows):
            raise RuntimeError(f"unexpected decision flows: {decision_flows}")
        flows = [line.replace("tp_dst=25", f"tp_dst={1000 + n}")
                 for n in range(count) for line in decision_flows]
        seconds = bundle_add("s1", flows, self.workdir)
        delete_enforcement_flows("s1")
        return count / seconds

    # ---- throughput --------------------------------------------------------------------

    def throughput(self, clients: int, batch: int = 0) -> None:
        ips = [h.IP() for h in self.net.hosts]
        if clients > len(ips):
            raise ValueError(f"{clients} clients need --hosts >= {clients}")
        # The clients run in processes of their own (a case system is another
        # machine): in this process their threads would fight the control
        # channel relay for the GIL and slow the switch's answers.
        processes = min(clients, self.args.client_processes)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        start_at = time.time() + 3.0  # time for the workers to start and connect
        workers = [context.Process(target=_client_process, args=(
            self.controller.grpc_address, [(i, ips[i]) for i in range(p, clients, processes)],
            start_at, self.args.seconds, results, batch)) for p in range(processes)]
        for worker in workers:
            worker.start()
        name = f"throughput-{clients}" + (f"-batch{batch}" if batch else "")
        profiler = self._profile(name, start_at)
        # Where the machine's CPU goes during the run: the controller, the
        # switch, the clients.
        time.sleep(max(0.0, start_at + 0.5 - time.time()))
        watched = {"controller": [self.controller.proc.pid], "ovs-vswitchd": [vswitchd_pid()],
                   "clients": [w.pid for w in workers], "relay": [os.getpid()]}
        before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in watched.items()}
        sampled = time.time()
        time.sleep(max(0.5, self.args.seconds - 1.5))
        used = {k: sum(cpu_seconds(p) for p in pids) - before[k] for k, pids in watched.items()}
        span = time.time() - sampled
        counts, failures, elapsed = 0, [], []
        for _ in workers:
            done, failed, seconds = results.get(timeout=self.args.seconds + 120)
            counts += done
            failures += failed
            elapsed.append(seconds)
        for worker in workers:
            worker.join(30)
        if profiler is not None:
            profiler.wait(60)
        seconds = max(elapsed)
        rate = counts / seconds
        floor_rate = self.bulk_floor_rate
        target = TARGETS["decisions_per_s"]
        how = (f"ApplyBatch+LiftBatch of {batch}" if batch else "Apply+Lift")
        self.row(f"decisions/s, {clients} client(s) ({how}, {seconds:.0f} s)",
                 f"{rate:.0f}/s", f"{floor_rate:.0f}/s",
                 f"x{rate / floor_rate:.3f}; target >= {target:g}/s: "
                 + ("met" if rate >= target else "NOT met"))
        self.notes.append(f"{clients} client(s){' batched' if batch else ''}: CPU during the "
                          f"run (of {os.cpu_count()} cores): "
                          + ", ".join(f"{k} {100 * v / span:.0f}%" for k, v in used.items()))
        if failures:
            self.notes.append(f"{clients} clients: {len(failures)} failed calls, "
                              f"first: {failures[0]}")

    def _profile(self, name: str, start_at: float):
        """py-spy on the controller while the clients run (--profile DIR):
        samples of the thread holding the GIL, as collapsed stacks."""
        if not self.args.profile:
            return None
        out = pathlib.Path(self.args.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        time.sleep(max(0.0, start_at - time.time()))
        return subprocess.Popen(
            [str(pathlib.Path(sys.executable).with_name("py-spy")), "record", "--gil",
             "--format", "raw", "--rate", "200", "--duration",
             str(max(1, int(self.args.seconds) - 1)), "--output", str(out),
             "--pid", str(self.controller.proc.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    # ---- reconcile and memory -----------------------------------------------------------

    def reconcile(self, count: int, last: bool = False) -> None:
        ips = [h.IP() for h in self.net.hosts]
        baseline = rss_mib(self.controller.proc.pid)
        started = time.perf_counter()
        # Spread over client processes, 8 connections each (see throughput()).
        processes = self.args.client_processes
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        jobs = [(ips[n % len(ips)], 1 + n // len(ips), n) for n in range(count)]
        workers = [context.Process(target=_install_process, args=(
            self.controller.grpc_address, jobs[p::processes], 8, results))
            for p in range(processes)]
        for worker in workers:
            worker.start()
        installed = 0
        for _ in workers:
            done, failed = results.get(timeout=3600)
            installed += done
            if failed:
                raise RuntimeError(f"install failed: {failed[0]}")
        for worker in workers:
            worker.join(30)
        install_s = time.perf_counter() - started
        held = len(enforcement_flows("s1"))
        memory = rss_mib(self.controller.proc.pid) - baseline
        self.row(f"install {count} enforcements ({processes * 8} clients)", f"{install_s:.1f} s "
                 f"({count / install_s:.0f}/s), {held} flows on the switch")
        self.row(f"controller memory per 10,000 enforcements (at {count})",
                 f"{memory * 10000 / count:.1f} MiB")

        # (a) the switch still holds everything
        holding, holding_total = self._reconnect(lambda: None)
        # (b) the switch lost every enforcement flow while away
        wiped, wiped_total = self._reconnect(lambda: delete_enforcement_flows("s1"))
        if len(enforcement_flows("s1")) != held:
            raise RuntimeError("reconcile did not restore every flow")
        flows = enforcement_flows("s1")
        delete_enforcement_flows("s1")
        floor = bundle_add("s1", flows, self.workdir)
        ratio = wiped / floor
        self.row(f"reconcile {count}: switch reconnects holding all "
                 "(count, re-add in place, count)",
                 f"{holding:.2f} s ({holding_total:.2f} s from channel restored)",
                 f"{floor:.2f} s", f"x{holding / floor:.2f}")
        self.row(f"reconcile {count}: switch reconnects having lost all (count, re-install)",
                 f"{wiped:.2f} s ({wiped_total:.2f} s from channel restored)",
                 f"{floor:.2f} s", f"x{ratio:.2f}; target <= x{TARGETS['reconcile_ratio']:g}: "
                 + ("met" if ratio <= TARGETS["reconcile_ratio"] else "NOT met"))
        if last:
            return
        # Leave an empty controller for whatever comes next.
        for record in self.client.list(case_id="BENCH", states=("active",)):
            self.client.lift(record.id, "bench")

    def _reconnect(self, while_away) -> tuple[float, float]:
        """(the controller's own reconcile time, from its log line; the time
        from the control channel restored to that line, which adds OVS's
        reconnect back-off and the OpenFlow handshake)."""
        log = self.workdir / "controller.log"
        seen = log.read_text().count("reconciled in")
        self.proxy.cut()
        harness.wait_until(lambda: not self.client.topology().switches, 30,
                           "the switch to disconnect")
        while_away()
        started = time.perf_counter()
        self.proxy.restore()
        harness.wait_until(lambda: log.read_text().count("reconciled in") > seen, 600,
                           "the reconcile", interval=0.01)
        total = time.perf_counter() - started
        # From the OpenFlow session up (the controller's "connected" line) to
        # "reconciled": base pipeline, reading the switch's flows and meters,
        # the diff and the pushes, each confirmed by a barrier.
        stamps = [(_stamp(line), line) for line in log.read_text().splitlines()
                  if " connected" in line or "reconciled in" in line]
        done = [t for t, line in stamps if "reconciled in" in line][seen]
        up = max(t for t, line in stamps if " connected" in line and t <= done)
        return done - up, total

    # ---- output ------------------------------------------------------------------------

    def report(self) -> str:
        cpu = next((line.split(":", 1)[1].strip()
                    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.machine())
        mem = int(re.search(r"MemTotal:\s+(\d+)", pathlib.Path("/proc/meminfo")
                            .read_text()).group(1)) // 1024 // 1024
        ovs = ofctl("--version").splitlines()[0]
        lines = [(f"Machine: {os.cpu_count()} cores ({cpu}), {mem} GiB, {ovs} (userspace "
                  f"datapath), Python {platform.python_version()}, SQLite store."), "",
                 "| measure | controller | floor (ovs-ofctl --bundle) | ratio / target |",
                 "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each throughput run")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--reconcile", default="10000",
                        help="comma-separated enforcement counts (e.g. 10000,100000)")
    parser.add_argument("--hosts", type=int, default=32)
    parser.add_argument("--client-processes", type=int, default=4,
                        help="processes the throughput clients are spread over")
    parser.add_argument("--batch", type=int, default=64,
                        help="decisions per ApplyBatch/LiftBatch call in the batched runs")
    parser.add_argument("--batch-clients", default="1,8,32",
                        help="client counts of the batched throughput runs ('' for none)")
    parser.add_argument("--profile", metavar="DIR",
                        help="record py-spy profiles of the controller into DIR")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch and Mininet)")
    clients = [int(c) for c in args.clients.split(",") if c]
    batch_clients = [int(c) for c in args.batch_clients.split(",") if c]
    counts = [int(c) for c in args.reconcile.split(",") if c]
    with open(LOCK_PATH, "w") as lock, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        harness.cleanup()
        bench = Bench(args, pathlib.Path(tmp))
        try:
            bench.start()
            bench.latency()
            for n in clients:
                bench.throughput(n)
            for n in batch_clients:
                bench.throughput(n, batch=args.batch)
            for i, n in enumerate(counts):
                bench.reconcile(n, last=i == len(counts) - 1)
            bench.batching()
        finally:
            bench.stop()
            harness.cleanup()
        print(bench.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
