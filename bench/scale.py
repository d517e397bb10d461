"""The controller on trees of hundreds of real switches, size by size, in one run (issue 25).

Each size is a fresh tree (testbed/scale/: a private ovs-vswitchd with the dummy
datapath, a gateway / aggregation / access tree of bridges, subscribers as dummy ports)
run by the real controller process on its defaults (SQLite store on disk; only the
per-client request limits lifted, as bench/bench.py does), called by the typed Python
client. For each size, in order:

  start     the bridges exist and retry their controller; the controller starts: time
            until every switch is in sync (testbed/scale/lab.py says what that means);
  hosts     every subscriber announces itself (unicast ARP and a neighbour advertisement
            to the gateway's router, injected at --rate frames/s): time until all are
            located, and until the switches are in sync again;
  idle      --idle seconds of nothing: controller and ovs-vswitchd CPU (share of one
            core) and RSS, packet-ins the switches sent and the controller handled, and
            packet-outs the switches received, per second;
  live      --live enforcements (a TCP port block each, spread over the subscribers) by
            ApplyBatch, then in sync;
  decisions --pairs Apply then Lift pairs one after the other, with those live: p50/p99
            next to the 3-switch tree's (the first column, measured in the same run);
  flows     flow entries per switch by tier (min / median / max);
  restart   kill -9 and the same controller again: time from the kill until in sync,
            switches whose flow count the restart changed, errors the controller logged.

A size stops where its budget runs out (--size-seconds, --rss-ceiling GiB for the
controller and Open vSwitch together, --keep-free GiB left to the machine) or a phase
times out: the table says at which phase and why, and the larger sizes are not tried.
Run as root, on demand:

    sudo .venv/bin/python bench/scale.py                          # 10, 100, 1,000 switches
    sudo .venv/bin/python bench/scale.py --sizes 10:1000 --live 1000 --pairs 50 --idle 10
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import platform
import signal
import subprocess
import sys
import tempfile
import time

import bench as issue7  # bench/bench.py: requests, percentiles, the access file
from enforcement.v1 import enforcement_pb2 as pb
from testbed.scale import measure, tree
from testbed.scale.lab import ScaleLab
from testbed.scale.measure import GIB, Budget, OutOfBudget

BASELINE = (3, 100)  # the 3-switch tree every size's decisions are set against
LIVE_PORT = 1024     # live enforcements block TCP 1024 and up; the timed ones TCP 25
LLDP_KINDS = ("link", "new", "new_sweep", "settled_sweep")
LLDP_NEW_PORTS = 'openflow_lldp_ports{kind="new"}'
LLDP_SERIES = 'openflow_lldp_probes_total{{kind="{}"}}'
THREADS = 6         # the busiest threads named in the idle row
BATCH = 256          # ApplyBatch's limit (enforcement/api/requests.py)


@dataclasses.dataclass
class Column:
    """One size's figures, by row, as printed."""
    switches: int
    subscribers: int
    cells: dict[str, str] = dataclasses.field(default_factory=dict)
    figures: dict[str, float] = dataclasses.field(default_factory=dict)  # for the goals
    stopped: str = ""
    phase: str = ""

    @property
    def title(self) -> str:
        return f"{self.switches} switches, {self.subscribers:,} subscribers"

    def put(self, row: str, value: str) -> None:
        self.cells[row] = value
        print(f"  [{self.switches}/{self.subscribers}] {row}: {value}", file=sys.stderr,
              flush=True)


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def _ms(values: list[float]) -> str:
    return (f"{issue7.percentile(values, 50) * 1e3:.2f} / "
            f"{issue7.percentile(values, 99) * 1e3:.2f} ms")


def _mib(count: int) -> str:
    return f"{count / 2**20:,.0f} MiB"


