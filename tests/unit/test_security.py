"""Mutual TLS, roles, audit attribution and per-client limits, over real TLS
channels to a real server socket (the switch side is the recording double of
tests/doubles.py; the Mininet test test_hostile.py runs the real controller process
with TLS)."""
import contextlib
import pathlib
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enforcement.api import access
from enforcement.api.servicer import serve
from enforcement.api.tlsgate import server_context
from enforcement.clients import certs
from enforcement.domain import policy
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from tests.cases import spam
from tests.doubles import RecordingNetwork
from tests.tls import channel

ACCESS = """
[limits]
requests_per_second = 1000
burst = 1000

[clients.case-system]
role = "case_system"

[clients.engineer]
role = "engineer"

[clients.slow-client]
role = "engineer"
requests_per_second = 2
burst = 3
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    certs.generate(base / "ours", clients=["case-system", "engineer", "stranger",
                                           "slow-client"],
                   server_hosts=["localhost", "127.0.0.1"])
    # A second, unrelated CA whose client certificate claims the same name.
    certs.generate(base / "other", clients=["case-system"], server_hosts=["localhost"])
    return base


@pytest.fixture
def api(pki, tmp_path):
    service = EnforcementService(RecordingNetwork(), policy.load(),
                                 Store(f"sqlite:///{tmp_path}/state.db"))
    ours = pki / "ours"
    serving = serve("127.0.0.1:0", service, access=access.parse(_toml(ACCESS)),
                    tls_context=server_context(str(ours / "server.pem"),
                                               str(ours / "server.key"),
                                               str(ours / "ca.pem")))
    yield serving, service
    serving.stop(None)


def _toml(text):
    import tomllib
    return tomllib.loads(text)


def call(pki, port, who, method, request, ca_dir="ours"):
    with channel(pki, port, who, ca_dir) as ch:
        try:
            getattr(pb_grpc.EnforcementServiceStub(ch), method)(request, timeout=5)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def audit(service):
    return [(e.actor, e.call, e.outcome, e.detail) for e in reversed(service.audit_log(limit=100))]


def test_each_identity_gets_what_its_certificate_allows_and_the_audit_says_who(api, pki):
    serving, service = api
    port = serving.port
    assert call(pki, port, None, "Apply", spam("r0")) == "UNAVAILABLE"
    assert call(pki, port, "case-system", "Apply", spam("r1"), ca_dir="other") == "UNAVAILABLE"
    assert call(pki, port, "engineer", "Apply", spam("r2")) == "PERMISSION_DENIED"
    assert call(pki, port, "stranger", "Apply", spam("r3")) == "PERMISSION_DENIED"
    assert call(pki, port, "case-system", "Apply", spam("r4")) == "OK"

    assert serving.refused.settled()  # the gate's refusals are written off its loop
    entries = audit(service)
    assert len(entries) == 5, entries
    no_cert, other_ca, engineer, stranger, applied = entries
    assert no_cert[0].startswith("unauthenticated 127.0.0.1:")
    assert no_cert[1:3] == ("connect", "UNAUTHENTICATED")
    assert no_cert[3] == "no client certificate"
    assert other_ca[0].startswith("unauthenticated 127.0.0.1:")
    assert other_ca[1:3] == ("connect", "UNAUTHENTICATED")
    assert "client certificate not accepted" in other_ca[3]
    assert engineer[0].startswith("cert:engineer from 127.0.0.1:")
    assert engineer[1:3] == ("Apply", "PERMISSION_DENIED")
    assert "may not call Apply" in engineer[3]
    assert stranger[0].startswith("cert:stranger from")
    assert "not given a role" in stranger[3]
    assert applied[0].startswith("cert:case-system from 127.0.0.1:")
    assert applied[1:3] == ("Apply", "OK")
    assert applied[3].startswith("installed:")
    # Only the case system's decision exists.
    assert [r.decision.request_id for r in service.list()] == ["r4"]


def test_roles_split_reads_and_changes(api, pki):
    serving, service = api
    port = serving.port
    assert call(pki, port, "engineer", "GetTopology", pb.GetTopologyRequest()) == "OK"
    assert call(pki, port, "engineer", "ListAudit", pb.ListAuditRequest()) == "OK"
    assert call(pki, port, "engineer", "Plan", spam("p1")) == "OK"
    assert call(pki, port, "case-system", "List", pb.ListRequest()) == "OK"
    assert call(pki, port, "case-system", "GetTopology", pb.GetTopologyRequest()) \
        == "PERMISSION_DENIED"
    with channel(pki, port, "case-system") as ch:
        record = pb_grpc.EnforcementServiceStub(ch).Apply(spam("a1"))
    assert call(pki, port, "engineer", "Lift", pb.LiftRequest(id=record.id)) \
        == "PERMISSION_DENIED"
    assert call(pki, port, "engineer", "ApplyBatch",
                pb.ApplyBatchRequest(requests=[spam("a2")])) == "PERMISSION_DENIED"
    assert call(pki, port, "case-system", "Lift", pb.LiftRequest(id=record.id)) == "OK"
    lifts = [e for e in audit(service) if e[1] == "Lift"]
    assert [(a.split(" from")[0], o) for a, _, o, _ in lifts] == [
        ("cert:engineer", "PERMISSION_DENIED"), ("cert:case-system", "OK")]


def test_health_answers_any_verified_client(api, pki):
    serving, _ = api
    with channel(pki, serving.port, "stranger") as ch:
        answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_the_internal_port_refuses_calls_that_bypass_the_gate(api, pki):
    serving, service = api
    backend = serving.gate._backend_port
    with (grpc.insecure_channel(f"127.0.0.1:{backend}") as ch,
          pytest.raises(grpc.RpcError) as caught):
        pb_grpc.EnforcementServiceStub(ch).Apply(spam("sneak"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert service.list() == []
    assert audit(service)[-1][1:3] == ("Apply", "UNAUTHENTICATED")


def test_one_client_over_its_rate_is_refused_while_others_go_on(api, pki):
    serving, _ = api
    with channel(pki, serving.port, "slow-client") as ch:
        stub = pb_grpc.EnforcementServiceStub(ch)
        codes = []
        for _ in range(6):
            try:
                stub.List(pb.ListRequest(), timeout=5)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
                assert "requests/s" in exc.details()
    assert codes[:3] == ["OK"] * 3 and "RESOURCE_EXHAUSTED" in codes[3:]
    assert call(pki, serving.port, "engineer", "List", pb.ListRequest()) == "OK"
    time.sleep(0.6)  # two tokens a second: one is back
    assert call(pki, serving.port, "slow-client", "List", pb.ListRequest()) == "OK"


def test_watch_streams_per_client_are_capped(api, pki):
    serving, _ = api
    cap = access.Limits().max_watch_streams
    with channel(pki, serving.port, "engineer") as ch:
        stub = pb_grpc.EnforcementServiceStub(ch)
        streams = [stub.Watch(pb.WatchRequest()) for _ in range(cap + 1)]
        refused = []

        def drain(stream):
            try:
                for _ in stream:
                    pass
            except grpc.RpcError as exc:
                refused.append(exc.code())

        threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in streams]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 5
        while not refused and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED]
        for s in streams:
            s.cancel()


def test_a_call_with_its_deadline_nearly_gone_changes_nothing(api, pki):
    serving, service = api
    with channel(pki, serving.port, "case-system") as ch:
        stub = pb_grpc.EnforcementServiceStub(ch)
        stub.List(pb.ListRequest(), timeout=5)  # connection up first
        with pytest.raises(grpc.RpcError) as caught:
            stub.Apply(spam("late"), timeout=0.03)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.2)
    assert service.list() == []


def test_limits_unit():
    clock = [0.0]
    limiter = access.ClientLimiter(clock=lambda: clock[0])
    limits = access.Limits(requests_per_second=1, burst=2, max_in_flight=1)
    assert limiter.acquire("a", limits, False) is None
    assert "in flight" in limiter.acquire("a", limits, False)  # token spent, slot taken
    limiter.release("a", False)
    assert "requests/s" in limiter.acquire("a", limits, False)
    clock[0] += 1.0
    assert limiter.acquire("a", limits, False) is None
    assert limiter.acquire("b", limits, False) is None  # another client, its own budget


def test_a_batch_counts_each_of_its_decisions_against_the_rate():
    clock = [0.0]
    limiter = access.ClientLimiter(clock=lambda: clock[0])
    limits = access.Limits(requests_per_second=10, burst=10, max_in_flight=5)
    assert limiter.acquire("a", limits, False, cost=8) is None
    limiter.release("a", False)
    assert "requests/s" in limiter.acquire("a", limits, False, cost=3)  # 2 left
    assert limiter.acquire("a", limits, False, cost=2) is None
    limiter.release("a", False)
    assert "burst allows 10" in limiter.acquire("b", limits, False, cost=11)


@pytest.mark.parametrize("text, message", [
    ('[clients.x]\nrole = "boss"', "clients.x.role must be one of"),
    ('[roles]\nboss = ["Apply", "Reboot"]', "unknown call(s) ['Reboot']"),
    ('[limits]\nburst = 0', "limits.burst must be a positive number"),
    ('[limits]\nmax_in_flight = 1.5', "limits.max_in_flight must be a whole number"),
    ('[clients.x]\nrole = "engineer"\ncolour = "red"', "unknown field(s) ['colour']"),
    ('[admins]\nx = 1', "unknown section(s) ['admins']"),
])
def test_access_file_mistakes_are_named(text, message):
    with pytest.raises(access.AccessError) as caught:
        access.parse(_toml(text))
    assert message in str(caught.value)


def test_certs_command_writes_private_keys_0600(tmp_path):
    assert certs.main([str(tmp_path / "c"), "--client", "desk"]) == 0
    for name in ("ca", "server", "desk"):
        assert (tmp_path / "c" / f"{name}.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "c" / f"{name}.pem").exists()
    assert certs.main([str(tmp_path / "d"), "--client", "../evil"]) == 2
    assert not pathlib.Path(tmp_path / "evil.key").exists()


def test_certs_refuse_to_replace_what_a_previous_run_wrote(tmp_path, capsys):
    folder = tmp_path / "c"
    assert certs.main([str(folder), "--client", "desk"]) == 0
    ca_before = (folder / "ca.key").read_bytes()
    assert certs.main([str(folder), "--client", "desk"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (folder / "ca.key").read_bytes() == ca_before
    assert not list(folder.glob(".*partial"))
    assert certs.main([str(folder), "--client", "desk", "--force"]) == 0
    assert (folder / "ca.key").read_bytes() != ca_before


def test_certs_never_write_through_a_symlink_nor_keep_a_loose_mode(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    # An attacker's link where the CA key will go, and a key left 0644.
    target = tmp_path / "outside"
    target.write_text("not yours")
    (folder / "ca.key").symlink_to(target)
    (folder / "server.key").write_text("old")
    (folder / "server.key").chmod(0o644)
    assert certs.main([str(folder), "--client", "desk", "--force"]) == 0
    assert target.read_text() == "not yours"
    for name in ("ca", "server", "desk"):
        key = folder / f"{name}.key"
        assert not key.is_symlink()
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_idle_clients_are_forgotten():
    clock = [0.0]
    limiter = access.ClientLimiter(clock=lambda: clock[0])
    limits = access.Limits(requests_per_second=10, burst=10)
    for n in range(limiter.PRUNE_ABOVE):
        assert limiter.acquire(f"c{n}", limits, False) is None
        limiter.release(f"c{n}", False)
    assert limiter.acquire("busy", limits, False) is None  # stays in flight
    clock[0] += 2.0  # everyone's bucket is full again
    assert limiter.acquire("new", limits, False) is None
    assert set(limiter._buckets) == {"busy", "new"}


def test_a_host_cannot_hold_more_than_its_share_of_tls_connections(api, pki):
    import socket
    serving, service = api
    idle = []
    try:
        for _ in range(64):  # TLS never started: they wait out the handshake timeout
            idle.append(socket.create_connection(("127.0.0.1", serving.port)))
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", serving.port)) as extra:
            extra.settimeout(5)
            assert extra.recv(10) == b""  # closed at once
    except ConnectionResetError:
        pass  # closed at once, as abruptly as intended
    finally:
        for s in idle:
            s.close()
    assert serving.refused.settled()
    refusals = [e for e in audit(service) if "connections from 127.0.0.1 at once" in e[3]]
    assert refusals and refusals[0][1:3] == ("connect", "UNAUTHENTICATED")
    time.sleep(0.3)  # the idle ones are gone: a real client gets in again
    assert call(pki, serving.port, "engineer", "List", pb.ListRequest()) == "OK"


def test_a_forwarded_caller_name_never_overflows_the_audit_column():
    """An actor longer than the audit log's column failed the whole batch's
    insert on PostgreSQL (issue 24): the forwarded name is cut, never the
    caller that actually connected."""
    import types

    from enforcement.api import guard
    from enforcement.cluster.leaderproxy import ON_BEHALF_OF

    context = types.SimpleNamespace(
        peer=lambda: "ipv4:127.0.0.1:52956",
        invocation_metadata=lambda: ((ON_BEHALF_OF, "m" * 5000),))
    # The guard honours a proven forwarded name (at most 256 characters).
    proven = guard.Caller("127.0.0.1:52956", False, "127.0.0.1:52956",
                          on_behalf_of=("m" * 5000)[:256])
    token = guard._CALLER.set(proven)
    try:
        actor = guard.current_actor(context)
    finally:
        guard._CALLER.reset(token)
    assert len(actor) <= guard.ACTOR_LENGTH
    assert actor.endswith(" via unauthenticated 127.0.0.1:52956") and actor.startswith("m")
    # A name in the metadata that no guard proved is never written.
    assert guard.current_actor(context) == "ipv4:127.0.0.1:52956"
    plain = types.SimpleNamespace(peer=lambda: "ipv4:127.0.0.1:1",
                                  invocation_metadata=lambda: ())
    assert guard.current_actor(plain) == "ipv4:127.0.0.1:1"


def _summed(rows):
    """How many refusals the audit rows account for: one each, or the count
    a summary row gives."""
    import re
    total = 0
    for _, _, _, detail in rows:
        counted = re.search(r"(\d+) more (?:refused|connections refused)", detail)
        total += int(counted.group(1)) if counted else 1
    return total


def test_a_flood_of_refused_handshakes_from_many_addresses_costs_bounded_rows_and_no_client(
        pki, tmp_path):
    import socket
    service = EnforcementService(RecordingNetwork(), policy.load(),
                                 Store(f"sqlite:///{tmp_path}/state.db"))
    written, store_answers = [], threading.Event()

    def stuck_store(actor, call, case_id, enforcement_id, outcome, detail):
        store_answers.wait(60)  # a store that does not answer meanwhile
        written.append((actor, call, outcome, detail))
    service.record_refusal = stuck_store
    ours = pki / "ours"
    serving = serve("127.0.0.1:0", service, access=access.parse(_toml(ACCESS)),
                    tls_context=server_context(str(ours / "server.pem"),
                                               str(ours / "server.key"), str(ours / "ca.pem")))
    knocks = 2000
    try:
        for n in range(knocks):  # 2,000 source addresses of 127.0.0.0/8
            with socket.socket() as knock:
                knock.bind((f"127.1.{n // 250}.{n % 250 + 1}", 0))
                knock.connect(("127.0.0.1", serving.port))
                knock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        deadline = time.monotonic() + 60
        while serving.refused.noted < knocks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert serving.refused.noted == knocks
        # The audit's writer is stuck in the store, the gate is not.
        assert call(pki, serving.port, "engineer", "List", pb.ListRequest()) == "OK"
    finally:
        store_answers.set()
        serving.stop(None)
    assert all(row[1:3] == ("connect", "UNAUTHENTICATED") for row in written)
    # Bounded: the row the writer was stuck on and a burst queued behind it,
    # then per summary (at an interval's end, and at stop) one row per host and
    # reason (at most 20) and one for all others, whatever the number of sources.
    assert len(written) <= 1 + 100 + 2 * (20 + 1), len(written)
    assert _summed(written) == knocks
    assert any("other host(s)" in row[3] for row in written)


def test_the_gate_holds_a_bounded_number_of_connections_over_all_sources():
    import socket
    import ssl

    from enforcement.api.tlsgate import TlsGate
    refused = []
    gate = TlsGate("127.0.0.1", 0, 1, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
                   on_refusal=lambda address, why: refused.append((address, why)),
                   max_connections=5)
    port = gate.start()
    idle = []
    try:
        for n in range(5):  # from five addresses: no host is over its own share
            s = socket.socket()
            s.bind((f"127.3.0.{n + 1}", 0))
            s.connect(("127.0.0.1", port))
            idle.append(s)
        time.sleep(0.3)
        with socket.socket() as sixth:
            sixth.bind(("127.3.0.9", 0))
            sixth.connect(("127.0.0.1", port))
            sixth.settimeout(5)
            with contextlib.suppress(ConnectionResetError):  # closed at once, abruptly
                assert sixth.recv(10) == b""
        assert refused == [(refused[0][0], "more than 5 connections at once")]
        assert refused[0][0].startswith("127.3.0.9:")
    finally:
        for s in idle:
            s.close()
        gate.stop()


def test_the_refusal_budget_stays_bounded_under_many_callers(monkeypatch):
    from enforcement.api import guard
    monkeypatch.setattr(guard._AuditBudget, "MAX_CALLERS", 100)
    budget = guard._AuditBudget()
    allowed = sum(budget.allow(f"unauthenticated 127.4.{n // 250}.{n % 250}:1",
                               grpc.StatusCode.UNAUTHENTICATED) for n in range(5000))
    assert allowed <= 100  # new callers wait once the table is full, none gets a fresh burst
    assert len(budget._buckets) <= 100


def _watch_streams(port, count):
    """count Watch streams, each on a connection of its own; returns the
    calls and their channels once the refused ones have been answered."""
    channels, calls = [], []
    for _ in range(count):
        ch = grpc.insecure_channel(f"127.0.0.1:{port}",
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        channels.append(ch)
        calls.append(pb_grpc.EnforcementServiceStub(ch).Watch(pb.WatchRequest(), timeout=60))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if sum(call.done() for call in calls) >= count - 8:
            break
    return calls, channels


def _close(calls, channels):
    for call in calls:
        call.cancel()
    for ch in channels:
        ch.close()


@pytest.mark.parametrize(("workers", "open_streams", "served", "why"), [
    # Without TLS every connection used to be a client: 130 streams from
    # one process took every worker, and every call timed out.
    (128, 130, 8, "already has 8 Watch streams"),
    # Over all clients, streams never take more than half the workers.
    (8, 6, 4, "Watch streams, its limit over all clients"),
])
def test_streams_cannot_starve_the_decisions(tmp_path, workers, open_streams, served, why):
    service = EnforcementService(RecordingNetwork(), policy.load(),
                                 Store(f"sqlite:///{tmp_path}/state.db"))
    serving = serve("127.0.0.1:0", service, max_workers=workers)
    calls, channels = _watch_streams(serving.port, open_streams)
    try:
        refused = [call for call in calls if call.done()]
        assert len(calls) - len(refused) == served
        assert all(call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in refused)
        assert why in refused[0].details()
        with grpc.insecure_channel(f"127.0.0.1:{serving.port}") as ch:
            stub = pb_grpc.EnforcementServiceStub(ch)
            assert stub.Apply(spam("while-watched"), timeout=5).state == pb.STATE_ACTIVE
    finally:
        _close(calls, channels)
        serving.stop(None)
