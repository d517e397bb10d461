"""The harness: a controller process plus a Mininet network, and real traffic.

Used by testbed/run.py (the main job), the Mininet tests and bench/. Switches use
Open vSwitch's userspace datapath (the kernel here has no openvswitch module)
in fail-mode secure, so they never fall back to a learning switch and drop
enforcement; host interfaces get TX checksum offload turned off, without which
TCP silently fails through the userspace datapath while ping works.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import OVSSwitch, RemoteController
from pyroute2 import netns
from pyroute2.ethtool import Ethtool

from testbed import leftovers

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a Mininet host runs by path, under the harness's interpreter: the
# scripts stay in mininet/, next to the topologies `mn --custom` loads.
HOST_SCRIPTS = ROOT / "mininet"
LISTENER = HOST_SCRIPTS / "tcp_listen.py"
UDP_PROBE = HOST_SCRIPTS / "udp_probe.py"


# ---- the controller process ----------------------------------------------

def _die_with_parent_prefix() -> list[str]:
    """setpriv makes the controller get SIGTERM when the harness dies, even by
    SIGKILL, so a crashed test run never leaves a controller holding the ports.
    Not a preexec_fn (prctl in the child), which makes Popen fork() the whole
    harness, grpcio's threads and all, and run Python between fork and exec:
    under load a child aborted there inside grpcio ("epoll_wait ... Bad file
    descriptor", exit -6) before it became the controller."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class ControllerProcess:
    """enforcement-controller as its own process (OS-Ken keeps process-wide
    state, so it is never started twice in one interpreter)."""

    def __init__(self, ofp_port: int, grpc_listen: str = "127.0.0.1:0",
                 log_path: pathlib.Path | None = None, extra_args=(),
                 env: dict[str, str] | None = None):
        self.ofp_port = ofp_port
        self.grpc_address = ""
        self.metrics_address = ""
        self.http_address = ""
        self.log_path = log_path
        exe = shutil.which("enforcement-controller",
                           path=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                                 os.environ.get("PATH", "")]))
        if exe is None:
            raise FileNotFoundError("enforcement-controller is not installed "
                                    "(pip install -e . in the virtualenv)")
        # Kept open for the process's life: its stderr writes there; stop() closes it.
        self._log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*_die_with_parent_prefix(), exe,
             "--grpc-listen", grpc_listen, "--ofp-port", str(ofp_port),
             *(() if "--metrics-listen" in extra_args else ("--metrics-listen", "127.0.0.1:0")),
             *(() if "--http-listen" in extra_args else ("--http-listen", "127.0.0.1:0")),
             *extra_args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)

    def wait_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}"
                                   f"{self._log_hint()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                match = re.search(r"READY grpc=(\S+)", line)
                if match:
                    self.grpc_address = match.group(1)
                    metrics = re.search(r" metrics=(\S+)", line)
                    self.metrics_address = metrics.group(1) if metrics else ""
                    view = re.search(r" http=(\S+)", line)
                    self.http_address = view.group(1) if view else ""
                    return self.grpc_address
        raise TimeoutError(f"controller not ready in {timeout} s{self._log_hint()}")

    def _log_hint(self) -> str:
        return f"; see {self.log_path}" if self.log_path else ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode


