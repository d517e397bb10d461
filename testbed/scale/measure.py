"""What the scale harness reads off the processes it runs, and the budget
that stops a run before the machine runs out.

A process's memory and CPU come from /proc; the controller's counters
from its Prometheus text; the switches' own (packet-outs received, rules
held, packet-ins sent) from ovs-vswitchd's coverage counters, its memory
report and the Controller rows Open vSwitch keeps status in.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping

GIB = 1024 ** 3


class OutOfBudget(RuntimeError):
    """The run stopped itself: the reason says where and why."""


def rss_bytes(pid: int) -> int:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) * 1024 if match else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process (all its threads) has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_names(path: pathlib.Path, pid: int) -> dict[int, str]:
    """Thread id -> what it runs, from the lines the controller's threads
    wrote as they started (testbed/scale/threadnames/); the main thread's
    id is the process's."""
    names = {pid: "MainThread"}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            tid, _, name = line.partition(" ")
            if tid.isdigit():
                names[int(tid)] = name
    return names


def thread_cpu(pid: int, names: Mapping[int, str]) -> dict[str, float]:
    """CPU seconds so far by what the threads run (threads that run the same
    thing summed: a switch's send loop, its receive loop...), from
    /proc/PID/task/*/stat: what a sampling profiler would say of an idle
    process, without one (py-spy is not installed here). A thread that
    ended is gone from the sums, so compare two reads over a quiet span."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = names.get(int(task.name), "?")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def mem_available() -> int:
    text = pathlib.Path("/proc/meminfo").read_text()
    match = re.search(r"MemAvailable:\s+(\d+) kB", text)
    return int(match.group(1)) * 1024 if match else 0


@dataclasses.dataclass
class Budget:
    """Where a run must stop rather than hang or take the machine down:
    a deadline, a ceiling on the memory of the processes it started, and
    a floor of memory left to everyone else. check() raises OutOfBudget
    naming what ran out, where (the phase) and the figures."""
    seconds: float = 3600.0
    rss_ceiling: int = 20 * GIB
    keep_free: int = 2 * GIB
    pids: Callable[[], Iterable[int]] = lambda: ()
    started: float = dataclasses.field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def check(self, phase: str) -> None:
        if self.left() <= 0:
            raise OutOfBudget(f"{phase}: out of time ({self.seconds:.0f} s budget spent)")
        total = 0
        for pid in self.pids():
            try:
                total += rss_bytes(pid)
            except OSError:
                continue
        if total > self.rss_ceiling:
            raise OutOfBudget(f"{phase}: the controller and Open vSwitch hold "
                              f"{total / GIB:.1f} GiB, over the {self.rss_ceiling / GIB:.0f} "
                              f"GiB ceiling")
        free = mem_available()
        if free and free < self.keep_free:
            raise OutOfBudget(f"{phase}: the machine has {free / GIB:.1f} GiB left, under "
                              f"the {self.keep_free / GIB:.0f} GiB kept free")


def metrics(address: str, timeout: float = 10.0) -> dict[str, float]:
    """The controller's Prometheus series, "name{labels}" -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def total(series: dict[str, float], name: str) -> float:
    """The sum of a metric over its labels."""
    return sum(v for k, v in series.items() if k == name or k.startswith(name + "{"))


def coverage(report: str, counter: str) -> int:
    """A counter's total from ovs-vswitchd's coverage/show."""
    match = re.search(rf"^{re.escape(counter)}\s.*total: (\d+)", report, re.MULTILINE)
    return int(match.group(1)) if match else 0


_DP_PORT = re.compile(r"^\s*port \d+: (\S+) \(([^)]*)\)$")
_DP_TX = re.compile(r"^\s*TX packets:(\d+)")


def tx_packets(dpctl_show: str) -> dict[str, int]:
    """Frames each datapath port has sent, from `dpctl/show -s`: every
    bridge of a private vswitchd shares its one dummy datapath, so one
    read covers every host's port in the tree (patch ports are not
    datapath ports: a frame crosses them inside one translation)."""
    out: dict[str, int] = {}
    port = None
    for line in dpctl_show.splitlines():
        named = _DP_PORT.match(line)
        if named:
            port = named.group(1)
            continue
        sent = _DP_TX.match(line)
        if sent and port is not None:
            out[port] = int(sent.group(1))
            port = None
    return out


def rules_held(memory_report: str) -> int:
    """Every OpenFlow rule of every bridge, from ovs-vswitchd's memory/show."""
    match = re.search(r"\brules:(\d+)", memory_report)
    return int(match.group(1)) if match else 0


def packet_ins_sent(controller_rows: Iterable[dict]) -> int:
    """Packet-ins the switches sent (passed or queued by their rate limiter),
    from the status Open vSwitch keeps on each Controller record (refreshed
    every few seconds)."""
    count = 0
    for row in controller_rows:
        status = dict(row.get("status", ["map", []])[1])
        for key, value in status.items():
            if key.startswith("packet-in-") and key.endswith(("-bypassed", "-queued")):
                count += int(value)
    return count
