"""The scale lab: a tree of real Open vSwitch bridges (a private vswitchd,
testbed/scale/ovs.py) run by the real controller process, and what a test
or a bench asks of it: start, wait until in sync, make hosts appear,
decide over gRPC, probe with frames, kill -9 and restart, count flows.

Use as a context manager: everything it started (the controller, both
OVS daemons, their directory) goes on the way out, failure or not, and
each process also dies with this one if it is killed (setpriv
--pdeathsig, testbed/lab.py).

"In sync" is what can be seen from outside, whatever the forwarding
design: every switch connected with the controller as its master (its
role request seen by Open vSwitch, the session counted by the controller
itself), every link discovered both ways and every announced host
located by the controller (GetTopology), every announcement the switches
held for the controller to judge sent on to the router (what the
router's port transmitted), and the flow tables of all the
bridges untouched for `quiet` seconds (neither the number of rules nor
Open vSwitch's count of flow-table changes moves: a modify changes no
count). The time reported is when that final state was first seen, not
when the quiet period ended.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence

from controller.openflow.fabric import RECONNECT_HOLD
from controller.process.config import BY_DEST
from enforcement.clients.client import EnforcementClient
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed.scale import bridges, frames, hosts, measure
from testbed.scale.measure import Budget
from testbed.scale.ovs import PrivateOvs
from testbed.scale.tree import Host, Tree

THREAD_NAMES = pathlib.Path(__file__).with_name("threadnames")
BATCH_SWITCHES = 50      # bridges added per OVSDB transaction
# Seconds the switches' tables must stay untouched before they count as in sync
# (the controller pushes in rounds, a fraction of a second to a few apart).
QUIET = 5.0
PROBE_PORT_BASE = 50000  # TCP source ports that mark the harness's probes
_BINDING = re.compile(r"dhcp binding: (\S+) (\S+),")
# GetTopology at 100,000 hosts is tens of megabytes; gRPC's default cap is 4 MiB.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 1 << 30),)


@dataclasses.dataclass(frozen=True)
class SyncState:
    connected: int     # switches connected with the controller as master
    links: int         # link directions the controller knows
    hosts: int         # announced hosts located
    delivered: int     # announced subscribers whose every announcement reached the router
    rules: int         # rules held by all bridges together
    changes: int       # flow-table changes Open vSwitch revalidated for, so far

    def key(self) -> tuple:
        return dataclasses.astuple(self)


@dataclasses.dataclass(frozen=True)
class Egress:
    """Where a probe's frames left the tree."""
    sent: int
    rose: dict[str, int]   # datapath port -> frames it sent meanwhile (only those that did)
    at_inet: int           # the probe's own frames in the inet port's capture
    inet_port: str

    def ports(self) -> set[str]:
        """The ports that sent at least half the probe's frames: the probe's
        way out (the stray frame or two of discovery never counts)."""
        return {port for port, n in self.rose.items() if 2 * n >= self.sent}

    @property
    def stopped(self) -> bool:
        return not self.ports() and self.at_inet == 0

    @property
    def reached_inet_only(self) -> bool:
        return self.ports() == {self.inet_port} and self.at_inet == self.sent


