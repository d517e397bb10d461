"""The control plane under a flood: the controller against Open vSwitch's own
packet-in rate limit, in one run.

The real controller process, Open vSwitch (userspace datapath) and Mininet
hosts; one host floods with mininet/flood.py. Run as root, on demand:

    sudo .venv/bin/python bench/control_plane.py                     # 10 s floods
    sudo .venv/bin/python bench/control_plane.py --flood-seconds 20 \\
        --out bench/results/DATE-control-plane.md

1. Packet-in capacity (SingleSwitchTopo, h1 sending every frame from a new
   source MAC): packet-ins handled and dropped per second (the controller's
   Prometheus counters) and what the switch did with the frames; budgets
   raised (the controller is the limit), only the switch-wide cap, defaults.
2. A flood on LinearTopo(3, 2) from h1 on s1 (random source MACs, then a
   known source's broadcast/unknown unicast) against ours, ours without Open
   vSwitch's limit, and Open vSwitch's limit alone: what bystanders, Apply, a
   new host and the controller see.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

from controller.openflow.dataplane import meter_port
from controller.topology.settling import SETTLE_SECONDS
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness
from testbed import topologies
from testbed.capture import Capture

LOCK_PATH = "/run/lock/sdn-enforcement-mininet.lock"  # tests/e2e/conftest.py
FLOODER = harness.HOST_SCRIPTS / "flood.py"
# Budgets so high that no meter or learning guard of ours ever acts.
PORT_BUDGETS_OFF = ("--learn-pps", "1000000", "--learn-ban", "100000000",
                    "--max-hosts-per-port", "100000000")
METERS_OFF = (*PORT_BUDGETS_OFF, "--controller-pps", "1000000")
OVS_ALONE = (*METERS_OFF, "--storm-pps", "1000000")
# Open vSwitch's limit on a Controller record: a tuple of settings to set,
# () to clear it, HARNESS to keep what start_network set (the project's way).
OVS_LIMIT = ("controller_rate_limit=1000", "controller_burst_limit=250")
HARNESS = None
CAPACITY_SETUPS = (  # (row, controller arguments, Open vSwitch's limit)
    ("every budget raised (`" + " ".join(METERS_OFF) + "`), no OVS limit", METERS_OFF, ()),
    ("per-port budgets raised, switch-wide cap 1000/s, no OVS limit", PORT_BUDGETS_OFF, ()),
    ("defaults, OVS limit as the harness sets it", (), HARNESS))
FLOOD_SETUPS = (  # (column, controller arguments, Open vSwitch's limit)
    ("ours (defaults, harness's OVS limit)", (), HARNESS),
    ("ours without OVS's limit", (), ()),
    ("OVS's limit alone", OVS_ALONE, OVS_LIMIT))
PROBLEM = re.compile(r" ERROR |Traceback|OFPET_")


def vsctl(*args: str) -> str:
    return subprocess.run(["ovs-vsctl", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def controller_records(switch: str) -> list[str]:
    return re.findall(r"[0-9a-f-]{36}", vsctl("get", "bridge", switch, "controller"))


def set_ovs_limit(net, limit) -> None:
    """Sets or clears the limit on every Controller record (read by the
    switch without dropping its connection or its flows)."""
    for uuid in (u for switch in net.switches for u in controller_records(switch.name)):
        if limit:
            vsctl("set", "controller", uuid, *limit)
        else:
            vsctl("clear", "controller", uuid, "controller_rate_limit",
                  "controller_burst_limit")


def ovs_status(net) -> dict[str, tuple[str, bool]]:
    """Per switch: its Controller record's limit, and whether it ever lost
    the controller (Open vSwitch refreshes that every few seconds)."""
    out = {}
    for switch in net.switches:
        uuid = controller_records(switch.name)[0]  # the harness gives each one
        rate, burst, status = vsctl("get", "controller", uuid, "controller_rate_limit",
                                    "controller_burst_limit", "status").splitlines()
        out[switch.name] = ("none" if rate == "[]" else f"{rate}/s burst {burst}",
                            "sec_since_disconnect" in status)
    return out


class Lab:
    """A controller and a started network, brought up like the e2e fixture
    (tests/e2e/conftest.py) does; stop() takes down whatever got started."""

    def __init__(self, workdir: pathlib.Path, name: str, args=()):
        self.name = name
        slug = re.sub(r"[^\w.-]+", "-", name)
        self.log_path = workdir / f"{slug}.log"
        self.net = self.channel = None
        self.controller = harness.ControllerProcess(
            harness.free_port(), log_path=self.log_path,
            # A store of its own: the checkout's enforcement.db stays untouched.
            extra_args=["--db", f"sqlite:///{workdir}/{slug}.db", *args])

    def start(self, topo, links: int, ovs_limit) -> None:
        self.controller.wait_ready()
        self.net = harness.start_network(topo, self.controller.ofp_port)
        if ovs_limit is not HARNESS:
            set_ovs_limit(self.net, ovs_limit)
        harness.wait_switches_connected(self.net)
        self.channel = grpc.insecure_channel(self.controller.grpc_address)
        self.stub = pb_grpc.EnforcementServiceStub(self.channel)
        harness.wait_until(lambda: len(self.topology().links) >= links, 30, f"{links} links")
        time.sleep(SETTLE_SECONDS)  # access ports flood nothing until settled
        if self.net.pingAll(timeout=2):
            raise RuntimeError(f"{self.name}: loss between the hosts before any flood")
        ips = {h.IP() for h in self.net.hosts}
        harness.wait_until(lambda: ips <= {h.ip for h in self.topology().hosts}, 10,
                           "every host located")

    def topology(self):
        return self.stub.GetTopology(pb.GetTopologyRequest(), timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def packet_ins(self) -> dict[str, float]:
        """The controller's packet-in counters and queue, from its metrics."""
        url = f"http://{self.controller.metrics_address}/metrics"
        text = urllib.request.urlopen(url, timeout=30).read().decode()
        found = {m[1]: float(m[2]) for m in re.finditer(
            r'^openflow_packet_ins_total\{outcome="(\w+)"\} (\S+)', text, re.MULTILINE)}
        queue = re.search(r"^openflow_packet_in_queue (\S+)", text, re.MULTILINE)
        found["queue"] = float(queue[1]) if queue else 0.0
        return found

    def stop(self) -> None:
        for step in (lambda: self.channel.close(), lambda: self.net.stop(),
                     self.controller.stop):
            with contextlib.suppress(Exception):
                step()