class Run:
    def __init__(self, args, workdir: pathlib.Path):
        self.args = args
        self.workdir = workdir
        self.access = workdir / "access.toml"
        self.access.write_text(issue7.ACCESS)
        self.columns: list[Column] = []

    # ---- one size ----------------------------------------------------------------------

    def size(self, switches: int, subscribers: int) -> Column:
        column = Column(switches, subscribers)
        self.columns.append(column)
        budget = Budget(seconds=self.args.size_seconds, rss_ceiling=int(self.args.rss_ceiling
                                                                          * GIB),
                        keep_free=int(self.args.keep_free * GIB))
        shape = tree.build(switches, subscribers)
        column.put("tiers (gateway / aggregation / access)",
                   " / ".join(str(len(shape.tier(t))) for t in tree.TIERS))
        log = self.workdir / f"controller-{switches}-{subscribers}.log"
        try:
            with ScaleLab(shape, controller_args=["--access", str(self.access)], log_path=log,
                          budget=budget) as lab:
                self._measure(lab, column)
        except (OutOfBudget, TimeoutError) as exc:
            column.stopped = f"stopped at {column.phase}: {exc}"
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the table still says where
            column.stopped = f"interrupted at {column.phase}"
            raise
        except Exception as exc:  # said in the table; the larger sizes are skipped
            column.stopped = f"stopped at {column.phase}: {type(exc).__name__}: {exc}"
        if column.stopped:
            print(f"  [{switches}/{subscribers}] {column.stopped}", file=sys.stderr, flush=True)
        return column

    def _measure(self, lab: ScaleLab, column: Column) -> None:
        shape, args = lab.tree, self.args
        column.phase = "building the bridges"
        column.put("bridges built in", _s(lab.build()))
        column.phase = "starting the controller"
        lab.start_controller()
        column.phase = "start to sync"
        cold = lab.wait_in_sync(lab.started_at, timeout=self._wait(lab), phase=column.phase)
        column.figures["cold start"] = cold
        column.put("start to sync (no hosts)", _s(cold))
        rss_before = measure.rss_bytes(lab.controller_pid)
        column.phase = "hosts appearing"
        lab.announce_services()
        started = time.monotonic()
        appearance = lab.add_hosts(shape.subscribers, rate=args.rate)
        column.put("hosts located in", f"{_s(appearance.seconds)} ({appearance.frames:,} "
                   f"frames, {appearance.resent:,} resent)")
        column.phase = "hosts in sync"
        column.put("hosts: in sync after", _s(lab.wait_in_sync(
            started, timeout=self._wait(lab), phase=column.phase)))
        rss_hosts = measure.rss_bytes(lab.controller_pid)
        each = (rss_hosts - rss_before) / len(shape.subscribers) / 1024
        column.put("controller RSS: no hosts / hosts",
                   f"{_mib(rss_before)} / {_mib(rss_hosts)} ({each:.1f} KiB per subscriber)")
        column.phase = "idle"
        self._idle(lab, column)
        column.phase = "live enforcements"
        self._live(lab, column)
        column.phase = "decisions"
        self._decisions(lab, column)
        column.phase = "counting flows"
        counts = lab.flow_counts()
        for tier, values in tree.tier_counts(shape, counts).items():
            column.put(f"flows per switch, {tier} (min / median / max)", tree.spread(values))
        column.put("flows in all switches", f"{sum(counts.values()):,}")
        rss = measure.rss_bytes(lab.controller_pid)
        column.figures["rss"] = rss
        column.put("controller RSS, at the end", _mib(rss))
        vswitchd = lab.ovs.pids["ovs-vswitchd"]
        column.put("ovs-vswitchd RSS, at the end", _mib(measure.rss_bytes(vswitchd)))
        column.phase = "restart after kill -9"
        killed = time.monotonic()
        errors_before = len(lab.log_problems())
        lab.kill_and_restart()
        column.put("kill -9, restart: in sync after", _s(lab.wait_in_sync(
            killed, timeout=self._wait(lab), phase=column.phase)))
        after = lab.flow_counts()
        changed = sum(1 for d in counts if counts[d] != after.get(d))
        column.put("switches whose flows the restart changed", str(changed))
        problems = lab.log_problems()[errors_before:]
        column.put("errors the controller logged after the restart", str(len(problems)))
        column.put("errors the controller logged before it", str(errors_before))

    def _wait(self, lab: ScaleLab) -> float:
        """How long one wait for sync may take: --phase-seconds, or what is
        left of the size's budget."""
        return max(1.0, min(self.args.phase_seconds, lab.budget.left()))

    def _idle(self, lab: ScaleLab, column: Column) -> None:
        assert lab.controller is not None

        def snapshot() -> dict[str, float]:
            assert lab.controller is not None
            series = measure.metrics(lab.controller.metrics_address)
            return {"time": time.monotonic(),
                    "controller cpu": measure.cpu_seconds(lab.controller_pid),
                    "vswitchd cpu": measure.cpu_seconds(lab.ovs.pids["ovs-vswitchd"]),
                    "pins handled": series.get('openflow_packet_ins_total{outcome="handled"}', 0.0),
                    **{f"lldp {kind}": series.get(LLDP_SERIES.format(kind), 0.0)
                       for kind in LLDP_KINDS},
                    "pins sent": measure.packet_ins_sent(
                        lab.ovs.select("Controller", ["status"])),
                    "pouts": measure.coverage(lab.ovs.appctl("coverage/show"),
                                              "ofproto_packet_out")}
        # Steady state: ports whose line showed a new MAC are probed every
        # second for their first 30 s (controller/topology/lldp/schedule.py,
        # NEW_SECONDS); idle starts once none is left.
        settling = time.monotonic()
        while measure.metrics(lab.controller.metrics_address).get(LLDP_NEW_PORTS, 0.0) > 0:
            lab.budget.check("idle: waiting for new ports to settle")
            time.sleep(1.0)
        column.put("idle: waited for LLDP's new ports to settle", _s(time.monotonic() - settling))
        before, threads_before = snapshot(), lab.thread_cpu()
        deadline = time.monotonic() + self.args.idle
        while time.monotonic() < deadline:
            lab.budget.check("idle")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        after, threads_after = snapshot(), lab.thread_cpu()
        span = after["time"] - before["time"]
        rate = {k: (after[k] - before[k]) / span for k in before}
        column.figures["idle cpu"] = rate["controller cpu"]
        column.put("idle: controller CPU (share of one core)",
                   f"{rate['controller cpu'] * 100:.0f}%")
        column.put("idle: ovs-vswitchd CPU (share of one core)",
                   f"{rate['vswitchd cpu'] * 100:.0f}%")
        column.put("idle: packet-ins/s sent by the switches / learned from (LLDP aside)",
                   f"{rate['pins sent']:,.1f} / {rate['pins handled']:,.1f}")
        column.put("idle: packet-outs/s received by the switches", f"{rate['pouts']:,.1f}")
        column.put("idle: LLDP packet-outs/s by kind (" + ", ".join(LLDP_KINDS) + ")",
                   " / ".join(f"{rate['lldp ' + kind]:,.1f}" for kind in LLDP_KINDS))
        busy = sorted(((threads_after[name] - threads_before.get(name, 0.0)) / span, name)
                      for name in threads_after)[::-1]
        column.put("idle: controller CPU by thread (share of one core)", "; ".join(
            f"{name} {share * 100:.1f}%" for share, name in busy[:THREADS] if share > 0.0005))

    def _live(self, lab: ScaleLab, column: Column) -> None:
        assert lab.client is not None
        subs = lab.tree.subscribers
        requests = [issue7.port_block(subs[n % len(subs)].ip, LIVE_PORT + n // len(subs), n)
                    for n in range(self.args.live)]
        started, refused = time.monotonic(), 0
        for first in range(0, len(requests), BATCH):
            lab.budget.check(column.phase)
            results = lab.client.apply_batch(requests[first:first + BATCH], timeout=600)
            refused += sum(1 for r in results if not r.HasField("enforcement")
                           or r.enforcement.state != pb.STATE_ACTIVE)
        took = time.monotonic() - started
        column.put(f"{self.args.live:,} live enforcements applied (ApplyBatch of {BATCH}) in",
                   f"{_s(took)} ({self.args.live / took:,.0f}/s; {refused} not active)")
        column.put("live: in sync after", _s(lab.wait_in_sync(
            started, timeout=self._wait(lab), phase="live enforcements in sync")))

    def _decisions(self, lab: ScaleLab, column: Column) -> None:
        assert lab.client is not None
        subs = lab.tree.subscribers
        applies, lifts = [], []
        for n in range(self.args.pairs):
            lab.budget.check(column.phase)
            host = subs[(n * 7919) % len(subs)]  # spread over the access switches
            started = time.perf_counter()
            record = lab.client.apply_request(issue7.port_block(host.ip, 25, n))
            applied = time.perf_counter()
            if record.state != pb.STATE_ACTIVE:
                raise RuntimeError(f"decision {n} not active: {record.state_reason}")
            lab.client.lift(record.id, "bench")
            applies.append(applied - started)
            lifts.append(time.perf_counter() - applied)
        baseline = self.columns[0].cells if self.columns[0] is not column else None
        for name, values in (("Apply", applies), ("Lift", lifts)):
            cell = _ms(values)
            if baseline is not None and f"{name} p50 / p99" in baseline:
                base_p99 = float(baseline[f"{name} p50 / p99"].split(" / ")[1].split()[0])
                ratio = issue7.percentile(values, 99) * 1e3 / base_p99
                column.figures[f"{name} ratio"] = ratio
                cell += f" (p99 x{ratio:.2f} the 3-switch tree's)"
            column.put(f"{name} p50 / p99", cell)

    # ---- the report ----------------------------------------------------------------------

    def table(self) -> str:
        rows = list(dict.fromkeys(r for c in self.columns for r in c.cells))
        out = ["| measure | " + " | ".join(c.title for c in self.columns) + " |",
               "|---|" + "---|" * len(self.columns)]
        for row in rows:
            out.append(f"| {row} | " + " | ".join(c.cells.get(row, "") for c in self.columns)
                       + " |")
        stops = [f"- {c.title}: {c.stopped}" for c in self.columns if c.stopped]
        return "\n".join(out + (["", *stops] if stops else []) + ["", *self.goals()])

    def goals(self) -> list[str]:
        """Issue 25's goals for one instance on this machine, each size's
        figure against them (the goals are set for 1,000 switches and
        100,000 subscribers; the smaller sizes show the trend)."""
        columns = self.columns[1:]
        out = ["| goal (issue 25) | " + " | ".join(c.title for c in columns) + " |",
               "|---|" + "---|" * len(columns)]
        for name, key, limit, shown in GOALS:
            cells = []
            for column in columns:
                value = column.figures.get(key)
                cells.append("not measured" if value is None else
                             f"{shown(value)}: {'met' if value < limit else 'NOT met'}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        return out


GOALS = (("controller RSS under 4 GiB", "rss", 4 * GIB, _mib),
         ("in sync within 120 s of a cold start", "cold start", 120.0, _s),
         ("Apply p99 within 2x the 3-switch tree's", "Apply ratio", 2.0, lambda r: f"x{r:.2f}"),
         ("idle controller CPU under 10% of one core", "idle cpu", 0.10,
          lambda c: f"{c * 100:.1f}%"))


def machine() -> str:
    model = subprocess.run(["sed", "-n", "s/^model name\\s*: //p;T;q", "/proc/cpuinfo"],
                           capture_output=True, text=True).stdout.strip()
    ovs = subprocess.run(["ovs-vswitchd", "--version"], capture_output=True,
                         text=True).stdout.splitlines()[0]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Machine: {os.cpu_count()} cores ({model}), {memory:.0f} GiB, {ovs} "
            f"(dummy datapath, a private ovs-vswitchd), Python {platform.python_version()}, "
            f"SQLite store; load average at the end {load} (the machine is shared)")


def sizes(text: str) -> list[tuple[int, int]]:
    """SWITCHES:SUBSCRIBERS,...; empty: the 3-switch tree alone."""
    out: list[tuple[int, int]] = []
    for part in filter(None, text.split(",")):
        switches, _, subscribers = part.partition(":")
        out.append((int(switches), int(subscribers)))
    return out


def _interrupt(*_) -> None:
    """SIGTERM unwinds like Ctrl-C: every lab is torn down on the way out."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=sizes, default=sizes("10:1000,100:10000,1000:100000"),
                        help="SWITCHES:SUBSCRIBERS,... Default: %(default)s")
    parser.add_argument("--live", type=int, default=10000, help="live enforcements")
    parser.add_argument("--pairs", type=int, default=200, help="Apply+Lift pairs timed")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measured")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="frames/s injected while hosts appear")
    parser.add_argument("--size-seconds", type=float, default=3600.0,
                        help="time budget of each size")
    parser.add_argument("--phase-seconds", type=float, default=900.0,
                        help="longest wait for the switches to be in sync, each time")
    parser.add_argument("--rss-ceiling", type=float, default=20.0,
                        help="GiB the controller and Open vSwitch may hold together")
    parser.add_argument("--keep-free", type=float, default=2.0,
                        help="GiB of the machine's memory never taken")
    parser.add_argument("--out", type=pathlib.Path, help="also write the table there")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        run = Run(args, pathlib.Path(tmp))
        with contextlib.suppress(KeyboardInterrupt):
            for switches, subscribers in [BASELINE, *args.sizes]:
                if run.size(switches, subscribers).stopped:
                    break
        table = run.table()
    command = "sudo .venv/bin/python bench/scale.py " + " ".join(sys.argv[1:] if argv is None
                                                                  else argv)
    report = f"Command: `{command.strip()}`\n\n{machine()}\n\n{table}\n"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0 if not any(c.stopped for c in run.columns[:1]) else 1


if __name__ == "__main__":
    sys.exit(main())
