"""Thousands of malformed and hostile requests at the real controller process,
over mutual TLS, while it runs real switches: afterwards the switches hold
exactly the flows and meters they held before, the server still answers, and
a genuine decision still blocks real traffic.

Topology (topologies.LinearTopo(2, 2)): h1, h2 on s1; h3, h4 on s2.
"""
import collections
import contextlib
import random
import socket
import subprocess
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from enforcement.clients import certs
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet

REQUESTS = 3000
SEED = 20261125
ACCESS = """
[clients.case-system]
role = "case_system"
[clients.engineer]
role = "engineer"
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    certs.generate(base, clients=["case-system", "engineer"],
                   server_hosts=["localhost", "127.0.0.1"])
    (base / "access.toml").write_text(ACCESS)
    return base


def credentials(pki, who):
    return grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{who}.key").read_bytes(),
        certificate_chain=(pki / f"{who}.pem").read_bytes())


@pytest.fixture(scope="module")
def lab(lab_factory, pki):
    lab = lab_factory(
        topologies.LinearTopo(switches=2, hosts_per_switch=2), expected_links=2,
        credentials=credentials(pki, "engineer"),
        controller_args=["--tls-cert", str(pki / "server.pem"),
                         "--tls-key", str(pki / "server.key"),
                         "--tls-client-ca", str(pki / "ca.pem"),
                         "--access", str(pki / "access.toml")])
    harness.start_listener(lab.host("h3"), (25, 80))
    return lab


def switch_state() -> dict[str, list[str]]:
    """Tables 0 and 1 (enforcement and meters) and the meters of each switch:
    everything a decision could change. Table 2 (learned forwarding) moves
    with ordinary traffic and is left out."""
    state = {}
    for sw in ("s1", "s2"):
        meters = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-meters", sw],
                                capture_output=True, text=True, check=True).stdout
        state[sw] = (harness.dump_flows(sw, 0) + harness.dump_flows(sw, 1)
                     + sorted(line.strip() for line in meters.splitlines()[1:]))
    return state


ODD_IPS = ["010.0.0.1", "10.0.0.01", "10.1", "0x0a.0.0.1", "10.0.0.1 ", "10.0.0.1\n",
           "10.0.0.256", "::ffff:10.0.0.1", "fe80::1%eth0", "2001:db8::1", "", "0.0.0.0",
           "255.255.255.255", "127.0.0.1", "224.0.0.1", "１０.0.0.1", "10.0.0.1/24",
           "a" * 5000]


def hostile(rng: random.Random):
    """(identity, method, request or raw bytes, codes allowed)."""
    refused = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"}
    ok_subscriber = pb.Subscriber(ip=rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3"]))

    def apply(**fields):
        base = dict(request_id=f"h-{rng.getrandbits(48):x}", case_id="HOSTILE",
                    subscriber=ok_subscriber, violation=pb.VIOLATION_SPAM, reason="x")
        base.update(fields)
        return pb.ApplyRequest(**base)

    kind = rng.randrange(16)
    if kind == 0:
        odd = pb.Subscriber(ip=rng.choice(ODD_IPS))
        return "case-system", "Apply", apply(subscriber=odd), refused
    if kind == 1:
        return "case-system", "Apply", apply(violation=rng.choice([0, 14, 99, -5])), refused
    if kind == 2:  # the providers' own hosts and addresses nobody has
        ip = rng.choice(["10.0.0.250", "10.0.0.251", "10.0.0.252", "10.0.0.99"])
        return "case-system", "Apply", apply(subscriber=pb.Subscriber(ip=ip)), refused
    if kind == 3:
        return "case-system", "Apply", apply(scope=rng.choice(
            ["10.0.0.0/8", "0.0.0.0/0", "10.0.0.0/08", "10.0.0.0/255.0.0.0", "x"])), refused
    if kind == 4:
        action = pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT,
                                  rate=rng.choice([0, 10**12, 2**64 - 1]),
                                  unit=rng.choice([0, 1, 2, 7]))
        return "case-system", "Apply", apply(action=action), refused
    if kind == 5:
        action = pb.ActionRequest(kind=pb.ACTION_KIND_BLOCK, protocol="tcp",
                                  ports=[rng.randrange(2**32) for _ in range(70)],
                                  to=[rng.choice(["dns", "10.0.0.0/33", "nope", "x" * 100])
                                      for _ in range(rng.choice([1, 20]))])
        return "case-system", "Apply", apply(action=action), refused
    if kind == 6:
        action = pb.ActionRequest(kind=pb.ACTION_KIND_BLOCK, protocol="any")
        return "case-system", "Apply", apply(action=action), refused
    if kind == 7:
        reason = rng.choice(["\x1b[2J", "a\x00b", "x" * 2049, "y" * 70000])
        return "case-system", "Apply", apply(reason=reason), refused
    if kind == 8:
        rid = rng.choice(["", "with space", "é", "x" * 129, "a\nb"])
        return "case-system", "Apply", apply(request_id=rid), refused
    if kind == 9:
        request = apply()
        if rng.random() < 0.5:
            request.duration.seconds = rng.choice([-1, 0, 10**12])
        else:
            request.expires_at.seconds = rng.choice([1, 10**12, -5])
        return "case-system", "Apply", request, refused
    if kind == 10:
        return "case-system", "Lift", pb.LiftRequest(id=rng.choice(
            ["", "enf-0", "x" * 300, "../../etc", "enf-" + "f" * 16]), reason="x"), refused
    if kind == 11:
        return "case-system", "List", pb.ListRequest(
            page_size=rng.choice([10**6, 1001]), page_token=rng.choice(["-1", "x", "9" * 40]),
            subscriber_ip=rng.choice(ODD_IPS[:8])), refused
    if kind == 12:
        return "engineer", "Get", pb.GetRequest(id="q" * rng.choice([129, 10000])), refused
    if kind == 13:  # not protobuf at all
        return "case-system", "Apply", bytes(rng.getrandbits(8) for _ in range(64)), \
            refused | {"INTERNAL"}
    if kind == 14:  # a well-formed decision from an identity that may not decide
        return "engineer", "Apply", apply(), {"PERMISSION_DENIED"}
    return "engineer", "Lift", pb.LiftRequest(id="enf-0"), {"PERMISSION_DENIED"}


def test_thousands_of_hostile_requests_change_nothing_and_the_server_still_serves(lab, pki):
    before = switch_state()
    assert before["s1"] and before["s2"]
    rng = random.Random(SEED)
    requests = [hostile(rng) for _ in range(REQUESTS)]
    channels = {who: grpc.secure_channel(lab.controller.grpc_address, credentials(pki, who))
                for who in ("case-system", "engineer")}
    outcomes = collections.Counter()
    surprises = []
    lock = threading.Lock()

    def send(batch):
        for who, method, request, allowed in batch:
            path = f"/enforcement.v1.EnforcementService/{method}"
            raw = isinstance(request, bytes)
            call = channels[who].unary_unary(
                path, request_serializer=None if raw else type(request).SerializeToString,
                response_deserializer=None)
            try:
                call(request, timeout=10)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            with lock:
                outcomes[code] += 1
                if code not in allowed:
                    surprises.append((who, method, repr(request)[:200], code))

    threads = [threading.Thread(target=send, args=(requests[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    # Meanwhile: clients that cannot speak TLS.
    plain = sum(_plaintext_knock(lab.controller.grpc_address) for _ in range(50))
    for t in threads:
        t.join(300)
    print("outcomes:", dict(outcomes))
    assert sum(outcomes.values()) == REQUESTS
    assert surprises == [], surprises[:10]
    assert outcomes["OK"] == 0

    assert switch_state() == before, "a hostile request changed a switch"

    # Still serving: health, reads, and a genuine decision that blocks real traffic.
    stub = pb_grpc.EnforcementServiceStub(channels["case-system"])
    health = health_pb2_grpc.HealthStub(channels["engineer"]).Check(
        health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert lab.stub.List(pb.ListRequest(case_id="HOSTILE"), timeout=5).enforcements == []
    h1, h3 = lab.host("h1"), lab.host("h3")
    assert harness.tcp_connects(h1, h3.IP(), 25)
    record = stub.Apply(pb.ApplyRequest(request_id="genuine-1", case_id="REAL",
                                        subscriber=pb.Subscriber(ip=h1.IP()),
                                        violation=pb.VIOLATION_SPAM, reason="real"),
                        timeout=10)
    assert record.state == pb.STATE_ACTIVE
    assert not harness.tcp_connects(h1, h3.IP(), 25)
    assert harness.tcp_connects(h1, h3.IP(), 80)
    stub.Lift(pb.LiftRequest(id=record.id, reason="done"), timeout=10)
    assert harness.tcp_connects(h1, h3.IP(), 25)
    assert switch_state() == before

    # The refusals are on record under the caller's identity (budgeted so a
    # flood cannot flood the log), and the plaintext clients as refused connections.
    _plaintext_knock(lab.controller.grpc_address)

    def audit_entries():
        return lab.stub.ListAudit(pb.ListAuditRequest(limit=1000), timeout=5).entries
    # The gate's refusals are written by a thread of their own, off its loop.
    harness.wait_until(lambda: any(e.call == "connect" and e.outcome == "UNAUTHENTICATED"
                                   for e in audit_entries()), 10, "the refused connection audited")
    audit = audit_entries()
    actors = collections.Counter(e.actor.split(" from ")[0] for e in audit)
    assert actors["cert:case-system"] > 0 and actors["cert:engineer"] > 0
    assert plain == 50
    assert lab.log_problems() == [], "the controller logged errors"
    for ch in channels.values():
        ch.close()


def _plaintext_knock(address: str) -> int:
    """An HTTP/2 client without TLS: the gate must hang up on it."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(100))
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            assert sock.recv(100) == b"" or True  # closed or alerted, never answered
    return 1