def switch_counts(switch: str) -> dict[str, int]:
    """Frames a switch so far matched with copy-to-controller flows (a flow
    replaced, as by a learning ban, takes its count along), let through its
    learning meters, and put into its switch-wide meter."""
    out = {"copy flows": harness.packets_to_controller(switch), "learn passed": 0,
           "switch-wide in": 0}
    stats = harness.ofctl("meter-stats", switch)
    for meter, seen, dropped in re.findall(
            r"meter:(\w+) .*?packet_in_count:(\d+).*?\n0: packet_count:(\d+)", stats):
        if meter.isdigit() and (meter_port(int(meter)) or ("",))[0] == "learn":
            out["learn passed"] += int(seen) - int(dropped)
        elif not meter.isdigit():  # a virtual meter: the switch-wide one
            out["switch-wide in"] += int(seen)
    return out


def start_flood(host, seconds: float, random_src: bool):
    return host.popen([sys.executable, str(FLOODER), host.defaultIntf().name,
                       str(seconds), *(["--random-src"] if random_src else [])])


def flood_fps(flood, seconds: float) -> float:
    match = re.search(rb"fps=(\d+)", flood.communicate(timeout=seconds + 60)[0])
    return float(match[1]) if match else 0.0


def apply_latencies(lab: Lab, count: int, tag: str, budget: float) -> tuple[list[float], int]:
    """Apply then Lift on h6, count times or until `budget` seconds have gone:
    Apply's seconds, and how many calls failed. The action is given (a rate
    limit), so that repeats do not climb the escalation ladder."""
    seconds, failed = [], 0
    action = pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT, rate=5000,
                              unit=pb.RATE_UNIT_KBPS, burst=2500)
    stop_at, i = time.monotonic() + budget, 0
    while i < count and time.monotonic() < stop_at:
        i += 1
        request = pb.ApplyRequest(request_id=f"{tag}-{i}-{time.monotonic_ns()}",
                                  case_id=f"BENCH-{tag}", reason="latency probe",
                                  subscriber=pb.Subscriber(ip=lab.net.get("h6").IP()),
                                  violation=pb.VIOLATION_MINING, action=action)
        started = time.perf_counter()
        try:
            record = lab.stub.Apply(request, timeout=10)
            seconds.append(time.perf_counter() - started)
            failed += record.state != pb.STATE_ACTIVE
            lab.stub.Lift(pb.LiftRequest(id=record.id, reason="probe done"), timeout=10)
        except grpc.RpcError:
            failed += 1
    return seconds, failed


