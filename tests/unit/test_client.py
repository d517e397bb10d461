"""The typed client (enforcement.clients.client) and enforcementctl against a real
server socket, plaintext and mutual TLS; the switch side is tests/doubles.py's
recording double."""
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from enforcement.api import access
from enforcement.api.guard import Guard
from enforcement.api.servicer import SERVICE_NAME, create_server, serve
from enforcement.api.tlsgate import server_context
from enforcement.clients import certs
from enforcement.clients.client import ClientError, EnforcementClient, TlsFiles
from enforcement.domain import policy
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from tests.doubles import RecordingNetwork


@pytest.fixture
def service(tmp_path):
    return EnforcementService(RecordingNetwork(), policy.load(),
                              Store(f"sqlite:///{tmp_path}/state.db"))


@pytest.fixture
def served(service):
    serving = serve("127.0.0.1:0", service)
    yield serving
    serving.stop(None)


def test_apply_get_list_lift_round_trip(served, service):
    with EnforcementClient(f"127.0.0.1:{served.port}") as ctl:
        record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1", reason="r")
        assert record.state == pb.STATE_ACTIVE and record.request_id.startswith("py-")
        assert ctl.get(record.id).id == record.id
        assert [e.id for e in ctl.list(states=("active",))] == [record.id]
        lifted = ctl.lift(record.id, "done")
        assert lifted.state == pb.STATE_LIFTED
        plan = ctl.plan(ip="10.0.0.1", violation="spam")
        assert plan.escalation.step == 2  # a repeat: the next step of the ladder


def test_a_repeated_request_id_is_the_same_enforcement(served):
    with EnforcementClient(f"127.0.0.1:{served.port}") as ctl:
        first = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1", request_id="same")
        again = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1", request_id="same")
    assert first.id == again.id


def test_list_walks_every_page(served):
    with EnforcementClient(f"127.0.0.1:{served.port}") as ctl:
        ids = [ctl.apply(ip="10.0.0.1", violation=v, case_id=f"C-{v}").id
               for v in ("spam", "port_scan", "phishing")]
        assert [e.id for e in ctl.list(page_size=1)] == ids


def test_refusals_are_typed_and_not_retried(served, service):
    with (EnforcementClient(f"127.0.0.1:{served.port}") as ctl,
          pytest.raises(ClientError) as caught):
        ctl.apply(ip="010.0.0.1", violation="spam", case_id="C-1")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Leading zeros" in caught.value.details and not caught.value.unreachable
    assert len(service.audit_log()) == 1  # one attempt only
    with pytest.raises(ValueError, match="unknown violation"):
        EnforcementClient("127.0.0.1:1").apply(ip="10.0.0.1", violation="rudeness",
                                               case_id="C")


def test_unavailable_is_retried_until_the_controller_is_up(service):
    port = harness.free_port()
    started = []

    def late_start():
        time.sleep(0.4)
        server, _ = create_server(f"127.0.0.1:{port}", service)
        server.start()
        started.append(server)

    threading.Thread(target=late_start).start()
    try:
        with EnforcementClient(f"127.0.0.1:{port}", timeout=10, attempts=10) as ctl:
            record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1")
        assert record.state == pb.STATE_ACTIVE
    finally:
        time.sleep(0.5)
        for server in started:
            server.stop(None)


def test_the_deadline_covers_the_retries():
    port = harness.free_port()  # nobody listens
    began = time.monotonic()
    with (EnforcementClient(f"127.0.0.1:{port}", timeout=1.0, attempts=50) as ctl,
          pytest.raises(ClientError) as caught):
        ctl.get("enf-1")
    assert caught.value.unreachable
    # Not 50 attempts' worth of backoff, and no backoff slept past the deadline.
    assert time.monotonic() - began < 1.0 + 0.5