class ScaleLab:
    def __init__(self, tree: Tree, *, controller_args: Sequence[str] = (),
                 log_path: pathlib.Path | None = None, budget: Budget | None = None,
                 rate_limit: int | None = bridges.RATE_LIMIT):
        self.tree = tree
        self.controller_args = list(controller_args)
        self.log_path = log_path
        self.rate_limit = rate_limit
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="scale-lab-"))
        self.ovs = PrivateOvs(self.workdir / "ovs")
        self.db = self.workdir / "enforcement.db"
        # What left the gateway's inet and router ports: the probes, and the
        # announcements the switches held until the controller judged them.
        self.inet_capture = frames.Capture(self.workdir / "inet.pcap")
        self.router_capture = frames.Capture(self.workdir / "router.pcap")
        self.probes_seen: set[tuple[str, int, int]] = set()
        self.delivered: set[tuple[str, str]] = set()
        self.ofp_port = harness.free_port()
        self.controller: harness.ControllerProcess | None = None
        self.client: EnforcementClient | None = None
        self.budget = budget or Budget()
        self.budget.pids = self._pids
        self.injector = hosts.Injector(self.ovs)
        self.announced: dict[str, Host] = {}   # ip -> host the controller should know
        self.expected: dict[str, set[tuple[str, str]]] = {}  # ip -> what the router gets
        self.with_ipv6: set[str] = set()       # ips of hosts that announced their IPv6 too
        self.started_at = 0.0
        self.starts = 0
        self._probes = 0

    # ---- up and down ---------------------------------------------------------------

    def __enter__(self) -> ScaleLab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        self.ovs.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _pids(self) -> list[int]:
        pids = list(self.ovs.pids.values())
        if self.controller is not None and self.controller.proc.poll() is None:
            pids.append(self.controller.proc.pid)
        return pids

    def build(self) -> float:
        """The private Open vSwitch and every bridge of the tree, each
        already pointed at the controller's port (nothing listens there
        yet: the switches retry, as a network does while its controller is
        down). Returns the seconds it took."""
        started = time.monotonic()
        self.ovs.dir.mkdir(parents=True, exist_ok=True)
        self.ovs.start()
        target = f"tcp:127.0.0.1:{self.ofp_port}"
        captures = {self.tree.service(name).port_name: {"tx_pcap": str(capture.path)}
                    for name, capture in (("inet", self.inet_capture),
                                          ("router", self.router_capture))}
        switches = self.tree.switches
        for first in range(0, len(switches), BATCH_SWITCHES):
            self.budget.check(f"building bridges ({first} of {len(switches)})")
            self.ovs.configure(bridges.add_switches(
                self.tree, switches[first:first + BATCH_SWITCHES], target,
                rate_limit=self.rate_limit,
                port_options=captures), check=lambda: self.budget.check("building bridges"))
        return time.monotonic() - started

    def start_controller(self) -> None:
        """The real controller on its defaults, plus what the tree needs:
        its gateway switch (the root of forwarding, where the provider's
        services are; subscriber isolation follows from it) and the DHCP
        server's port as trusted; then what the caller adds."""
        args = ["--db", f"sqlite:///{self.db}", "--gateway", f"{self.tree.gateway.dpid:016x}",
                "--dhcp-trusted", self.tree.dhcp_trusted(), *self.controller_args]
        self.starts += 1
        self.started_at = time.monotonic()
        self.controller = harness.ControllerProcess(self.ofp_port, log_path=self.log(),
                                                    extra_args=args, env=self._env())
        self.controller.wait_ready(timeout=max(30.0, min(300.0, self.budget.left())))
        if self.client is not None:
            self.client.close()
        self.client = EnforcementClient(self.controller.grpc_address, timeout=120,
                                        channel_options=CHANNEL_OPTIONS)

    def _env(self) -> dict[str, str]:
        """The controller's environment: this one, plus the thread-naming
        start-up hook (testbed/scale/threadnames/) writing to thread_map()."""
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "SCALE_THREAD_MAP": str(self.thread_map()),
                "PYTHONPATH": os.pathsep.join([str(THREAD_NAMES), *([path] if path else [])])}

    def thread_map(self) -> pathlib.Path:
        return self.workdir / f"threads-{self.starts}.txt"

    def thread_cpu(self) -> dict[str, float]:
        """The controller's CPU seconds so far, by what its threads run."""
        pid = self.controller_pid
        return measure.thread_cpu(pid, measure.thread_names(self.thread_map(), pid))

    def log(self, start: int | None = None) -> pathlib.Path | None:
        """The log of the controller's nth start (the current one by
        default): the first in log_path, each restart in a file of its own
        next to it (-2, -3...)."""
        start = start or self.starts
        if self.log_path is None or start <= 1:
            return self.log_path
        return self.log_path.with_name(f"{self.log_path.stem}-{start}{self.log_path.suffix}")

    def kill_and_restart(self) -> None:
        """kill -9, then the same controller again (same store, same port)."""
        assert self.controller is not None
        self.controller.proc.kill()
        self.controller.proc.wait()
        self.controller.stop()
        self.controller = None
        self.start_controller()

    # ---- what the controller and the switches hold ----------------------------------------

    def topology(self) -> pb.Topology:
        assert self.client is not None
        return self.client.topology()

    def located(self, topology: pb.Topology | None = None) -> set[str]:
        """IPv4 addresses of the hosts the controller has whole: at their own
        switch port, with the IPv6 address they announced (if they did)."""
        by_ip = {h.ip: h for h in (*self.tree.subscribers, *self.tree.services)}
        out = set()
        for seen in (topology or self.topology()).hosts:
            host = by_ip.get(seen.ip)
            if (host is not None and (seen.datapath_id, seen.port) == (host.dpid, host.port)
                    and (host.ip not in self.with_ipv6 or host.ipv6 in seen.ipv6)):
                out.add(seen.ip)
        return out

    def sync_state(self) -> SyncState:
        """Connected: by both ends' account (the switch's Controller row says
        connected with this controller as master, the controller's own
        gauge counts the session), so a row not yet refreshed after a
        kill -9 does not count."""
        assert self.controller is not None
        rows = self.ovs.select("Controller", ["is_connected", "role"])
        masters = sum(1 for r in rows if r["is_connected"] and r["role"] == "master")
        try:
            sessions = measure.total(measure.metrics(self.controller.metrics_address),
                                     "openflow_connected_switches")
        except OSError:  # too busy to answer in time (a timeout is one): not yet
            sessions = 0
        topology = self.topology()
        located = len(self.located(topology) & self.announced.keys())
        rules = measure.rules_held(self.ovs.appctl("memory/show"))
        changes = measure.coverage(self.ovs.appctl("coverage/show"), "rev_flow_table")
        return SyncState(min(masters, int(sessions)), len(topology.links), located,
                         self._delivered(), rules, changes)

    def wanted(self) -> SyncState:
        return SyncState(len(self.tree.switches), 2 * self.tree.links, len(self.announced),
                         len(self.expected), 0, 0)

    def _delivered(self) -> int:
        """Announced subscribers all of whose announcements the router got:
        each was held in its switch until the controller accepted the claim
        and sent it on, so a count short of the wanted one means the
        controller is still working through them."""
        for data in self.router_capture.read():
            seen = frames.announcement(data)
            if seen is not None:
                self.delivered.add(seen)
        return sum(1 for wanted in self.expected.values() if wanted <= self.delivered)

    def undelivered(self) -> dict[str, set[tuple[str, str]]]:
        """ip -> the announcements of that subscriber the router never got."""
        self._delivered()
        return {ip: wanted - self.delivered for ip, wanted in self.expected.items()
                if not wanted <= self.delivered}

    def hold_ends(self, connected_at: float) -> float:
        """When the controller's own hold on the switches ends: after a
        start it only adds flows to switches that come holding some, until
        --startup-grace after the start and RECONNECT_HOLD after each
        switch connected (controller/openflow/fabric.py); whatever it
        removes, it removes after that. connected_at: when the last switch
        was seen connected."""
        grace = float(BY_DEST["startup_grace"].default)
        if "--startup-grace" in self.controller_args:
            grace = float(self.controller_args[self.controller_args.index("--startup-grace") + 1])
        return max(self.started_at + grace, connected_at + RECONNECT_HOLD)

    def wait_in_sync(self, since: float, quiet: float = QUIET, timeout: float = 600.0,
                     interval: float = 0.5, phase: str = "waiting for sync") -> float:
        """Seconds from `since` (a monotonic time) until the switches were
        in sync (see the module's notes), their state unchanged for `quiet`
        seconds and past the controller's hold; TimeoutError with the last
        state when they never were, OutOfBudget when the budget ran out
        first."""
        wanted = self.wanted()
        deadline = time.monotonic() + timeout
        last, first_seen, connected_at = None, 0.0, None
        while True:
            self.budget.check(phase)
            now = time.monotonic()
            state = self.sync_state()
            if state.connected < wanted.connected:
                connected_at = None
            elif connected_at is None:
                connected_at = now
            complete = state.key()[:4] == wanted.key()[:4]
            if not complete or last is None or state.key() != last.key():
                first_seen = now
            elif (now - first_seen >= quiet and connected_at is not None
                  and now >= self.hold_ends(connected_at) + quiet):
                return first_seen - since
            last = state
            if now > deadline:
                raise TimeoutError(f"{phase}: not in sync after {timeout:.0f} s: {state} "
                                   f"(wanted {wanted.connected} switches, {wanted.links} link "
                                   f"directions, {wanted.hosts} hosts); not delivered: "
                                   f"{dict(list(self.undelivered().items())[:5])}")
            time.sleep(interval if complete else max(interval, 1.0))

    def flow_counts(self, workers: int = 4) -> dict[int, int]:
        """OpenFlow flow entries per switch (datapath id), as each bridge
        answers ovs-ofctl dump-aggregate on its management socket."""
        def count(switch) -> tuple[int, int]:
            out = self.ovs.ofctl("dump-aggregate", switch.name)
            match = re.search(r"flow_count=(\d+)", out)
            return switch.dpid, int(match.group(1)) if match else -1
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(count, self.tree.switches))

    # ---- hosts ------------------------------------------------------------------------

    def announce_services(self, timeout: float = 60.0) -> None:
        """The gateway's hosts say who they are: a broadcast ARP each, again
        every few seconds until the controller has them (a port learns
        nothing until the switch is programmed and the port settled)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.tree.services)
        while waiting:
            for host in waiting:
                self.injector.send(host.port_name, [frames.arp_announce(host)])
            pause = time.monotonic() + 2.0
            while waiting and time.monotonic() < pause:
                time.sleep(0.2)
                known = self.located()
                waiting = [h for h in waiting if h.ip not in known]
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"services not located within {timeout} s: "
                                   + ", ".join(h.name for h in waiting))
        self.announced.update((h.ip, h) for h in self.tree.services)

    def add_hosts(self, subscribers: Sequence[Host], *, rate: float = 1000.0,
                  ipv6: Callable[[Host], bool] = lambda h: True) -> hosts.Appearance:
        self.with_ipv6.update(h.ip for h in subscribers if ipv6(h))
        report = hosts.appear(self.injector, self.tree, subscribers, self.located, rate=rate,
                              ipv6=ipv6, budget=self.budget)
        self.announced.update((h.ip, h) for h in subscribers)
        self.expected.update((h.ip, {(h.mac, "arp"), *([(h.mac, "nd")] if ipv6(h) else [])})
                             for h in subscribers)
        report.not_sent_on = self._sent_on(subscribers, ipv6)
        return report

    def _sent_on(self, subscribers: Sequence[Host], ipv6: Callable[[Host], bool],
                 settle: float = 5.0) -> int:
        """Waits until the router got every located host's announcements;
        those still missing after `settle` quiet seconds are sent again,
        once. The controller sends a held frame on once, and a release it
        could not deliver (its switch busy past --switch-timeout) is not
        retried: a real host's next ARP does that, and a known host's own
        ARP passes the switch at once. Returns how many were sent again."""
        wanted = {h.ip for h in subscribers}
        missing, deadline = len(self.undelivered()), time.monotonic() + settle
        while missing and time.monotonic() < deadline:
            self.budget.check("held announcements sent on")
            time.sleep(0.5)
            now = len(set(self.undelivered()) & wanted)
            if now < missing:
                deadline = time.monotonic() + settle
            missing = now
        late = [self.announced[ip] for ip in set(self.undelivered()) & wanted]
        if late:
            self.injector.paced(hosts.announcements(late, self.tree.service("router"), ipv6),
                                1000.0, self.budget, "announcements sent again")
        return len(late)

    def bindings(self) -> set[tuple[str, str]]:
        """(MAC, IPv4 address) of every DHCP binding the controller logged
        since its last start (controller/topology/dhcp/snooping.py)."""
        log = self.log()
        if log is None or not log.exists():
            return set()
        return set(_BINDING.findall(log.read_text(errors="replace")))

    def leases(self, subscribers: Sequence[Host], *, rate: float = 500.0,
               rounds: int = 5, settle: float = 3.0) -> hosts.Appearance:
        """The DHCP server acknowledges each subscriber's lease, again to
        those whose binding the controller has not logged (as a client
        asks again when no answer came), up to `rounds` times."""
        report = hosts.Appearance(len(subscribers))
        started = time.monotonic()
        waiting = list(subscribers)
        for report.rounds in range(1, rounds + 1):
            report.frames += hosts.leases(self.injector, self.tree, waiting, rate, self.budget)
            deadline = time.monotonic() + settle
            while waiting and time.monotonic() < deadline:
                time.sleep(0.5)
                bound = self.bindings()
                waiting = [h for h in waiting if (h.mac, h.ip) not in bound]
            if not waiting:
                break
            report.resent += len(waiting)
        report.seconds = time.monotonic() - started
        if waiting:
            raise TimeoutError(f"{len(waiting)} of {len(subscribers)} DHCP bindings not "
                               f"snooped after {report.rounds} rounds (first: {waiting[0]})")
        return report

    # ---- probes ---------------------------------------------------------------------

    def probe(self, host: Host, dst_port: int, count: int = 20, wait: float = 2.0) -> Egress:
        """`count` TCP SYNs (each from its own source port) injected on
        host's port to the inet service's dst_port, and where they came
        out: every datapath port's TX counter before and after (all
        bridges share one dummy datapath, so that is every host's port in
        the tree), and how many of them the inet port's capture holds.
        The datapath's flow cache is emptied first, so the frames meet the
        tables as they are now (testbed/lab.py current_tables). The other
        frames ports send meanwhile (LLDP sweeps: one per switch every 20 s
        to each of its lines) add a frame or two; `count` frames through a
        port cannot hide among them."""
        inet = self.tree.service("inet")
        ports = [PROBE_PORT_BASE + (self._probes + n) % 10000 for n in range(count)]
        self._probes += count
        self.ovs.appctl("revalidator/purge")
        before = measure.tx_packets(self.ovs.appctl("dpctl/show", "-s"))
        self.injector.send(host.port_name, [frames.tcp_syn(host, inet, dst_port, src)
                                            for src in ports])
        wanted = {(host.ip, src, dst_port) for src in ports}
        deadline = time.monotonic() + wait
        while True:
            self.probes_seen.update(filter(None, map(frames.tcp_probe,
                                                     self.inet_capture.read())))
            if wanted <= self.probes_seen or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.2)  # a copy sent anywhere else is out by now too
        after = measure.tx_packets(self.ovs.appctl("dpctl/show", "-s"))
        rose = {port: after[port] - before.get(port, 0) for port in after
                if after[port] > before.get(port, 0)}
        return Egress(count, rose, len(wanted & self.probes_seen), inet.port_name)

    # ---- the controller's process ------------------------------------------------------

    @property
    def controller_pid(self) -> int:
        assert self.controller is not None
        return self.controller.proc.pid

    def log_problems(self) -> list[str]:
        """Errors and tracebacks in the controller's logs, every start's (as
        tests/e2e's labs check)."""
        problems = []
        for start in range(1, self.starts + 1):
            path = self.log(start)
            if path is not None and path.exists():
                problems += [line for line in path.read_text(errors="replace").splitlines()
                             if re.search(r" ERROR |Traceback|OFPET_", line)]
        return problems
