"""The store fails under a stream of decisions, with the real controller
process, real Open vSwitch and real gRPC clients: PostgreSQL killed and
started again, its connections dropped in a loop, a statement made to fail
by a trigger, and the disk under the database turned read-only
(PostgreSQL's, then SQLite's). For each: every acknowledged decision is in
the store and on the switch, every refused one (UNAVAILABLE) on neither from
the moment it is refused, and after the next drift audit the switches'
enforcement flows, the API's List and the database's rows agree. Real
traffic shows it: an acknowledged port block stops its subscriber's TCP
connect while another port connects, a refused one blocks nothing.

Topology: LinearTopo(2, 3): h1 h2 h3 on s1, h4 h5 h6 on s2; h6 listens on
every port a decision may block. Four clients, one subscriber each, and
each decision blocks a TCP port of its own, so a rule on a switch names
the decision it came from, refused or not.

The disk: `mount -o remount,ro` is refused while a database holds its files
open (EBUSY), so the kernel's own way is used, the read-only turn after a
disk error (testbed/disk.py); the filesystem takes writes again only once
every file on it is closed, so the database's process stops first:
PostgreSQL aborts by itself, the controller on SQLite is restarted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time

import grpc
import orjson
import pytest
import sqlalchemy as sa

from enforcement.domain import pipeline
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import pgcluster, topologies
from testbed.disk import LoopDisk

pytestmark = pytest.mark.mininet

AUDIT_INTERVAL = 2.0
SUBSCRIBERS = ("h1", "h2", "h4", "h5")   # one client each
MOST = 30                                # decisions a client sends at most
PAUSE = 0.15                             # between a client's decisions
DEADLINE = 10.0                          # each call's
BASE = 30000                             # client k's decision n blocks BASE + MOST * k + n
OPEN = 80
NS = pipeline.NS_ENFORCE << pipeline.COOKIE_NAMESPACE_SHIFT
SWITCHES = ("s1", "s2")
CONTROLLER_ARGS = ["--audit-interval", str(AUDIT_INTERVAL)]


def blocked_port(client: int, n: int) -> int:
    return BASE + MOST * client + n


@dataclasses.dataclass
class World:
    lab: object
    cluster: pgcluster.PgCluster
    pg_disk: LoopDisk
    url: str
    sqlite_disk: LoopDisk


@pytest.fixture(scope="module")
def world(lab_factory):
    """The network first, then the disks: a Mininet host is a mount
    namespace of its own (mnexec), and one made while a disk is mounted
    keeps a copy of that mount, which holds the device after the unmount
    that repair() needs. Then PostgreSQL on its disk, fsync on (what reached
    the disk is what an acknowledged decision rests on), and the controller
    moved onto it."""
    missing = pgcluster.unavailable()
    if missing:
        if os.environ.get("CI") or os.environ.get("ENFORCEMENT_NO_SKIP"):
            pytest.fail(f"PostgreSQL cannot run: {missing}")
        pytest.skip(missing)
    lab = lab_factory(topologies.LinearTopo(switches=2, hosts_per_switch=3),
                      expected_links=2, controller_args=CONTROLLER_ARGS)
    harness.start_listener(lab.host("h6"), [OPEN, *range(BASE, BASE + MOST * len(SUBSCRIBERS))])
    with contextlib.ExitStack() as stack:
        pg_disk = stack.enter_context(LoopDisk(owner=pgcluster.USER))
        cluster = pgcluster.PgCluster(home=pg_disk.path / "pg", durable=True)
        stack.callback(cluster.stop)
        cluster.start()
        sqlite_disk = stack.enter_context(LoopDisk())
        url = cluster.create_database("enforcement")
        # Stopped before the disks under its stores go (whichever runs then).
        stack.callback(lambda: lab.controller.stop())
        lab.restart(["--db", url, *CONTROLLER_ARGS], name="postgres", expected_links=2)
        yield World(lab, cluster, pg_disk, url, sqlite_disk)


@pytest.fixture(scope="module")
def lab(world):
    return world.lab


@pytest.fixture(autouse=True)
def clean_slate(lab):
    """Each test starts and ends with nothing enforced; a test fails when
    the controller logged a traceback or an OpenFlow error (the store's
    refusals are logged as errors: they are expected here)."""
    lift_everything(lab)
    yield
    lift_everything(lab)
    problems = [p for p in lab.log_problems() if "Traceback" in p or "OFPET_" in p]
    assert problems == [], problems[:3]


def lift_everything(lab):
    for e in lab.stub.List(pb.ListRequest(states=[pb.STATE_ACTIVE, pb.STATE_PENDING]),
                           timeout=10).enforcements:
        lab.stub.Lift(pb.LiftRequest(id=e.id, reason="test cleanup"), timeout=10)
    harness.wait_until(lambda: switch_cookies() == set(), 15, "no enforcement flows")


# ---- what each of the three holds ---------------------------------------------

def switch_cookies() -> set[int]:
    return {harness.flow_cookie(f) for sw in SWITCHES
            for f in harness.flows_with_cookie(sw, NS, pipeline.COOKIE_NAMESPACE_MASK)}


def ports_on_switches(ports) -> set[int]:
    """Which of these TCP ports an enforcement flow on a switch names."""
    found = set()
    for sw in SWITCHES:
        for line in harness.flows_with_cookie(sw, NS, pipeline.COOKIE_NAMESPACE_MASK):
            found |= {int(p) for p in re.findall(r"\btp_dst=(\d+)", line)}
    return found & set(ports)


def listed(lab) -> dict[str, int]:
    """The API's live enforcements: id -> cookie."""
    return {e.id: e.rules[0].cookie for e in lab.stub.List(pb.ListRequest(
        states=[pb.STATE_ACTIVE, pb.STATE_PENDING]), timeout=10).enforcements}


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    state: str
    cookie: int