class LosesTheFirstLiftAnswer(Guard):
    """The first Lift is carried out, then its answer is lost in transit."""

    def __init__(self, service):
        super().__init__(SERVICE_NAME, access.DEFAULT, identify=None,
                         record_refusal=service.record_refusal)
        self.lost = False

    def intercept_service(self, continuation, details):
        handler = super().intercept_service(continuation, details)
        if not details.method.endswith("/Lift"):
            return handler
        behaviour = handler.unary_unary

        def lossy(request, context):
            answer = behaviour(request, context)
            if not self.lost:
                self.lost = True
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
            return answer
        return grpc.unary_unary_rpc_method_handler(
            lossy, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def test_a_retried_lift_whose_first_answer_was_lost_returns_the_lifted_record(service):
    guard = LosesTheFirstLiftAnswer(service)
    server, port = create_server("127.0.0.1:0", service, guard=guard)
    server.start()
    try:
        with EnforcementClient(f"127.0.0.1:{port}") as ctl:
            record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1")
            lifted = ctl.lift(record.id, "done")
        assert guard.lost and lifted.state == pb.STATE_LIFTED
    finally:
        server.stop(None)


@pytest.fixture
def tls_served(service, tmp_path):
    certs.generate(tmp_path / "pki", clients=["case-system"], server_hosts=["localhost"])
    pki = tmp_path / "pki"
    rules = access.parse({"clients": {"case-system": {"role": "case_system"}}})
    serving = serve("127.0.0.1:0", service, access=rules, tls_context=server_context(
        str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem")))
    yield serving, pki
    serving.stop(None)


def test_tls_files_give_the_client_its_identity(tls_served, service):
    serving, pki = tls_served
    files = TlsFiles(pki / "ca.pem", pki / "case-system.pem", pki / "case-system.key")
    with EnforcementClient(f"localhost:{serving.port}", tls=files) as ctl:
        ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1")
    assert service.audit_log()[0].actor.startswith("cert:case-system from")


def _ctl(*args, env=None):
    return subprocess.run([sys.executable, "-m", "enforcement.clients.cli", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_cli_over_mutual_tls_and_its_exit_codes(tls_served):
    serving, pki = tls_served
    tls_env = {"ENFORCEMENT_TLS_CA": str(pki / "ca.pem"),
               "ENFORCEMENT_TLS_CERT": str(pki / "case-system.pem"),
               "ENFORCEMENT_TLS_KEY": str(pki / "case-system.key"),
               "ENFORCEMENT_SERVER": f"localhost:{serving.port}"}
    applied = _ctl("apply", "--ip", "10.0.0.1", "--violation", "spam", "--case", "C-9",
                   env=tls_env)
    assert applied.returncode == 0, applied.stderr
    assert "state:     active" in applied.stdout
    listed = _ctl("list", env=tls_env)
    assert listed.returncode == 0 and "C-9" in listed.stdout
    # Reading the audit log is an engineer's call, not the case system's.
    assert _ctl("audit", env=tls_env).returncode == 1
    # The case system may not read the topology: refused, exit 1.
    topo = _ctl("topology", env=tls_env)
    assert topo.returncode == 1 and "PERMISSION_DENIED" in topo.stderr
    # No certificate at all: the gate hangs up, the controller is unreachable for us.
    plain = _ctl("--server", f"localhost:{serving.port}", "--timeout", "3", "list")
    assert plain.returncode == 3
    half = _ctl("--tls-ca", str(pki / "ca.pem"), "list")
    assert half.returncode == 2 and "together" in half.stderr


def test_cli_audit_lists_who_did_what(served):
    with EnforcementClient(f"127.0.0.1:{served.port}") as ctl:
        ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-A")
    out = _ctl("--server", f"127.0.0.1:{served.port}", "audit", "--case", "C-A")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:4] == ["TIME", "ACTOR", "CALL", "OUTCOME"]
    assert "unauthenticated 127.0.0.1:" in row and " Apply " in row and " OK " in row


def test_cli_watch_prints_events_as_they_happen(served, service):
    with EnforcementClient(f"127.0.0.1:{served.port}") as ctl:
        first = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-W")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "enforcement.clients.cli",
             "--server", f"127.0.0.1:{served.port}",
             "watch", "--case", "C-W", "--count", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        header = watcher.stdout.readline()
        assert header.split()[:3] == ["TIME", "SEQ", "EVENT"]
        replayed = watcher.stdout.readline()  # the past first
        assert "applied" in replayed and first.id in replayed
        ctl.apply(ip="10.0.0.3", violation="spam", case_id="OTHER")  # filtered out
        ctl.lift(first.id, "done")
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and first.id in lines[0] and "lifted" in lines[0]
    assert "OTHER" not in out


@pytest.fixture
def dual_served(tmp_path):
    from tests.doubles import DualStackNetwork
    serving = serve("127.0.0.1:0", EnforcementService(
        DualStackNetwork(), policy.load(), Store(f"sqlite:///{tmp_path}/dual.db")))
    yield serving
    serving.stop(None)


def test_cli_takes_ipv6_addresses_and_shows_both_families(dual_served, capsys):
    from enforcement.clients import cli
    from tests.doubles import V6, DualStackNetwork

    def ctl(*args):
        code = cli.main(["--server", f"127.0.0.1:{dual_served.port}", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = ctl("plan", "--ip", V6, "--violation", "spam", "--case", "C-6")
    assert code == 0 and "where:" in out and "eth_type=0x86dd" in out
    code, out, _ = ctl("apply", "--ip", V6, "--violation", "spam", "--case", "C-6")
    assert code == 0 and f"subscriber {V6} (00:00:00:00:00:01)" in out
    [addresses] = [line for line in out.splitlines() if line.startswith("addresses:")]
    assert {V6, "10.0.0.1"} <= set(addresses.split(None, 1)[1].split(", "))
    [enforcement_id] = [line.split()[1] for line in out.splitlines() if line.startswith("id:")]
    for address in (V6, "10.0.0.1"):
        code, out, _ = ctl("list", "--ip", address)
        assert code == 0 and enforcement_id in out and V6 in out, address
    code, out, _ = ctl("watch", "--ip", V6, "--count", "1")
    assert code == 0 and enforcement_id in out and V6 in out
    code, _, err = ctl("list", "--ip", "fe80::1%eth0")
    assert code == 1 and "INVALID_ARGUMENT" in err and "zone" in err

    for command in ("hosts", "topology"):
        code, out, _ = ctl(command)
        assert code == 0
        lines = out.splitlines()
        header = next(line for line in lines if line.startswith("HOST IP"))
        assert header.split()[:4] == ["HOST", "IP", "IPV6", "MAC"]
        [subscriber] = [line for line in lines if line.startswith("10.0.0.1 ")]
        assert subscriber.split()[1] == ",".join(DualStackNetwork.IPV6)
        assert subscriber.split()[-1] == enforcement_id
        [dns] = [line for line in lines if line.startswith("10.0.0.250 ")]
        assert dns.split()[1] == "-"


def test_cli_applies_by_inventory_account(dual_served, capsys):
    from enforcement.clients import cli

    def ctl(*args):
        code = cli.main(["--server", f"127.0.0.1:{dual_served.port}", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = ctl("apply", "--account", "ACME-1", "--violation", "spam", "--case", "C-7")
    assert code == 0 and "subscriber 10.0.0.1 " in out
    code, _, err = ctl("apply", "--account", "NOBODY", "--violation", "spam", "--case", "C-7")
    assert code == 1 and "NOT_FOUND" in err and "NOBODY" in err
    with pytest.raises(SystemExit):  # one of the two, not both
        ctl("apply", "--account", "ACME-1", "--ip", "10.0.0.1", "--violation", "spam",
            "--case", "C-7")
