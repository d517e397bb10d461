"""Link discovery at idle: what LLDP costs the controller and the switches
when nothing happens, on an ISP-like Mininet tree.

The real controller process, Open vSwitch (userspace datapath) and Mininet
hosts; run as root, on demand:

    sudo .venv/bin/python bench/discovery.py                       # 7 x 14 subscribers
    sudo .venv/bin/python bench/discovery.py --access 7 --subscribers 14 \\
        --seconds 60 --out bench/results/DATE-discovery.md

testbed/topologies.py IspTopo: aggregation s1, access switches s2.. each
with its subscribers, services switch s9. Every host speaks once (so it is
located, as a subscriber is), then the network is left alone for --settle
seconds (ports that came up are probed often for a while), and for
--seconds the bench counts:

- packet-outs per second: Open vSwitch's own count (`ovs-appctl
  coverage/read-counter ofproto_packet_out`: every bridge of this
  ovs-vswitchd; the Mininet lock keeps other labs off it meanwhile) and,
  where the controller has it, its own `openflow_lldp_probes_total`;
- LLDP packet-ins per second (the counters of the switches' LLDP copy rules,
  table 2: a probe that crossed a cable, or reached a subscriber who sent
  LLDP back);
- LLDP frames one subscriber line received (tcpdump in h1);
- the controller's CPU (utime + stime from /proc), as a share of one core.
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
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc

from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness
from testbed import topologies
from testbed.capture import Capture

LOCK_PATH = "/run/lock/sdn-enforcement-mininet.lock"  # tests/e2e/conftest.py


def packet_outs() -> int:
    """Packet-outs every bridge of this ovs-vswitchd executed so far."""
    out = subprocess.run(["ovs-appctl", "coverage/read-counter", "ofproto_packet_out"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


def lldp_packet_ins(switches) -> int:
    """LLDP frames the switches copied to the controller so far."""
    total = 0
    for switch in switches:
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch.name,
                              "table=2"], capture_output=True, text=True, check=True).stdout
        total += sum(int(m.group(1)) for line in out.splitlines() if "0x88cc" in line
                     for m in [re.search(r"n_packets=(\d+)", line)] if m)
    return total


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probes_counted(metrics_address: str) -> dict[str, float]:
    """The controller's own count of LLDP packet-outs by kind, if it keeps one."""
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics",
                                  timeout=5).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^openflow_lldp_probes_total\{kind="([^"]+)"\} (\S+)$', text, re.M)}