class ControlProxy:
    """A TCP relay between the switches and the controller that a test can
    cut and restore: the switches lose their controller connection without
    any change to their configuration (which would make OVS flush its flows)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.port = free_port()
        self._target = (target_host, target_port)
        self._up = threading.Event()
        self._up.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                switch_side, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self._up.is_set():
                switch_side.close()
                continue
            try:
                controller_side = socket.create_connection(self._target, timeout=2)
            except OSError:
                switch_side.close()
                continue
            controller_side.settimeout(None)
            # Without this, Nagle holds the second of two small OpenFlow
            # messages (flow_mod, then barrier) until the delayed ACK of the
            # first: 40 ms added to every confirmed change.
            for sock in (switch_side, controller_side):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [switch_side, controller_side]
            for a, b in ((switch_side, controller_side), (controller_side, switch_side)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()


# ---- the network -----------------------------------------------------------

def disable_tx_checksum(pid: int, ifname: str) -> None:
    """ethtool -K <ifname> tx off, inside the network namespace of pid.

    setns() moves only the calling thread, so the work runs in a thread of
    its own and the rest of the process stays where it was.
    """
    failure: list[BaseException] = []

    def work():
        home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            netns.setns(target)
            with Ethtool() as ethtool:
                features = ethtool.get_features(ifname)
                for name, feature in features.features.items():
                    if name.startswith("tx-checksum") and feature.enable:
                        feature.enable = False
                ethtool.set_features(ifname, features)
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
        finally:
            netns.setns(home)
            os.close(home)
            os.close(target)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


class _TaggedSwitch(OVSSwitch):
    """An OVS bridge that names the run creating it in its external_ids, in
    the same transaction as add-br: cleanup() deletes a bridge only with the
    tag of the record that names it."""

    def __init__(self, name, run: str = "", **params):
        super().__init__(name, **params)
        self.run = run

    def bridgeOpts(self):
        return super().bridgeOpts() + f" external_ids:{leftovers.BRIDGE_TAG}={self.run}"


class _RecordedNet(Mininet):
    """A Mininet whose record (leftovers.py) goes once it stopped cleanly."""

    record_path: pathlib.Path | None = None

    def stop(self):
        # What the harness started in a host and stops by pid (dhcp.py's
        # servers and clients), before the hosts' shells go: one may take
        # their SIGHUP for a reload and outlive them.
        for host in self.hosts:
            for thing in reversed(getattr(host, "lab_stops", ())):
                try:
                    thing.stop()
                except Exception as exc:  # the rest still goes
                    print(f"{host.name}: stopping {thing!r} failed: {exc!r}", file=sys.stderr)
        super().stop()
        if self.record_path is not None:
            leftovers.forget(self.record_path)


class _Controller(RemoteController):
    """The controller is known to listen (its READY line said so). Mininet's
    own probe (telnet to the port) reads the controller's OpenFlow HELLO as
    text when it comes quickly, and dies on the binary (UnicodeDecodeError)."""

    def checkListening(self):
        return None

    def stop(self, *_, **__):
        """RemoteController.stop() does nothing: its node shell (one per
        controller port) would outlive net.stop()."""
        self.terminate()


def start_network(topo, ofp_port: int | Sequence[int], *, controller_ip: str = "127.0.0.1",
                  protocols: str = "OpenFlow13",
                  controller_rate_limit: int | None = 1000) -> Mininet:
    """Builds and starts the network; every switch is connected to the
    controller at ofp_port with OpenFlow 1.3 (the bench also enables 1.4 for
    ovs-ofctl's bundles; the controller still speaks 1.3). Several ports
    (several controllers: high availability) connect every switch to each
    of them (one Controller record per port on every bridge, c0, c1...).

    The network is recorded under /run before its bridges exist (they are
    made by net.start()), so cleanup() can take it down after a crash."""
    setLogLevel(os.environ.get("MININET_LOG", "warning"))
    ports = [ofp_port] if isinstance(ofp_port, int) else list(ofp_port)
    if not ports:
        raise ValueError("start_network needs at least one OpenFlow port")
    run = leftovers.new_run()
    switch = functools.partial(_TaggedSwitch, run=run, datapath="user", protocols=protocols,
                               failMode="secure")
    net = _RecordedNet(topo=topo, switch=switch, controller=None,
                       autoSetMacs=True, waitConnected=False, build=False)
    try:
        for index, port in enumerate(ports):  # before build(), which adds a c0 otherwise
            net.addController(f"c{index}", controller=_Controller, ip=controller_ip,
                              port=port)
        net.build()
        net.record_path = leftovers.record(run, net)
        for host in net.hosts:
            for intf in host.intfList():
                if intf.name != "lo":
                    disable_tx_checksum(host.pid, intf.name)
        net.start()
        for switch in net.switches:
            for intf in switch.intfList():
                if intf.name != "lo":
                    silence(intf.name)
        if controller_rate_limit:
            limit_controller_rate(net, controller_rate_limit)
    except BaseException:
        with contextlib.suppress(Exception):
            net.stop()
        raise
    return net


def silence(ifname: str) -> None:
    """A switch port's own kernel interface (the root-namespace end of a
    Mininet link) must not speak: with IPv6 on, it sends router
    solicitations straight to the host on the other end, past the switch and
    every rule in it, which is no switch's behaviour."""
    path = pathlib.Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if path.exists():
        path.write_text("1")


