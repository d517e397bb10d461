"""A follower forwards changing calls to the leader, over real gRPC with
mutual TLS on real sockets, on one real PostgreSQL store: the caller is
checked where it called, the follower where it forwards, and the audit log
names both. (The switch side is tests/doubles.py's recording double; the whole with
real switches is tests/e2e/test_high_availability.py.)"""
from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import tempfile
import threading
import time
import tomllib

import grpc
import pytest

from enforcement.api import access
from enforcement.api.servicer import serve
from enforcement.api.tlsgate import server_context
from enforcement.clients import certs
from enforcement.cluster.leaderproxy import ON_BEHALF_OF, PROOF, Forwarder, peer_secret, prove
from enforcement.cluster.leadership import Leadership, Transitions
from enforcement.domain import policy
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from tests.cases import spam
from tests.doubles import RecordingNetwork
from tests.tls import channel

ACCESS = """
[clients.case-system]
role = "case_system"

[clients.engineer]
role = "engineer"

[clients.instance-b]
role = "case_system"
"""
LEASE = 0.6
_names = itertools.count()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    certs.generate(base / "ours", clients=["case-system", "engineer", "instance-b",
                                           "instance-c"],
                   server_hosts=["localhost", "127.0.0.1"])
    return base


def _instance(pki, url: str, name: str, peer: str, network=None):
    ours = pki / "ours"
    store = Store(url)
    leadership = Leadership(store, name, "", lease=LEASE)
    service = EnforcementService(network or RecordingNetwork(), policy.load(), store,
                                 leadership=leadership)
    credentials = grpc.ssl_channel_credentials(
        (ours / "ca.pem").read_bytes(), (ours / f"{peer}.key").read_bytes(),
        (ours / f"{peer}.pem").read_bytes())
    key = peer_secret(store)
    forwarder = Forwarder(leadership, service.leading, key=key, credentials=credentials)
    serving = serve("127.0.0.1:0", service, access=access.parse(tomllib.loads(ACCESS)),
                    tls_context=server_context(str(ours / "server.pem"),
                                               str(ours / "server.key"),
                                               str(ours / "ca.pem")),
                    forwarder=forwarder, peer_key=key)
    leadership.address = f"127.0.0.1:{serving.port}"
    return service, leadership, serving


def _start(instance) -> None:
    service, leadership, _ = instance
    leadership.start(Transitions(elected=service.take_over))


@pytest.fixture
def pair(pki, postgres_server):
    url = postgres_server.create_database(f"forwarding_{os.getpid()}_{next(_names)}")
    leader = _instance(pki, url, "a", "instance-b")
    _start(leader)
    deadline = time.monotonic() + 5
    while not leader[0].leading():
        assert time.monotonic() < deadline, "the first instance never led"
        time.sleep(0.01)
    follower = _instance(pki, url, "b", "instance-b")
    yield leader, follower
    for _, leadership, serving in (follower, leader):
        leadership.stop()
        serving.stop(None)


def _stub(pki, serving, who):
    return pb_grpc.EnforcementServiceStub(channel(pki, serving.port, who))


def test_a_follower_forwards_an_apply_and_the_audit_names_both(pki, pair):
    (leader, _leading, lead_serving), follower = pair
    _, _, follow_serving = follower
    _start(follower)
    record = _stub(pki, follow_serving, "case-system").Apply(spam("fw-1"), timeout=10)
    assert record.state == pb.STATE_ACTIVE
    assert leader.get(record.id).decision.request_id == "fw-1"
    entry = next(e for e in leader.audit_log(enforcement_id=record.id) if e.call == "Apply")
    assert entry.actor.startswith("cert:case-system from ")
    assert " via cert:instance-b from 127.0.0.1" in entry.actor
    # Any instance answers reads, the follower from its own memory.
    got = _stub(pki, follow_serving, "engineer").Get(pb.GetRequest(id=record.id))
    assert got.state == pb.STATE_ACTIVE
    # A retry through the leader is the same decision.
    again = _stub(pki, lead_serving, "case-system").Apply(spam("fw-1"), timeout=10)
    assert again.id == record.id


