"""Several controller instances on one PostgreSQL server, and a network
whose switches connect to all of them: the harness of the high-availability
tests and of bench/failover.py.

Who is master is read from Open vSwitch itself (its Controller records,
whose status it refreshes every few seconds), who leads from each
instance's metrics (an instance says it leads once every switch confirmed
its MASTER claim).
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import re
import subprocess
import sys
import time
import urllib.request

from controller.topology.settling import SETTLE_SECONDS
from enforcement.clients.client import EnforcementClient
from testbed import lab as harness
from testbed import pgcluster

INET = "10.0.0.200"


class Instance:
    """One controller process of the three, restartable."""

    def __init__(self, index: int, ofp_port: int, url: str, state_dir, log_dir: pathlib.Path,
                 name: str, extra_args=()):
        self.index = index
        self.ofp_port = ofp_port
        self.args = ["--db", url, "--state-dir", str(state_dir),
                     "--instance-name", f"ctl-{index}", *extra_args]
        self.process = None
        self.starts = 0
        self._log_dir = log_dir
        self._name = name

    @property
    def log_path(self):
        suffix = "" if self.starts <= 1 else f"-run{self.starts}"
        return self._log_dir / f"{self._name}-controller-{self.index}{suffix}.log"

    def start(self) -> None:
        self.starts += 1
        self.process = harness.ControllerProcess(self.ofp_port, log_path=self.log_path,
                                                 extra_args=self.args)

    @property
    def address(self) -> str:
        return self.process.grpc_address

    def metric(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://{self.process.metrics_address}/metrics",
                                        timeout=1) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else None

    def leads(self) -> bool:
        return self.process.proc.poll() is None and self.metric("enforcement_leader") == 1

    def signal(self, signum) -> None:
        self.process.proc.send_signal(signum)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class HaLab:
    def __init__(self, instances, net):
        self.instances = instances
        self.net = net

    def host(self, name):
        return self.net.get(name)

    def client(self, *instances, timeout: float = 20.0, **options) -> EnforcementClient:
        return EnforcementClient([i.address for i in instances or self.instances],
                                 timeout=timeout, **options)

    def leader(self, timeout: float = 10.0) -> Instance:
        """The one instance that says it leads (waiting for there to be one)."""
        deadline = time.monotonic() + timeout
        while True:
            leading = [i for i in self.instances if i.leads()]
            if len(leading) == 1:
                return leading[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"instances leading: {[i.index for i in leading]}")
            time.sleep(0.05)

    def masters(self) -> dict[str, int | None]:
        """Switch -> the OpenFlow port of the instance the switch holds as
        master (None: none), read from Open vSwitch."""
        controllers = ovs_json("--columns=_uuid,target,role,is_connected", "controller")
        by_uuid = {row[0][1]: (row[1], row[2], row[3]) for row in controllers}
        masters = {}
        for name, refs in ovs_json("--columns=name,controller", "bridge"):
            if name not in {s.name for s in self.net.switches}:
                continue
            uuids = [u[1] for u in refs[1]] if refs[0] == "set" else [refs[1]]
            ports = [int(by_uuid[u][0].rsplit(":", 1)[1]) for u in uuids
                     if by_uuid[u][1] == "master" and by_uuid[u][2]]
            masters[name] = ports[0] if len(ports) == 1 else None
        return masters

    def roles_of(self, instance: Instance) -> set[str]:
        controllers = ovs_json("--columns=target,role,is_connected", "controller")
        return {role for target, role, connected in controllers
                if target.endswith(f":{instance.ofp_port}") and connected}

    def wait_master(self, instance: Instance, timeout: float) -> float:
        """Seconds until every switch holds instance as its master."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if set(self.masters().values()) == {instance.ofp_port}:
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"switches' masters: {self.masters()}, wanted "
                           f"port {instance.ofp_port}")

    def wait_new_leader(self, old: Instance, since: float, timeout: float = 15.0):
        """The instance that leads instead of old, and the seconds from
        since until it said so. An instance says it leads once every switch
        confirmed (barrier) its MASTER claim and its memory is the store's.
        (Open vSwitch's own Controller records lag: it refreshes their
        status every few seconds; wait_master reads those.)"""
        others = [i for i in self.instances if i is not old]
        while time.monotonic() - since < timeout:
            leading = [i for i in others if i.leads()]
            if leading:
                return leading[0], time.monotonic() - since
            time.sleep(0.02)
        raise TimeoutError("no instance took over")

    def wait_roles(self, leader: Instance, timeout: float = 15.0) -> None:
        """Open vSwitch holds leader as master and every other connected
        instance as slave, on every switch."""
        harness.wait_until(lambda: all(
            self.roles_of(i) == ({"master"} if i is leader else {"slave"})
            for i in self.instances if i.process.proc.poll() is None), timeout,
            f"instance {leader.index} master and the others slaves on every switch")

    def probe(self, host: str, ports) -> dict[int, bool]:
        """Which TCP ports of the Internet stand-in a host can connect to."""
        spec = " ".join(map(str, ports))
        out = self.host(host).cmd(f"{sys.executable} {harness.HOST_SCRIPTS / 'tcp_probe.py'} "
                                  f"{INET} {spec} --timeout 1.5")
        return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def ovs_json(columns: str, table: str) -> list:
    out = subprocess.run(["ovs-vsctl", "--format=json", columns, "list", table],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["data"]


@contextlib.contextmanager
def running(topo, *, instances: int, log_dir: pathlib.Path, name: str, workdir: pathlib.Path,
            links: int, extra_args=(), listen=()):
    """PostgreSQL, the instances started at once on its empty database, and
    the network; yields the HaLab once links are discovered, every host
    reachable and located by every instance, and inet listens on listen."""
    harness.cleanup()
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(pgcluster.PgCluster(durable=False))
        url = cluster.create_database("ha")
        started = [Instance(i + 1, harness.free_port(), url, workdir / f"state{i + 1}",
                            log_dir, name, extra_args) for i in range(instances)]
        for instance in started:
            instance.start()
        stack.callback(lambda: [i.process.stop() for i in started])
        for instance in started:
            instance.process.wait_ready()
        net = harness.start_network(topo, [i.ofp_port for i in started])
        stack.callback(net.stop)
        harness.wait_switches_connected(net)
        lab = HaLab(started, net)
        with lab.client(lab.leader()) as ctl:
            harness.wait_until(lambda: len(ctl.topology().links) >= links, 20,
                               f"{links} links")
        time.sleep(SETTLE_SECONDS)
        loss = net.pingAll(timeout=2)
        if loss:
            raise RuntimeError(f"{loss}% loss before any enforcement")
        ips = {h.IP() for h in net.hosts}
        for instance in started:  # followers know the hosts too
            with lab.client(instance) as ctl:
                harness.wait_until(lambda: ips <= {h.ip for h in ctl.topology().hosts},
                                   10, f"every host located by instance {instance.index}")
        if listen:
            harness.start_listener(lab.host("inet"), list(listen))
        yield lab
    harness.cleanup()
