"""Fixtures for tests against real Open vSwitch, real Mininet hosts and the
real controller process over a real gRPC channel.

Every network is torn down even when a test fails (net.stop(), then
lab.cleanup() for whatever a failure left: this harness's own bridges, links
and processes, never anyone else's), and a test fails when the controller
logged an OpenFlow error or a traceback.
"""
from __future__ import annotations

import fcntl
import os
import pathlib
import re
import shutil
import subprocess
import time

import grpc
import pytest

from controller.topology.settling import SETTLE_SECONDS

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"


def _requirements_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ovs-vsctl", "mnexec", "nc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode:
        return "Open vSwitch is not running (/usr/share/openvswitch/scripts/ovs-ctl start)"
    return None


def pytest_collection_modifyitems(config, items):
    missing = _requirements_missing()
    if missing is None:
        return
    # On CI, or under scripts/test.sh (which installs everything), a missing
    # piece is a broken install, not a reason to skip.
    if os.environ.get("CI") or os.environ.get("ENFORCEMENT_NO_SKIP"):
        raise pytest.UsageError(f"Mininet tests cannot run: {missing}")
    for item in items:
        if "mininet" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=missing))


STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


class Lab:
    """A running controller plus a started Mininet network."""

    def __init__(self, controller, net, channel, log_path):
        from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
        self.controller = controller
        self.net = net
        self.channel = channel
        self.stub = pb_grpc.EnforcementServiceStub(channel)
        self.log_path = log_path

    def host(self, name):
        return self.net.get(name)

    def restart(self, controller_args=None, *, name: str = "restarted", kill: bool = False,
                expected_links: int = 1) -> None:
        """Stops the controller (SIGKILL with kill, else SIGTERM) and starts
        another on the same OpenFlow port with controller_args (the same as
        before by default), logging beside the first (NAME in the file's
        name), on an insecure channel. Returns once the switches are back,
        expected_links discovered and every host located again: a new
        controller knows a host once it speaks, and learns nothing on a port
        still settling, so each host ARPs once the ports settled."""
        from enforcement.v1 import enforcement_pb2 as pb
        from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
        from testbed import lab as harness
        if kill:
            self.controller.proc.kill()
        self.controller.stop()
        args = self.controller_args if controller_args is None else list(controller_args)
        first = ARTIFACTS / f"{self.name}-controller.log"
        self.log_path = first.with_name(f"{first.stem}-{name}.log")
        self.controller = harness.ControllerProcess(self.ofp_port, log_path=self.log_path,
                                                    extra_args=args)
        self.controller.wait_ready()
        self.controller_args = args
        self.channel.close()
        self.channel = grpc.insecure_channel(self.controller.grpc_address)
        self.stub = pb_grpc.EnforcementServiceStub(self.channel)

        def topology():
            return self.stub.GetTopology(pb.GetTopologyRequest())
        harness.wait_until(lambda: len(topology().switches) == len(self.net.switches)
                           and len(topology().links) >= expected_links, 30,
                           "the switches and links back")
        time.sleep(SETTLE_SECONDS)
        hosts = self.net.hosts
        for host, peer in zip(hosts, [*hosts[1:], hosts[0]], strict=True):
            host.cmd("ip neigh flush all")
            host.cmd(f"ping -c 1 -W 1 {peer.IP()} > /dev/null")
        ips = {h.IP() for h in hosts}
        harness.wait_until(lambda: ips <= {h.ip for h in topology().hosts}, 10,
                           "every host located again")

    def log_problems(self) -> list[str]:
        """Each error entry whole: its line and the traceback lines after it
        (they carry no timestamp), so a failure says what went wrong."""
        problems: list[str] = []
        inside = False
        for line in self.log_path.read_text(errors="replace").splitlines():
            if STAMP.match(line):
                inside = bool(re.search(r" ERROR |Traceback|OFPET_", line))
                if inside:
                    problems.append(line)
            elif inside:
                problems[-1] += "\n" + line
            elif re.search(r"Traceback|OFPET_", line):
                problems.append(line)
                inside = True
        return problems


# Mininet names switches s1, s2... and starting one deletes any bridge of that
# name first (OVSSwitch.start), so two test runs on one machine (two
# checkouts, a developer and CI) must not overlap: each module holds this lock
# while its network exists.
LOCK_PATH = "/run/lock/sdn-enforcement-mininet.lock"


@pytest.fixture(scope="module")
def mininet_lock():
    with open(LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def lab_factory(request, tmp_path_factory, mininet_lock):
    """Starts a controller and a topology; tears both down at module end."""
    from testbed import lab as harness
    started = []

    def start(topo, *, expected_links: int, controller_args=(), via_proxy=False,
              credentials: grpc.ChannelCredentials | None = None,
              reachable=None, db: str | None = None) -> Lab:
        """credentials: the lab's own channel over mutual TLS (the controller
        then needs the --tls-* arguments in controller_args). reachable:
        checks the network works before any enforcement (given the Mininet
        net); by default every host pings every other. db: the store's URL;
        a new SQLite file by default."""
        from enforcement.v1 import enforcement_pb2 as pb
        ARTIFACTS.mkdir(exist_ok=True)
        harness.cleanup()
        ofp_port = harness.free_port()
        # By file name: the module's own name is tests.e2e.<name>, and the
        # log keeps the name it always had.
        log_path = ARTIFACTS / f"{request.path.stem}-controller.log"
        db = db or f"sqlite:///{tmp_path_factory.mktemp('store') / 'enforcement.db'}"
        controller = harness.ControllerProcess(
            ofp_port, log_path=log_path, extra_args=["--db", db, *controller_args])
        started.append(("controller", controller))
        controller.wait_ready()
        proxy = None
        if via_proxy:
            proxy = harness.ControlProxy(ofp_port)
            started.append(("proxy", proxy))
        net = harness.start_network(topo, proxy.port if proxy else ofp_port)
        started.append(("net", net))
        harness.wait_switches_connected(net)
        channel = (grpc.secure_channel(controller.grpc_address, credentials)
                   if credentials else grpc.insecure_channel(controller.grpc_address))
        started.append(("channel", channel))
        lab = Lab(controller, net, channel, log_path)
        lab.name = request.path.stem
        started.append(("lab", lab))  # the controller and channel of a restart
        lab.proxy = proxy
        # What a test needs to start the controller again (a restart).
        lab.ofp_port = ofp_port
        lab.controller_args = ["--db", db, *controller_args]
        # Links first: hosts are located only on ports known not to be uplinks.
        harness.wait_until(lambda: len(lab.stub.GetTopology(pb.GetTopologyRequest()).links)
                   >= expected_links, 20, f"{expected_links} discovered links")
        # Access ports flood nothing until they settled (controller/topology/settling.py).
        time.sleep(SETTLE_SECONDS)
        if reachable is None:
            loss = net.pingAll(timeout=2)
            assert loss == 0, f"{loss}% loss before any enforcement"
        else:
            reachable(net)
        ips = {h.IP() for h in net.hosts}
        harness.wait_until(lambda: ips <= {h.ip for h in lab.stub.GetTopology(
            pb.GetTopologyRequest()).hosts}, 10, "every host located")
        return lab

    yield start
    for kind, thing in reversed(started):
        try:
            if kind in ("net", "controller"):
                thing.stop()
            elif kind == "lab":
                thing.channel.close()
                thing.controller.stop()
            else:
                thing.close()
        except Exception as exc:  # keep tearing down the rest
            print(f"teardown of {kind} failed: {exc}")
    harness.cleanup()
