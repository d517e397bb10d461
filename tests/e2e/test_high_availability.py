"""High availability with real parts: three controller instances started at
once on one PostgreSQL server, every switch connected to all three, real
hosts and real TCP. Any instance answers; a leader killed mid-stream loses
no decision; a frozen leader that wakes is fenced and changes nothing; a
switch that comes back empty while a former follower leads is rebuilt; a
restarted instance rejoins as a follower.

Who is master is read from Open vSwitch itself (its Controller records),
who leads from each instance's metrics.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import ARTIFACTS

from enforcement.client import EnforcementClient
from enforcement.v1 import enforcement_pb2 as pb

pytestmark = pytest.mark.mininet

INSTANCES = 3
LEASE = 2.0
STREAM = 500            # decisions in the failover stream
CLIENTS = 8
BLOCKED_BASE = 20000    # decision n blocks TCP port BLOCKED_BASE + n
OPEN = [80, 587, 21000, 21001]
EACH_BASE, SPLIT_PORT = 22000, 23000
INET = "10.0.0.200"
SUBSCRIBERS = ["h1", "h2", "h3", "h4"]


def block(port: int) -> pb.ActionRequest:
    return pb.ActionRequest(kind=pb.ACTION_KIND_BLOCK, protocol="tcp", ports=[port])


class Instance:
    """One controller process of the three, restartable."""

    def __init__(self, index: int, ofp_port: int, url: str, state_dir):
        self.index = index
        self.ofp_port = ofp_port
        self.args = ["--db", url, "--lease-seconds", str(LEASE), "--state-dir",
                     str(state_dir), "--instance-name", f"ctl-{index}",
                     "--audit-interval", "5"]
        self.process = None
        self.starts = 0

    @property
    def log_path(self):
        suffix = "" if self.starts <= 1 else f"-run{self.starts}"
        return ARTIFACTS / f"test_high_availability-controller-{self.index}{suffix}.log"

    def start(self) -> None:
        import lab as harness
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

    def client(self, *instances, timeout: float = 20.0) -> EnforcementClient:
        return EnforcementClient([i.address for i in instances or self.instances],
                                 timeout=timeout)

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
        controllers = _ovs_json("--columns=_uuid,target,role,is_connected", "controller")
        by_uuid = {row[0][1]: (row[1], row[2], row[3]) for row in controllers}
        masters = {}
        for name, refs in _ovs_json("--columns=name,controller", "bridge"):
            if name not in {s.name for s in self.net.switches}:
                continue
            uuids = [u[1] for u in refs[1]] if refs[0] == "set" else [refs[1]]
            ports = [int(by_uuid[u][0].rsplit(":", 1)[1]) for u in uuids
                     if by_uuid[u][1] == "master" and by_uuid[u][2]]
            masters[name] = ports[0] if len(ports) == 1 else None
        return masters

    def roles_of(self, instance: Instance) -> set[str]:
        controllers = _ovs_json("--columns=target,role,is_connected", "controller")
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
        import lab as harness
        harness.wait_until(lambda: all(
            self.roles_of(i) == ({"master"} if i is leader else {"slave"})
            for i in self.instances if i.process.proc.poll() is None), timeout,
            f"instance {leader.index} master and the others slaves on every switch")

    def probe(self, host: str, ports) -> dict[int, bool]:
        import lab as harness
        spec = " ".join(map(str, ports))
        out = self.host(host).cmd(f"{sys.executable} {harness.HERE / 'tcp_probe.py'} "
                                  f"{INET} {spec} --timeout 1.5")
        return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def _ovs_json(columns: str, table: str) -> list:
    out = subprocess.run(["ovs-vsctl", "--format=json", columns, "list", table],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["data"]


@pytest.fixture(scope="module")
def ha(mininet_lock, tmp_path_factory):
    import lab as harness
    import pgcluster
    import topologies
    ARTIFACTS.mkdir(exist_ok=True)
    harness.cleanup()
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(pgcluster.PgCluster(durable=False))
        url = cluster.create_database("ha")
        instances = [Instance(i + 1, harness.free_port(), url,
                              tmp_path_factory.mktemp(f"state{i + 1}"))
                     for i in range(INSTANCES)]
        for instance in instances:  # all at once, on the empty database
            instance.start()
        stack.callback(lambda: [i.process.stop() for i in instances])
        for instance in instances:
            instance.process.wait_ready()
        net = harness.start_network(topologies.IspTopo(access=2, subscribers_per_switch=2),
                                    [i.ofp_port for i in instances])
        stack.callback(net.stop)
        harness.wait_switches_connected(net)
        lab = HaLab(instances, net)
        leader = lab.leader()
        with lab.client(leader) as ctl:
            harness.wait_until(lambda: len(ctl.topology().links) >= 6, 20, "6 links")
        from controller.settling import SETTLE_SECONDS
        time.sleep(SETTLE_SECONDS)
        assert net.pingAll(timeout=2) == 0
        ips = {h.IP() for h in net.hosts}
        for instance in instances:  # followers know the hosts too
            with lab.client(instance) as ctl:
                harness.wait_until(lambda: ips <= {h.ip for h in ctl.topology().hosts},
                                   10, f"every host located by instance {instance.index}")
        harness.start_listener(lab.host("inet"), [
            *OPEN, *range(BLOCKED_BASE, BLOCKED_BASE + STREAM),
            *range(EACH_BASE, EACH_BASE + INSTANCES), SPLIT_PORT])
        yield lab
        for instance in instances:
            problems = [line for line in instance.log().splitlines()
                        if " ERROR " in line or "Traceback" in line or "STALE" in line]
            assert not problems, f"instance {instance.index}: {problems[:5]}"
    harness.cleanup()


def test_started_together_all_come_up_and_one_is_master_everywhere(ha):
    assert all(i.process.proc.poll() is None for i in ha.instances)
    leader = ha.leader()
    assert [i.index for i in ha.instances if i.leads()] == [leader.index]
    ha.wait_master(leader, 10)
    ha.wait_roles(leader)


def test_any_instance_takes_decisions_and_answers_reads(ha):
    ids = []
    for n, instance in enumerate(ha.instances):
        with ha.client(instance) as ctl:
            record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="CASE-EACH",
                               request_id=f"each-{n}", action=block(EACH_BASE + n))
        assert record.state == pb.STATE_ACTIVE, record.state_reason
        ids.append(record.id)
    for instance in ha.instances:
        with ha.client(instance) as ctl:
            assert [ctl.get(i).state for i in ids] == [pb.STATE_ACTIVE] * INSTANCES
    ports = list(range(EACH_BASE, EACH_BASE + INSTANCES))
    assert ha.probe("h1", [*ports, 80, 587]) == {**dict.fromkeys(ports, False),
                                                  80: True, 587: True}
    assert ha.probe("h2", ports) == dict.fromkeys(ports, True)  # its neighbour
    leader = ha.leader()
    with ha.client(leader) as ctl:
        actors = [e.actor for e in ctl.audit(case_id="CASE-EACH") if e.call == "Apply"]
    assert sum(" via " in a for a in actors) == INSTANCES - 1, actors
    for n, instance in enumerate(reversed(ha.instances)):
        with ha.client(instance) as ctl:
            assert ctl.lift(ids[n], "case closed").state == pb.STATE_LIFTED
    assert ha.probe("h1", ports) == dict.fromkeys(ports, True)


def test_the_leader_killed_mid_stream_loses_no_decision(ha):
    """500 decisions from 8 clients given all three addresses; the leader
    is killed with SIGKILL a third of the way through."""
    leader = ha.leader()
    acknowledged: dict[int, pb.Enforcement] = {}
    errors: list[str] = []
    lock = threading.Lock()
    pings = [ha.host("h4").popen(["ping", "-c", "300", "-i", "0.05", INET]),
             ha.host("dns").popen(["ping", "-c", "300", "-i", "0.05", "10.0.0.2"])]

    def client(k: int) -> None:
        order = ha.instances[k % INSTANCES:] + ha.instances[:k % INSTANCES]
        with ha.client(*order, timeout=30) as ctl:
            for n in range(k, STREAM, CLIENTS):
                try:
                    record = ctl.apply(ip=f"10.0.0.{n % 4 + 1}", violation="spam",
                                       case_id="CASE-STREAM", request_id=f"stream-{n}",
                                       action=block(BLOCKED_BASE + n))
                except Exception as exc:
                    with lock:
                        errors.append(f"decision {n}: {exc}")
                    continue
                with lock:
                    acknowledged[n] = record
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < STREAM // 3 and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.process.proc.wait()
    survivors = [i for i in ha.instances if i is not leader]
    successor, failover = ha.wait_new_leader(leader, killed)
    ha.wait_master(successor, 10)
    for thread in threads:
        thread.join(120)
    print(f"failover: a new leader held every switch {failover:.2f} s after the kill; "
          f"{len(acknowledged)} decisions acknowledged, {len(errors)} errors")
    assert not errors, errors[:5]
    assert len(acknowledged) == STREAM
    assert failover < LEASE + 2.5
    with ha.client(*survivors) as ctl:
        stored = ctl.list(case_id="CASE-STREAM")
    assert len(stored) == STREAM and len({r.request_id for r in stored}) == STREAM
    assert {r.id for r in stored} == {r.id for r in acknowledged.values()}
    assert {r.state for r in stored} == {pb.STATE_ACTIVE}
    for k, name in enumerate(SUBSCRIBERS):
        mine = [BLOCKED_BASE + n for n in range(k, STREAM, 4)]
        seen = ha.probe(name, [*mine, *OPEN])
        assert seen == {**dict.fromkeys(mine, False), **dict.fromkeys(OPEN, True)}, name
    for ping in pings:
        out, _ = ping.communicate(timeout=60)
        assert " 0% packet loss" in out.decode(), out.decode()[-300:]
    # The killed instance comes back as a follower; the leader stays.
    leader.start()
    leader.process.wait_ready()
    time.sleep(LEASE)
    assert ha.leader() is successor and not leader.leads()
    ha.wait_roles(successor)


def test_a_frozen_leader_wakes_fenced_and_changes_nothing(ha):
    old = ha.leader()
    old.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        new, took = ha.wait_new_leader(old, frozen)
        print(f"a frozen leader was replaced on every switch in {took:.2f} s")
        assert took < LEASE + 2.5
        others = [i for i in ha.instances if i is not old]
        with ha.client(*others) as ctl:
            split = ctl.apply(ip="10.0.0.2", violation="spam", case_id="CASE-SPLIT",
                              request_id="split-1", action=block(SPLIT_PORT))
            first = next(r for r in ctl.list(case_id="CASE-STREAM") if r.request_id
                         == "stream-0")
            ctl.lift(first.id, "lifted while the old leader slept")
    finally:
        old.signal(signal.SIGCONT)
    import lab as harness
    harness.wait_until(lambda: "no longer leading" in old.log(), 10,
                       "the old leader stepping down")
    print("the old leader on waking: " + next(
        line for line in old.log().splitlines() if "no longer leading" in line))
    time.sleep(LEASE)
    assert new.leads() and not old.leads()
    ha.wait_roles(new)
    with ha.client(old) as ctl:
        seen_by_old = {r.id: r.state for r in ctl.list()}
    with ha.client(new) as ctl:
        assert {r.id: r.state for r in ctl.list()} == seen_by_old
    assert split.state == pb.STATE_ACTIVE
    assert ha.probe("h2", [SPLIT_PORT, 80]) == {SPLIT_PORT: False, 80: True}
    assert ha.probe("h1", [BLOCKED_BASE, BLOCKED_BASE + 4]) == {
        BLOCKED_BASE: True, BLOCKED_BASE + 4: False}


def test_a_switch_back_empty_while_a_former_follower_leads_is_rebuilt(ha):
    """Setting a bridge's controllers again wipes its flows and meters:
    the switch reconnects empty and the leader rebuilds it."""
    leader = ha.leader()
    targets = [f"tcp:127.0.0.1:{i.ofp_port}" for i in ha.instances]
    subprocess.run(["ovs-vsctl", "del-controller", "s2"], check=True)
    subprocess.run(["ovs-vsctl", "set-controller", "s2", *targets], check=True)
    import lab as harness
    harness.wait_until(lambda: ha.masters().get("s2") == leader.ofp_port, 15,
                       "s2 mastered by the leader again")
    harness.wait_until(lambda: ha.host("h1").cmd(f"ping -c1 -W1 {INET}").count(
        " 0% packet loss") == 1, 20, "h1 reaching the Internet again")
    mine = [BLOCKED_BASE + n for n in range(4, STREAM, 4)][:40]
    assert ha.probe("h1", [*mine, 80]) == {**dict.fromkeys(mine, False), 80: True}