def stored(url: str) -> dict[str, Row]:
    """The database's rows, read with SQL: request id -> row."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT request_id, id, state, body FROM enforcements")).all()
    finally:
        engine.dispose()
    return {r[0]: Row(r[1], r[2], orjson.loads(r[3])["cookie"]) for r in rows}


# ---- the stream -------------------------------------------------------------------

@dataclasses.dataclass
class Decision:
    request_id: str
    subscriber: str
    port: int
    record: pb.Enforcement | None = None
    code: grpc.StatusCode | None = None
    details: str = ""
    on_switch_after_refusal: bool = False


class Stream:
    """Four clients send decisions over real gRPC, each to its own
    subscriber, while fault() runs; a client goes on until it got two
    answers after the fault was over (or sent MOST). A refused decision's
    port is looked for on the switches the moment the refusal arrives, and
    the first refusal of the stream is also tried with real traffic."""

    def __init__(self, lab, tag: str, *, after_fault: int = 2):
        self.lab = lab
        self.tag = tag
        self.after_fault = after_fault
        self.decisions: list[Decision] = []
        # Whether the subscriber of the first refused decision connected to
        # the refused port right after the refusal (None: none refused).
        self.refused_connects: bool | None = None
        self._traffic_tried = False
        self._lock = threading.Lock()
        self._fault_over = threading.Event()

    def run(self, fault, start_after: int = 6) -> Stream:
        threads = [threading.Thread(target=self._client, args=(k, name))
                   for k, name in enumerate(SUBSCRIBERS)]
        for thread in threads:
            thread.start()
        try:
            harness.wait_until(lambda: len(self.acknowledged) >= start_after, 30,
                               f"{start_after} decisions acknowledged before the fault")
            fault()
        finally:
            self._fault_over.set()
            for thread in threads:
                thread.join(120)
        return self

    @property
    def acknowledged(self) -> list[Decision]:
        with self._lock:
            return [d for d in self.decisions if d.record is not None]

    @property
    def refused(self) -> list[Decision]:
        with self._lock:
            return [d for d in self.decisions if d.code is not None]

    def _client(self, k: int, name: str) -> None:
        host = self.lab.host(name)
        answered_after = 0
        for n in range(MOST):
            if self._fault_over.is_set() and answered_after >= self.after_fault:
                return
            over = self._fault_over.is_set()
            decision = Decision(f"{self.tag}-{k}-{n}", name, blocked_port(k, n))
            request = pb.ApplyRequest(
                request_id=decision.request_id, case_id=f"CASE-{self.tag}",
                subscriber=pb.Subscriber(ip=host.IP()), violation=pb.VIOLATION_SPAM,
                reason="store fault test", action=pb.ActionRequest(
                    kind=pb.ACTION_KIND_BLOCK, protocol="tcp", ports=[decision.port]))
            try:
                decision.record = self.lab.stub.Apply(request, timeout=DEADLINE)
            except grpc.RpcError as exc:
                decision.code, decision.details = exc.code(), exc.details() or ""
                # At once, before any drift audit could hide a rule left behind.
                decision.on_switch_after_refusal = bool(ports_on_switches([decision.port]))
                with self._lock:
                    first, self._traffic_tried = not self._traffic_tried, True
                if first:
                    self.refused_connects = harness.tcp_connects(
                        host, self.lab.host("h6").IP(), decision.port)
            with self._lock:
                self.decisions.append(decision)
            answered_after += over
            time.sleep(PAUSE)


def probe(host, ip: str, ports) -> dict[int, bool]:
    """Which TCP ports of ip a host connects to, all tried at once."""
    harness.current_tables()
    out = host.cmd(f"{sys.executable} {harness.HOST_SCRIPTS / 'tcp_probe.py'} {ip} "
                   f"{' '.join(map(str, ports))} --timeout 1.5")
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def check(lab, url: str, stream: Stream) -> None:
    """What every fault must leave: acknowledged means durable and enforced,
    refused means undone at once, and after the next drift audit the
    switches, List and the database agree."""
    acknowledged, refused = stream.acknowledged, stream.refused
    summary = (f"{stream.tag}: {len(acknowledged)} acknowledged, {len(refused)} refused "
               f"({sorted({d.code.name for d in refused})})")
    print(summary)
    assert acknowledged and refused, summary
    assert all(d.record.state == pb.STATE_ACTIVE for d in acknowledged)
    wrong = [(d.request_id, d.code.name, d.details[:200]) for d in refused
             if d.code != grpc.StatusCode.UNAVAILABLE]
    assert not wrong, wrong
    unclear = [d.details for d in refused if "nothing changed" not in d.details]
    assert not unclear, unclear[:5]
    left = [d.request_id for d in refused if d.on_switch_after_refusal]
    assert not left, f"refused, yet on a switch right after the refusal: {left}"
    assert stream.refused_connects is True, "a refused decision blocked traffic"

    rows = stored(url)
    for d in acknowledged:
        assert rows[d.request_id].id == d.record.id
        assert rows[d.request_id].state == "active"
    assert not {d.request_id for d in refused} & set(rows)
    assert not ports_on_switches(d.port for d in refused)
    # The look-up that found no refused port finds every acknowledged one.
    assert ports_on_switches(d.port for d in acknowledged) == {d.port for d in acknowledged}

    time.sleep(AUDIT_INTERVAL + 1.0)  # a drift audit round, at least
    rows_live = {r.id: r.cookie for r in stored(url).values()
                 if r.state in ("active", "pending")}
    api, on_switches = listed(lab), switch_cookies()
    assert rows_live == api
    assert set(api.values()) == on_switches
    assert {d.record.id for d in acknowledged} <= set(api)

    # Real traffic, on every subscriber: its acknowledged ports are blocked,
    # its refused ones and an open port connect.
    server = lab.host("h6").IP()
    for name in SUBSCRIBERS:
        blocked = [d.port for d in acknowledged if d.subscriber == name][:6]
        free = [d.port for d in refused if d.subscriber == name][:6]
        seen = probe(lab.host(name), server, [*blocked, *free, OPEN])
        assert seen == {**dict.fromkeys(blocked, False), **dict.fromkeys(free, True),
                        OPEN: True}, name


# ---- the faults ----------------------------------------------------------------------

def restart_postgres(cluster: pgcluster.PgCluster, timeout: float = 20.0) -> None:
    """Starts the server again on its data, once the processes of the one
    before are gone (a backend orphaned by a killed postmaster holds its
    shared memory for a moment)."""
    cluster.stop()
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.start()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            cluster.stop()
            time.sleep(0.3)


def test_postgres_killed_mid_stream_and_started_again(lab, world):
    cluster, url = world.cluster, world.url

    def fault():
        os.kill(cluster.pid, signal.SIGKILL)
        time.sleep(2.0)  # as long as the leader's lease
        restart_postgres(cluster)

    check(lab, url, Stream(lab, "killed").run(fault))


def test_postgres_connections_dropped_in_a_loop_mid_stream(lab, world):
    url = world.url

    def fault():
        admin = sa.create_engine(url)
        ends = time.monotonic() + 2.0
        while time.monotonic() < ends:
            with contextlib.suppress(sa.exc.SQLAlchemyError), admin.begin() as connection:
                connection.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            time.sleep(0.03)
        admin.dispose()

    check(lab, url, Stream(lab, "dropped").run(fault))


REFUSED_ID = "statement-1-8"


def test_a_statement_made_to_fail_for_one_request(lab, world):
    """The database refuses one decision's row (a trigger raises for its
    request id); the decisions written in the same transaction are refused
    with it, the rest go through."""
    url = world.url
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"""
            CREATE FUNCTION refuse_one() RETURNS trigger AS $$
            BEGIN
              IF NEW.request_id = '{REFUSED_ID}' THEN RAISE EXCEPTION 'injected fault'; END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql"""))
        connection.execute(sa.text("CREATE TRIGGER refuse_one BEFORE INSERT OR UPDATE ON "
                                   "enforcements FOR EACH ROW EXECUTE FUNCTION refuse_one()"))
    try:
        stream = Stream(lab, "statement")
        stream.run(lambda: harness.wait_until(
            lambda: any(d.request_id == REFUSED_ID for d in stream.decisions), 30,
            f"{REFUSED_ID} answered"))
        assert REFUSED_ID in {d.request_id for d in stream.refused}
        assert any("injected fault" in d.details for d in stream.refused)
        check(lab, url, stream)
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TRIGGER refuse_one ON enforcements"))
            connection.execute(sa.text("DROP FUNCTION refuse_one()"))
        engine.dispose()


def test_postgres_disk_read_only_mid_stream(lab, world):
    """What PostgreSQL does when its disk turns read-only: it cannot write
    its WAL, aborts, and stays down (its own log is on that disk too). For
    the controller that is the server killed; the disk is repaired and the
    server started again on what reached it."""
    cluster, disk, url = world.cluster, world.pg_disk, world.url
    seen = {}

    def fault():
        disk.fail()
        harness.wait_until(lambda: cluster.pid is None, 30, "PostgreSQL to stop")
        seen["exit"] = cluster._proc.returncode
        disk.repair()
        restart_postgres(cluster)

    stream = Stream(lab, "pgdisk").run(fault)
    print(f"PostgreSQL on a read-only disk exited with {seen.get('exit')}")
    check(lab, url, stream)


def test_sqlite_disk_read_only_mid_stream(lab, world):
    """The controller on SQLite, its disk turned read-only mid-stream:
    every decision after is refused and undone. The filesystem takes writes
    again only once every file on it is closed, so the controller stops
    (it must, promptly, with its store unwritable), the disk is repaired
    and the controller started again on the same file."""
    sqlite_disk = world.sqlite_disk
    url = f"sqlite:///{sqlite_disk.path / 'enforcement.db'}"
    args = ["--db", url, *CONTROLLER_ARGS]
    lab.restart(args, name="sqlite", expected_links=2)
    stream = Stream(lab, "sqlite").run(sqlite_disk.fail)
    started = time.monotonic()
    code = lab.controller.stop(timeout=20)
    took = time.monotonic() - started
    print(f"the controller stopped {took:.1f} s after SIGTERM, with {code}, "
          "its store on a read-only disk")
    assert took < 15 and code in (0, -signal.SIGTERM), (took, code)
    sqlite_disk.repair()
    lab.restart(args, name="sqlite-repaired", expected_links=2)
    check(lab, url, stream)