def limit_controller_rate(net: Mininet, pps: int, burst: int | None = None) -> None:
    """Open vSwitch's own cap on packet-ins, per bridge (it queues them per
    in_port and shares the rate fairly): the last line behind the
    controller's meters (controller/openflow/dataplane.py). Set on each bridge's
    Controller record (one per controller it connects to), which a switch
    reads without dropping its flows."""
    burst = burst or max(25, pps // 4)
    for switch in net.switches:
        records = subprocess.run(["ovs-vsctl", "get", "bridge", switch.name, "controller"],
                                 capture_output=True, text=True, check=True).stdout
        for uuid in re.findall(r"[0-9a-f-]{36}", records):
            subprocess.run(["ovs-vsctl", "set", "controller", uuid,
                            f"controller_rate_limit={pps}",
                            f"controller_burst_limit={burst}"], check=True)


def wait_switches_connected(net: Mininet, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(net.switches)
    while waiting and time.monotonic() < deadline:
        waiting = [s for s in waiting if not s.connected()]
        time.sleep(0.2)
    if waiting:
        raise TimeoutError("switches not connected: " + ", ".join(s.name for s in waiting))


def cleanup() -> None:
    """Removes what networks started by start_network left behind: those of
    this process (teardown after a failed test) and of harness processes that
    died (a crashed run), so call it while this process runs no network.
    net.stop() stays the normal way down; unlike `mn -c`, this never touches
    a bridge, link or process of anyone else's (leftovers.py says how it
    tells them apart)."""
    leftovers.remove()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ofctl(command: str, switch: str, *args: str) -> str:
    """ovs-ofctl in OpenFlow 1.3 (what the lab's bridges speak)."""
    return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", command, switch, *args],
                          capture_output=True, text=True, check=True).stdout


def dump_flows(switch: str, table: int | None = None) -> list[str]:
    """Flows without counters, for placement checks and before/after
    comparisons (they prove placement, never forwarding)."""
    args = ["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", switch]
    if table is not None:
        args.append(f"table={table}")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return sorted(line.strip() for line in out.splitlines()
                  if line.strip() and not line.startswith("OFPST_FLOW"))


def packets_to_controller(switch: str) -> int:
    """Packets a switch sent to the controller so far (the counters of its
    flows whose action is CONTROLLER), LLDP discovery aside: a broadcast
    storm shows as a count that keeps growing while the hosts are quiet."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(re.search(r"n_packets=(\d+)", line).group(1))
               for line in out.splitlines()
               if "CONTROLLER" in line and "n_packets=" in line
               and "0x88cc" not in line)


def packets_flooded(switch: str) -> int:
    """Packets a switch flooded so far (the counters of its flood-out
    table, controller/openflow/dataplane.py): a frame going round a loop shows as a
    count that keeps growing while the hosts are quiet."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch, "table=5"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(m.group(1)) for m in re.finditer(r"n_packets=(\d+)", out))


def flow_cookie(line: str) -> int:
    match = re.search(r"cookie=(0x[0-9a-f]+)", line)
    return int(match.group(1), 16) if match else 0


def flows_with_cookie(switch: str, cookie: int, mask: int = 2**64 - 1) -> list[str]:
    return [line for line in dump_flows(switch) if flow_cookie(line) & mask == cookie]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


# ---- traffic -----------------------------------------------------------------

def current_tables() -> None:
    """Makes the next packets take the switches' flow tables as they are now.

    When the controller answers, the switch has confirmed the rules (barrier),
    but the datapath's flow cache (megaflows) drops a stale entry only when
    OVS's revalidator threads next run: usually within milliseconds, seconds
    on a loaded machine. A probe sent in between would test the cache, not
    the rules. Emptying the cache (4 ms) is exact; waiting a revalidation
    round (revalidator/wait) takes 0.5 s a probe and refuses several
    datapaths."""
    subprocess.run(["ovs-appctl", "revalidator/purge"], capture_output=True, check=True)


def start_listener(host, ports, udp_ports=(), v6: bool = False) -> None:
    """Accepts TCP on ports (over IPv6 too with v6) and echoes UDP on
    udp_ports inside host (killed with the host at net.stop())."""
    udp = f"--udp {' '.join(map(str, udp_ports))}" if udp_ports else ""
    host.cmd(f"{sys.executable} {LISTENER} {' '.join(map(str, ports))} {udp} "
             f"{'--v6' if v6 else ''} > /dev/null 2>&1 &")
    wanted = [f"0.0.0.0:{p}" for p in (*ports, *udp_ports)]
    wanted += [f"[::]:{p}" for p in (*ports, *udp_ports)] if v6 else []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listening = host.cmd("ss -Htln; ss -Huln").split()
        if all(w in listening for w in wanted):
            return
        time.sleep(0.1)
    raise TimeoutError(f"listener on {host.name} ports {ports} {udp_ports} did not start")


def udp_answers(src, dst_ip: str, port: int) -> bool:
    """A UDP request from src that dst answers (the echo comes back)."""
    current_tables()
    out = src.cmd(f"{sys.executable} {UDP_PROBE} {dst_ip} {port}; echo rc=$?")
    return "rc=0" in out


def iperf3_mbps(src, dst, seconds: int = 4, omit: int = 1) -> float:
    """TCP goodput from src to dst in Mbit/s as iperf3 reports it (payload,
    receiver side), skipping the first `omit` seconds (slow start, bursts).
    The one-off server is a background job of dst's shell, not a daemon
    (-D): it goes with the host even when the client never reached it, and
    cleanup() can find it (leftovers.py)."""
    import json
    dst.cmd("iperf3 -s -1 > /dev/null 2>&1 &")
    current_tables()
    time.sleep(0.3)
    out = src.cmd(f"iperf3 -c {dst.IP()} -t {seconds} -O {omit} -J")
    result = json.loads(out[out.index("{"):])
    if "error" in result:
        raise RuntimeError(f"iperf3 {src.name} -> {dst.name}: {result['error']}")
    return result["end"]["sum_received"]["bits_per_second"] / 1e6


def tcp_connects(src, dst_ip: str, port: int, timeout: float = 2.0) -> bool:
    """A real TCP handshake from src to dst_ip:port."""
    current_tables()
    out = src.cmd(f"nc -z -w {int(timeout)} {dst_ip} {port}; echo rc=$?")
    return "rc=0" in out


def appctl(*args: str) -> str:
    """ovs-appctl against the machine's ovs-vswitchd (the lab's switches)."""
    return subprocess.run(["ovs-appctl", *args], capture_output=True, text=True,
                          check=True).stdout


def plug_in_host(net: Mininet, name: str, switch: str, ip: str, mac: str):
    """A new host cabled to a running switch; returns it once its port
    exists on the switch (the moment of plugging)."""
    host = net.addHost(name, ip=f"{ip}/24", mac=mac)
    link = net.addLink(host, net.get(switch))
    disable_tx_checksum(host.pid, link.intf1.name)
    host.setIP(f"{ip}/24", intf=link.intf1)
    host.setMAC(mac, intf=link.intf1)
    net.get(switch).attach(link.intf2)
    return host


def forget_unresolved_neighbours(*hosts) -> None:
    """Drops each host's neighbour entries still being resolved or given up.

    A host that tried to reach a cut-off peer keeps resolving its address
    (three probes a second apart, the last one perhaps sent just before the
    lift) and drops what it sends there until it gives up, up to 3 s after
    the lift: the kernel's state, not the switch's. Forgotten, the next
    packet resolves afresh, so a check after a lift tests the switch."""
    for host in hosts:
        host.cmd("ip neigh flush nud incomplete; ip neigh flush nud probe; "
                 "ip neigh flush nud failed")


def ping(src, dst_ip: str, count: int = 1, timeout: float = 2.0) -> bool:
    current_tables()
    out = src.cmd(f"ping -c {count} -W {int(timeout)} {dst_ip} > /dev/null; echo rc=$?")
    return "rc=0" in out