def latency_text(probe: tuple[list[float], int]) -> str:
    values, failed = probe
    if not values:
        return f"no answer ({failed} failed)"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    text = f"{statistics.median(values) * 1e3:.1f} / {p99 * 1e3:.1f} ms"
    return text + (f" ({failed} of {len(values) + failed} failed)" if failed else "")


def plug_in(lab: Lab, name: str, switch: str, ip: str, mac: str):
    """Cables a new host to a running switch; returns it once the port exists
    on the switch (the moment of plugging)."""
    host = lab.net.addHost(name, ip=f"{ip}/24", mac=mac)
    link = lab.net.addLink(host, lab.net.get(switch))
    # Without this, TCP fails through the userspace datapath (testbed/lab.py).
    harness.disable_tx_checksum(host.pid, link.intf1.name)
    host.setIP(f"{ip}/24", intf=link.intf1)
    host.setMAC(mac, intf=link.intf1)
    lab.net.get(switch).attach(link.intf2)
    return host


def ping_loss(process) -> str:
    match = re.search(rb"([\d.]+)% packet loss", process.communicate(timeout=120)[0])
    return f"{float(match[1]):g}%" if match else "no output"


class Run:
    def __init__(self, args):
        self.args = args
        self.workdir = pathlib.Path(args.logs or tempfile.mkdtemp(prefix="control-plane-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.capacity_rows: list[tuple] = []
        self.flood_columns: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []

    @contextlib.contextmanager
    def lab(self, name: str, topo, links: int, args, ovs_limit):
        """A started lab, taken down (and its log checked) however the block ends."""
        print(f"-- {name}", file=sys.stderr, flush=True)
        harness.cleanup()  # what a crashed earlier run left, never anyone else's
        lab = Lab(self.workdir, name, args)
        try:
            lab.start(topo, links, ovs_limit)
            yield lab
        finally:
            lab.stop()
            harness.cleanup()
            found = [line for line in lab.log().splitlines() if PROBLEM.search(line)]
            if found:
                self.notes.append(f"{name}: the controller logged {len(found)} error "
                                  f"line(s); first: `{found[0].strip()[:300]}`")

    def capacity(self, setup: str, args: tuple, ovs_limit) -> None:
        seconds = self.args.capacity_seconds
        name = f"capacity: {setup.split(' (')[0].split(',')[0]}"
        with self.lab(name, topologies.SingleSwitchTopo(hosts=3), 0, args, ovs_limit) as lab:
            before, switch_before, seen = lab.packet_ins(), switch_counts("s1"), len(lab.log())
            flood = start_flood(lab.net.get("h1"), seconds, random_src=True)
            started, handled, last_rise = time.monotonic(), before["handled"], 0.0
            while flood.poll() is None:  # when did the controller stop taking copies?
                time.sleep(0.25)
                now = lab.packet_ins()["handled"]
                if now > handled:
                    handled, last_rise = now, time.monotonic() - started
            fps = flood_fps(flood, seconds)
            # The window ends with the flood: what is still queued then is
            # not counted as handled (shown apart, with what drained next).
            after, switch_after = lab.packet_ins(), switch_counts("s1")
            per_s = {k: (after[k] - before[k]) / seconds for k in ("handled", "dropped")}
            moved = {k: (switch_after[k] - switch_before[k]) / seconds for k in switch_after}
            time.sleep(2)
            drained = lab.packet_ins()["handled"] - after["handled"]
            status = ovs_status(lab.net)["s1"]
            copies = moved["copy flows"]  # negative: a ban replaced the port's flow
            self.capacity_rows.append((
                setup, f"{fps:,.0f}", f"{copies:,.0f}" if copies >= 0 else "n/a (replaced)",
                f"{moved['learn passed']:,.0f}", f"{moved['switch-wide in']:,.0f}",
                f"{per_s['handled']:,.0f}", f"{per_s['dropped']:,.0f}",
                f"{last_rise:.1f} s", f"{after['queue']:.0f} ({drained:.0f})",
                "log: " + ("yes" if "disconnected" in lab.log()[seen:] else "no")
                + "; OVS: " + ("yes" if status[1] else "no")))

    def flood(self, column: str, args: tuple, ovs_limit, random_src: bool) -> None:
        topo = topologies.LinearTopo(switches=3, hosts_per_switch=2)
        kind = ("random source MACs" if random_src
                else "a known source's broadcast/unknown unicast")
        with self.lab(f"{column}, {kind}", topo, 4, args, ovs_limit) as lab:
            harness.start_listener(lab.net.get("h6"), (80,))
            self.flood_columns.setdefault(kind, {})[column] = self._flood_figures(
                lab, random_src)

    def _flood_figures(self, lab: Lab, random_src: bool) -> dict[str, str]:
        seconds, probes, h = self.args.flood_seconds, self.args.probes, lab.net.get
        idle = apply_latencies(lab, probes, "idle", budget=30)
        seen, before = len(lab.log()), lab.packet_ins()
        capture = Capture(h("h3"), "ether proto 0x88b5", f"control-plane-h3-{os.getpid()}")
        count = str(int(seconds * 20) - 20)  # at 20/s, ending about when the flood does
        pingers = {pair: h(pair[0]).popen(["ping", "-i", "0.05", "-c", count, "-W", "1",
                                           "-q", h(pair[1]).IP()])
                   for pair in (("h2", "h6"), ("h5", "h4"))}
        flood = start_flood(h("h1"), seconds, random_src)
        started = time.monotonic()
        end = started + seconds
        time.sleep(1)
        # Bounded, so that the new host still comes during the flood.
        during = apply_latencies(lab, probes, "flood", budget=2)
        time.sleep(max(0.0, started + 3 - time.monotonic()))
        h9 = plug_in(lab, "h9", "s3", "10.0.0.9", "00:00:00:00:00:09")
        plugged, reached = time.monotonic(), None
        while reached is None and time.monotonic() - plugged < 10:
            if "rc=0" in h9.cmd(f"nc -z -w 1 {h('h6').IP()} 80; echo rc=$?"):
                reached = time.monotonic()
        fps = flood_fps(flood, seconds)
        time.sleep(max(0.0, end + 1 - time.monotonic()))
        after = apply_latencies(lab, probes, "after", budget=30)
        losses = {pair: ping_loss(p) for pair, p in pingers.items()}
        at_h3 = len(capture.stop())
        h("h3").cmd(f"rm -f {capture.path} {capture.path}.log")
        counters = lab.packet_ins()
        # The network a while later: what the flood broke shows by then.
        time.sleep(max(0.0, end + self.args.later - time.monotonic()))
        try:
            links = str(len(lab.topology().links))
        except grpc.RpcError as exc:
            links = f"no answer ({exc.code().name})"
        pings = "answers" if harness.ping(h("h2"), h("h6").IP(), count=3) else "no answer"
        later = latency_text(apply_latencies(lab, 3, "later", budget=30))
        status = ovs_status(lab.net)
        new_host = ("no (in 10 s)" if reached is None else f"yes in {reached - plugged:.1f} s"
                    + ("" if reached <= end else ", after the flood ended")) + (
                    f" (plugged {plugged - started:.1f} s into the flood)")
        handled, dropped = (counters[k] - before[k] for k in ("handled", "dropped"))
        lost = ", ".join(s for s, (_, down) in status.items() if down) or "no"
        return {
            "Open vSwitch's limit on the Controller records": status["s1"][0],
            "flood frames/s sent by h1": f"{fps:,.0f}",
            "ping loss at 20/s, h2->h6 (h2 on the attacker's switch)":
                losses[("h2", "h6")],
            "ping loss at 20/s, h5->h4 (other switches)": losses[("h5", "h4")],
            f"Apply p50 / p99 on h6, idle ({probes} calls)": latency_text(idle),
            "Apply p50 / p99 on h6, 1-3 s into the flood": latency_text(during),
            f"Apply p50 / p99 on h6, 1 s after the flood ({probes} calls)":
                latency_text(after),
            "new host h9 plugged into s3 from 3 s on reaches h6:80 (TCP)": new_host,
            "packet-ins handled / dropped by the controller (flood to end of probes)":
                f"{handled:,.0f} / {dropped:,.0f}",
            "a switch disconnected: controller log / OVS's Controller status":
                ("yes" if "disconnected" in lab.log()[seen:] else "no") + f" / {lost}",
            f"{self.args.later:g} s after the flood: links seen (of 4) / ping h2->h6 / "
            "Apply p50 / p99 (3 calls)": f"{links} / {pings} / {later}",
            "flood frames reaching neighbour h3 per s (tcpdump)": f"{at_h3 / seconds:,.0f}",
        }

    def report(self) -> str:
        a = self.args
        cpu = next((line.split(":", 1)[1].strip()
                    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.machine())
        ovs = vsctl("--version").splitlines()[0]
        machine = (f"Machine: {os.cpu_count()} cores ({cpu}), {ovs} (userspace datapath), "
                   f"Python {platform.python_version()}.")
        setups = (
            "*Ours*: the controller's defaults, Open vSwitch's limit as testbed/lab.py "
            "sets it. *OVS's limit alone*: `" + " ".join(OVS_ALONE) + "`, `"
            + " ".join(OVS_LIMIT) + "` on every Controller record. The capacity rows "
            "raise our budgets and clear Open vSwitch's limit to measure the controller "
            "itself (the defaults let 50 copies/s per access port through).")
        capacity = (f"### 1. Packet-in capacity: h1 floods {a.capacity_seconds:g} s from "
                    "random source MACs (every frame a copy to the controller), "
                    "SingleSwitchTopo (3 hosts); rates per second of flood")
        header = ("| controller | flood frames/s | frames matched by copy flows /s | "
                  "through the learning meters /s | into the switch-wide meter /s | "
                  "packet-ins handled /s | dropped /s | handled last rose at | queued at "
                  "the end (handled in the next 2 s) | a switch disconnected |")
        lines = [machine, "", setups, "", capacity, "", header, "|---" * 10 + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.capacity_rows]
        for kind, columns in self.flood_columns.items():
            names = list(columns)
            title = f"### 2. A {a.flood_seconds:g} s flood of {kind} from h1 on s1"
            lines += ["", title + ", LinearTopo(3 switches, 2 hosts each)", "",
                      "| figure (measured on) | " + " | ".join(names) + " |",
                      "|---" * (len(names) + 1) + "|"]
            lines += [f"| {figure} | " + " | ".join(columns[n].get(figure, "") for n in names)
                      + " |" for figure in columns[names[0]]]
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity-seconds", type=float, default=10.0,
                        help="each packet-in capacity flood. Default: %(default)s")
    parser.add_argument("--flood-seconds", type=float, default=10.0,
                        help="each side-by-side flood (the issue's: 20). Default: %(default)s")
    parser.add_argument("--probes", type=int, default=30,
                        help="Apply calls per latency sample. Default: %(default)s")
    parser.add_argument("--later", type=float, default=20.0, metavar="S",
                        help="look again this long after each flood. Default: %(default)s")
    parser.add_argument("--parts", default="capacity,flood",
                        help="which figures to measure. Default: %(default)s")
    parser.add_argument("--logs", metavar="DIR",
                        help="keep the controller logs here (default: a temporary directory)")
    parser.add_argument("--out", metavar="FILE", help="also write the tables to FILE")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch and Mininet)")
    if args.flood_seconds < 5 or args.capacity_seconds <= 0:
        parser.error("--flood-seconds must be at least 5 (a host is plugged in at 3 s)")
    run = Run(args)
    with open(LOCK_PATH, "w") as lock:
        print("waiting for the Mininet lock ...", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if "capacity" in args.parts:
                for setup in CAPACITY_SETUPS:
                    run.capacity(*setup)
            if "flood" in args.parts:
                for random_src in (True, False):
                    for column, controller_args, limit in FLOOD_SETUPS:
                        run.flood(column, controller_args, limit, random_src)
        except BaseException:
            print(run.report())  # what was measured before the failure
            raise
        finally:
            harness.cleanup()
            if not args.logs:
                shutil.rmtree(run.workdir, ignore_errors=True)
    report = run.report()
    print(report)
    if args.out:
        pathlib.Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