def profile(pid: int, out: str, seconds: float) -> None:
    """py-spy on the idle controller, after the measurement (it costs the
    process a little): samples of the thread holding the GIL, as
    collapsed stacks, and the functions that held it most."""
    subprocess.run([str(pathlib.Path(sys.executable).with_name("py-spy")), "record",
                    "--gil", "--nonblocking", "--format", "raw", "--rate", "100",
                    "--duration", str(int(seconds)), "--output", out, "--pid", str(pid)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    leaves: dict[str, int] = {}
    for line in pathlib.Path(out).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        leaves[leaf] = leaves.get(leaf, 0) + int(count)
    total = sum(leaves.values()) or 1
    for leaf, count in sorted(leaves.items(), key=lambda item: -item[1])[:15]:
        print(f"{100 * count / total:5.1f}%  {leaf}", file=sys.stderr)


def run(args, workdir: pathlib.Path) -> str:
    topo = topologies.IspTopo(access=args.access, subscribers_per_switch=args.subscribers)
    ofp_port = harness.free_port()
    controller = harness.ControllerProcess(
        ofp_port, log_path=workdir / "controller.log",
        extra_args=["--db", f"sqlite:///{workdir / 'enforcement.db'}", *args.controller_args])
    net = None
    try:
        controller.wait_ready()
        stub = pb_grpc.EnforcementServiceStub(grpc.insecure_channel(controller.grpc_address))
        started = time.monotonic()
        net = harness.start_network(topo, ofp_port)
        harness.wait_switches_connected(net, timeout=120)
        links = 2 * (args.access + 1)
        harness.wait_until(lambda: len(stub.GetTopology(pb.GetTopologyRequest()).links)
                           >= links, 60, f"{links} links")
        found = time.monotonic() - started
        dns = topologies.IspTopo.SERVICES["dns"]
        for host in net.hosts:  # every subscriber speaks once: located
            host.cmd(f"ping -c 1 -W 1 {dns} > /dev/null")
        hosts = len(stub.GetTopology(pb.GetTopologyRequest()).hosts)
        time.sleep(args.settle)
        pid = controller.proc.pid
        capture = Capture(net.get("h1"), "ether proto 0x88cc", "discovery-bench-h1")
        before = (time.monotonic(), cpu_seconds(pid), packet_outs(),
                  lldp_packet_ins(net.switches))
        counted = probes_counted(controller.metrics_address)
        time.sleep(args.seconds)
        after = (time.monotonic(), cpu_seconds(pid), packet_outs(),
                 lldp_packet_ins(net.switches))
        counted_after = probes_counted(controller.metrics_address)
        at_h1 = len(capture.stop())
        if args.profile:
            profile(pid, args.profile, args.seconds)
    finally:
        if net is not None:
            net.stop()
        controller.stop()
        harness.cleanup()
    elapsed = after[0] - before[0]
    cpu = (after[1] - before[1]) / elapsed
    outs = (after[2] - before[2]) / elapsed
    ins = (after[3] - before[3]) / elapsed
    switches = len(topo.switches())
    ports = sum(1 for _ in topo.links()) * 2 - len(topo.hosts())  # switch ends only
    own = {kind: (counted_after.get(kind, 0) - counted.get(kind, 0)) / elapsed
           for kind in counted_after}
    rows = [
        ("switches / switch ports / hosts located", f"{switches} / {ports} / {hosts}"),
        ("links found (both ways) after the switches started", f"{found:.1f} s"),
        ("packet-outs/s (Open vSwitch's count)", f"{outs:.1f}"),
        ("LLDP packet-outs/s (the controller's count, by kind)",
         ", ".join(f"{kind} {rate:.2f}" for kind, rate in sorted(own.items())) or "n/a"),
        ("LLDP packet-ins/s", f"{ins:.1f}"),
        (f"LLDP frames h1's line received in {elapsed:.0f} s", str(at_h1)),
        ("controller CPU (the whole process), share of one core", f"{100 * cpu:.2f} %"),
        ("per switch: packet-outs/s, whole-process CPU", (f"{outs / switches:.2f}, "
         f"{100 * cpu / switches:.3f} %")),
        ("per switch port: packet-outs/s, whole-process CPU", (f"{outs / ports:.3f}, "
         f"{100 * cpu / ports:.4f} %")),
    ]
    head = (f"IspTopo(access={args.access}, subscribers_per_switch={args.subscribers}); "
            f"settled {args.settle:.0f} s, measured {elapsed:.0f} s; controller arguments: "
            f"`{' '.join(args.controller_args) or '(defaults)'}`; "
            f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"commit {_commit()}")
    table = ["| at idle | figure |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return head + "\n\n" + "\n".join(table)


def _commit() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=harness.ROOT).stdout.strip()
    return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--access", type=int, default=7,
                        help="access switches (at most 7: s9 is the services switch). "
                             "Default: %(default)s")
    parser.add_argument("--subscribers", type=int, default=14,
                        help="subscribers per access switch. Default: %(default)s")
    parser.add_argument("--settle", type=float, default=45.0, metavar="S",
                        help="quiet time before measuring. Default: %(default)s")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long to measure. Default: %(default)s")
    parser.add_argument("--controller-args", nargs=argparse.REMAINDER, default=[],
                        help="the rest of the line goes to the controller")
    parser.add_argument("--out", metavar="FILE", help="also write the table to FILE")
    parser.add_argument("--profile", metavar="FILE",
                        help="after measuring, py-spy the idle controller into FILE")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root (Open vSwitch and Mininet)")
    if not 1 <= args.access <= 7:
        parser.error("--access must be 1 to 7")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-discovery-"))
    with open(LOCK_PATH, "w") as lock:
        print("waiting for the Mininet lock ...", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            report = run(args, workdir)
        except BaseException:
            log = workdir / "controller.log"
            if log.exists():  # the why, before the folder goes
                print("".join(log.read_text().splitlines(True)[-30:]), file=sys.stderr)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report)
    if args.out:
        pathlib.Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