def test_the_caller_is_checked_where_it_called(pki, pair):
    """An engineer may read, not apply: refused by the follower itself,
    never forwarded, and nothing reaches the leader."""
    (leader, _leading, _lead_serving), follower = pair
    _, _, follow_serving = follower
    _start(follower)
    with pytest.raises(grpc.RpcError) as refused:
        _stub(pki, follow_serving, "engineer").Apply(spam("fw-2"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert leader.list() == []


def test_a_follower_without_a_role_at_the_leader_cannot_forward(pki, postgres_server):
    url = postgres_server.create_database(f"forwarding_{os.getpid()}_{next(_names)}")
    first = _instance(pki, url, "a", "instance-b")
    leader, leading, lead_serving = first
    _start(first)
    follower = _instance(pki, url, "c", "instance-c")
    _, following, follow_serving = follower
    try:
        deadline = time.monotonic() + 5
        while not leader.leading():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _start(follower)
        with pytest.raises(grpc.RpcError) as refused:
            _stub(pki, follow_serving, "case-system").Apply(spam("fw-3"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "instance-c" in refused.value.details()
        assert leader.list() == []
    finally:
        for leadership, serving in ((following, follow_serving), (leading, lead_serving)):
            leadership.stop()
            serving.stop(None)


def _forged(stub, request_id, metadata):
    with pytest.raises(grpc.RpcError) as refused:
        stub.Apply(spam(request_id), timeout=10, metadata=metadata)
    return refused.value.code(), refused.value.details()


def test_a_client_forging_the_forwarding_marker_is_refused_and_audited_as_itself(pki, pair):
    """With TLS, at the leader and at a follower: a case system that writes
    someone else's name into the marker (with no proof, or a proof made up
    without the deployment's peer secret) changes nothing and is on record
    under its own certificate."""
    (leader, _leading, lead_serving), follower = pair
    _, _, follow_serving = follower
    _start(follower)
    forged_proof = prove(b"not the deployment's secret", "Apply", "cert:mallory",
                         spam("forged-2"), time.time())
    attempts = [(lead_serving, "forged-1", ((ON_BEHALF_OF, "cert:mallory"),)),
                (lead_serving, "forged-2", ((ON_BEHALF_OF, "cert:mallory"), (PROOF, forged_proof))),
                (follow_serving, "forged-3", ((ON_BEHALF_OF, "cert:mallory"),))]
    for serving, request_id, metadata in attempts:
        code, message = _forged(_stub(pki, serving, "case-system"), request_id, metadata)
        assert code == grpc.StatusCode.PERMISSION_DENIED, (request_id, code, message)
        assert "instances of this deployment only" in message
    assert leader.list() == []
    # One store for both instances: the follower's refusal is there too.
    refusals = [e for e in leader.audit_log(limit=100) if e.outcome == "PERMISSION_DENIED"]
    assert len(refusals) == 3
    assert all(e.actor.startswith("cert:case-system from 127.0.0.1:") for e in refusals)
    assert not any("mallory" in e.actor for e in refusals)
    # A genuine forwarded call still goes through, with both names.
    record = _stub(pki, follow_serving, "case-system").Apply(spam("fw-9"), timeout=10)
    entry = next(e for e in leader.audit_log(enforcement_id=record.id) if e.call == "Apply")
    assert " via cert:instance-b" in entry.actor


def test_without_tls_a_local_client_forging_the_marker_is_refused(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/state.db")
    service = EnforcementService(RecordingNetwork(), policy.load(), store)
    serving = serve("127.0.0.1:0", service, peer_key=peer_secret(store))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{serving.port}") as plain:
            stub = pb_grpc.EnforcementServiceStub(plain)
            code, _ = _forged(stub, "forged-4", ((ON_BEHALF_OF, "cert:mallory from 10.66.66.66"),))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert stub.Apply(spam("honest-1"), timeout=10).state == pb.STATE_ACTIVE
    finally:
        serving.stop(None)
    refused = [e for e in service.audit_log(limit=10) if e.outcome == "PERMISSION_DENIED"]
    assert [e.actor.split(":")[0] for e in refused] == ["unauthenticated 127.0.0.1"]
    assert not any("mallory" in e.actor for e in service.audit_log(limit=10))


class _FrozenSwitches(RecordingNetwork):
    """The switch side of a leader frozen in the middle of a decision: the
    call it took never returns, as a stopped process never answers."""

    def __init__(self):
        super().__init__()
        self.thaw = threading.Event()
        self.took = threading.Event()

    def sync_part(self, dpid, rules, meters, timeout, meanwhile=None):
        self.took.set()
        self.thaw.wait(60)
        return super().sync_part(dpid, rules, meters, timeout, meanwhile)


def test_a_forwarded_call_follows_the_lead_when_the_leader_freezes(pki, postgres_server):
    """A forwarded call never outlives the lease of the instance it was sent
    to: the leader freezes with the call in hand (its lease no longer
    renewed), the follower takes over, and the call, sent with a long
    deadline, is answered right after (not at its deadline)."""
    url = postgres_server.create_database(f"forwarding_{os.getpid()}_{next(_names)}")
    frozen = _FrozenSwitches()
    first = _instance(pki, url, "a", "instance-b", network=frozen)
    leader, leading, _ = first
    _start(first)
    deadline = time.monotonic() + 5
    while not leader.leading():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = _instance(pki, url, "b", "instance-b")
    follower, _, follow_serving = second
    _start(second)
    took_over: list[float] = []

    def freeze_when_the_call_arrives():
        frozen.took.wait(30)
        # The lease thread of a stopped process renews nothing either.
        leading._store.renew = lambda *args: (_ for _ in ()).throw(OSError("frozen"))
        while not follower.leading():
            time.sleep(0.005)
        took_over.append(time.monotonic())
    watcher = threading.Thread(target=freeze_when_the_call_arrives, daemon=True)
    watcher.start()
    try:
        record = _stub(pki, follow_serving, "case-system").Apply(spam("frozen-1"), timeout=20)
        answered = time.monotonic()
        watcher.join(5)
        assert record.state == pb.STATE_ACTIVE
        assert took_over, "the follower never took over"
        assert answered - took_over[0] < 1.0, answered - took_over[0]
        assert follower.get(record.id).decision.request_id == "frozen-1"
    finally:
        frozen.thaw.set()
        for _, leadership, serving in (second, first):
            leadership.stop()
            serving.stop(None)


def test_while_the_store_that_names_the_leader_is_away_a_call_waits_and_is_never_unknown():
    """PostgreSQL stops under an instance: its lease runs out, and a
    changing call must learn who leads from the store. It waits for the
    store within its deadline: answered UNAVAILABLE saying nothing changed
    when the deadline comes first, carried out once the store (and with it
    the lead) is back. The lookup used to raise straight into gRPC: UNKNOWN
    at once, with the driver's message."""
    from testbed import pgcluster
    missing = pgcluster.unavailable()
    if missing:
        if os.environ.get("CI") or os.environ.get("ENFORCEMENT_NO_SKIP"):
            pytest.fail(f"PostgreSQL cannot run: {missing}")
        pytest.skip(missing)
    # A home of its own that survives a stop (pytest's tmp_path is closed to
    # the postgres user), so the server starts again on the same data.
    home = pathlib.Path(tempfile.mkdtemp(prefix="sdn-enforcement-pg-away-"))
    cluster = pgcluster.PgCluster(home=home, durable=False).start()
    serving = leadership = None
    try:
        store = Store(cluster.create_database("away"))
        leadership = Leadership(store, "a", "", lease=LEASE)
        service = EnforcementService(RecordingNetwork(), policy.load(), store,
                                     leadership=leadership)
        key = peer_secret(store)
        serving = serve("127.0.0.1:0", service, peer_key=key,
                        forwarder=Forwarder(leadership, service.leading, key=key))
        leadership.address = f"127.0.0.1:{serving.port}"
        leadership.start(Transitions(elected=service.take_over))
        _wait(service.leading, "the instance to lead")
        stub = pb_grpc.EnforcementServiceStub(grpc.insecure_channel(
            f"127.0.0.1:{serving.port}"))
        assert stub.Apply(spam("before-1"), timeout=10).state == pb.STATE_ACTIVE

        cluster.stop()
        _wait(lambda: not service.leading(), "the lease to run out")
        with pytest.raises(grpc.RpcError) as refused:
            stub.Apply(spam("away-1", ip="10.0.0.3"), timeout=1.5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "nothing changed" in refused.value.details()

        answers = []
        caller = threading.Thread(target=lambda: answers.append(
            stub.Apply(spam("away-2", ip="10.0.0.3"), timeout=20)))
        caller.start()
        time.sleep(1.0)
        # From this thread: the server stops when the thread that started it ends.
        cluster.start()
        caller.join(25)
        assert [a.state for a in answers] == [pb.STATE_ACTIVE]
        assert {r.decision.request_id for r in store.load_all()} == {"before-1", "away-2"}
    finally:
        if leadership is not None:
            leadership.stop()
        if serving is not None:
            serving.stop(None)
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


def _wait(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
