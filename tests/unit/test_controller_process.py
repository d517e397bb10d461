"""The real enforcement-controller process: start-up, health, clean stop.
No switch needed; the Mininet tests cover what it does with switches."""
import contextlib
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from testbed import lab as harness


def test_starts_answers_health_and_stops_cleanly_on_sigterm(tmp_path):
    # A state directory of its own: the machine's default is shared by
    # every checkout on it, whose schemas may differ.
    controller = harness.ControllerProcess(harness.free_port(),
                                           log_path=tmp_path / "controller.log",
                                           extra_args=["--state-dir", str(tmp_path)])
    try:
        address = controller.wait_ready()
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        controller.proc.send_signal(signal.SIGTERM)
        assert controller.proc.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        controller.stop()
    log = (tmp_path / "controller.log").read_text()
    assert "Traceback" not in log and "stopped" in log


def test_refuses_to_start_when_the_openflow_port_is_taken(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "controller.main", "--grpc-listen", "127.0.0.1:0",
             "--ofp-port", str(port)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"OpenFlow port 127.0.0.1:{port} is not free" in result.stderr


def test_bad_arguments_are_usage_errors():
    result = subprocess.run([sys.executable, "-m", "controller.main", "--ofp-port", "70000"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--ofp-port" in result.stderr


def _run(*args):
    return subprocess.run([sys.executable, "-m", "controller.main", *args],
                          capture_output=True, text=True, timeout=30)


def test_plaintext_is_refused_off_loopback():
    result = _run("--grpc-listen", "0.0.0.0:50999")
    assert result.returncode == 2
    assert "is not a loopback address" in result.stderr and "--tls-cert" in result.stderr


def test_tls_needs_all_three_files(tmp_path):
    result = _run("--tls-cert", str(tmp_path / "a.pem"))
    assert result.returncode == 2 and "together" in result.stderr


def test_unreadable_tls_files_stop_the_start(tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate")
    result = _run("--grpc-listen", "127.0.0.1:0", "--ofp-port", str(harness.free_port()),
                  "--db", f"sqlite:///{tmp_path}/db", "--tls-cert", str(tmp_path / "junk.pem"),
                  "--tls-key", str(tmp_path / "junk.pem"),
                  "--tls-client-ca", str(tmp_path / "junk.pem"))
    assert result.returncode == 2 and "cannot use the TLS files" in result.stderr


def test_a_wrong_access_file_stops_the_start(tmp_path):
    (tmp_path / "access.toml").write_text('[clients.desk]\nrole = "root"\n')
    result = _run("--access", str(tmp_path / "access.toml"))
    assert result.returncode == 2 and "clients.desk.role must be one of" in result.stderr


def test_mutual_tls_process_serves_certificate_holders_only(tmp_path):
    from enforcement.clients import certs
    from enforcement.v1 import enforcement_pb2 as pb
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc

    certs.generate(tmp_path / "pki", clients=["engineer"], server_hosts=["localhost"])
    (tmp_path / "access.toml").write_text('[clients.engineer]\nrole = "engineer"\n')
    pki = tmp_path / "pki"
    controller = harness.ControllerProcess(
        harness.free_port(), log_path=tmp_path / "controller.log",
        extra_args=["--db", f"sqlite:///{tmp_path}/db", "--access",
                    str(tmp_path / "access.toml"),
                    "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                    "--tls-client-ca", str(pki / "ca.pem"),
                    "--http-listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"])
    try:
        port = controller.wait_ready().rsplit(":", 1)[1]
        # The view on loopback and the metrics off loopback: both want a
        # client certificate of the deployment's CA once TLS is configured.
        view_port = controller.http_address.rsplit(":", 1)[1]
        metrics_port = controller.metrics_address.rsplit(":", 1)[1]
        for url in (f"https://localhost:{view_port}/api/topology",
                    f"https://localhost:{metrics_port}/metrics"):
            assert _https_status(url, pki, None) is None, url  # no certificate: no answer
            assert _https_status(url, pki, "engineer") == 200, url
        assert _https_status(f"http://127.0.0.1:{view_port}/api/topology", pki, None) is None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / "engineer.key").read_bytes(),
            certificate_chain=(pki / "engineer.pem").read_bytes())
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            stub = pb_grpc.EnforcementServiceStub(channel)
            assert len(stub.GetTopology(pb.GetTopologyRequest(), timeout=5).switches) == 0
            audit = stub.ListAudit(pb.ListAuditRequest(), timeout=5)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
            try:
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=3)
                raise AssertionError("plaintext answered on the TLS port")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        controller.stop()
    assert audit.entries == []
    log = (tmp_path / "controller.log").read_text()
    assert "refused connection from 127.0.0.1" in log and "Traceback" not in log


def _https_status(url, pki, who):
    """The status of a GET (None when the server would not talk), as a
    client with the deployment's CA and optionally who's certificate."""
    import ssl
    import urllib.error
    import urllib.request
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if who is not None:
        context.load_cert_chain(str(pki / f"{who}.pem"), str(pki / f"{who}.key"))
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ssl.SSLError, ConnectionError, OSError):
        return None


def test_metrics_are_refused_off_loopback_without_tls():
    result = _run("--metrics-listen", "0.0.0.0:9999")
    assert result.returncode == 2
    assert "--metrics-listen" in result.stderr and "not a loopback address" in result.stderr


def test_the_view_is_refused_off_loopback_without_a_token_or_tls():
    result = _run("--http-listen", "0.0.0.0:8999")
    assert result.returncode == 2
    assert "--http-token-file" in result.stderr and "not a loopback address" in result.stderr


def test_a_short_view_token_stops_the_start(tmp_path):
    (tmp_path / "token").write_text("short\n")
    result = _run("--grpc-listen", "127.0.0.1:0", "--ofp-port", str(harness.free_port()),
                  "--db", f"sqlite:///{tmp_path}/db", "--metrics-listen", "off",
                  "--http-listen", "0.0.0.0:0", "--http-token-file", str(tmp_path / "token"))
    assert result.returncode == 2 and "shorter than 16" in result.stderr


def test_json_logs_are_one_event_per_line(tmp_path):
    """--log-format json: every line the real process writes on stderr, from
    its start through a refused client and a clean stop, is one JSON object
    with the time, level, logger and message."""
    import json

    controller = harness.ControllerProcess(
        harness.free_port(), log_path=tmp_path / "controller.log",
        extra_args=["--log-format", "json", "--log-level", "DEBUG",
                    "--state-dir", str(tmp_path / "state")])
    try:
        address = controller.wait_ready()
        with grpc.insecure_channel(address) as channel:
            # Not protobuf: grpcio logs it (one event, no traceback lines).
            garbage = channel.unary_unary("/enforcement.v1.EnforcementService/Get")
            with contextlib.suppress(grpc.RpcError):
                garbage(b"\xff\xff\xff", timeout=5)
        controller.proc.send_signal(signal.SIGTERM)
        assert controller.proc.wait(15) == 0
    finally:
        controller.stop()
    lines = (tmp_path / "controller.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) > 5 and all(isinstance(event, dict) for event in events)
    for event in events:
        assert {"time", "level", "logger", "message"} <= set(event), event
        assert event["time"].endswith("+00:00")
    messages = [event["message"] for event in events]
    assert "stopped" in messages and any(m.startswith("state directory") for m in messages)


def test_a_configuration_file_starts_the_controller_and_flags_override_it(tmp_path):
    ofp_port = harness.free_port()
    (tmp_path / "controller.toml").write_text(
        f'state_dir = "state"\n[openflow]\nport = {ofp_port}\n'
        '[metrics]\nlisten = "off"\n[log]\nformat = "json"\n')
    controller = harness.ControllerProcess(
        # The harness passes --ofp-port itself: the flag wins over the file.
        ofp_port, log_path=tmp_path / "controller.log",
        extra_args=["--config", str(tmp_path / "controller.toml"),
                    "--metrics-listen", "127.0.0.1:0"])
    try:
        controller.wait_ready()
        assert controller.metrics_address  # the flag, not the file's "off"
    finally:
        assert controller.stop() == 0
    assert (tmp_path / "state" / "enforcement.db").exists()  # relative to the file
    first = (tmp_path / "controller.log").read_text().splitlines()[0]
    assert first.startswith("{") and "configuration file" in first


def test_a_wrong_configuration_file_stops_the_start_naming_each_mistake(tmp_path):
    (tmp_path / "controller.toml").write_text('[grpc]\nlisten = 50051\n[log]\nlevl = "INFO"\n')
    result = _run("--config", str(tmp_path / "controller.toml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        (f"enforcement-controller: error: {tmp_path}/controller.toml:2: grpc.listen must be "
         "text (in quotes), not 50051"),
        (f"enforcement-controller: error: {tmp_path}/controller.toml:4: unknown key log.levl; "
         "did you mean log.level?")]


def test_a_password_in_the_store_url_appears_in_no_log_line(tmp_path, postgres_server):
    """Every line the real process writes, at DEBUG, from its start through
    decisions, a refused one, a reload and its stop, and a start that fails
    because the database is away: the store URL's password is in none."""
    from enforcement.v1 import enforcement_pb2 as pb
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
    secret = "Pa55-word-never-logged-7f3a"
    url = postgres_server.create_database("enforcement_password_log").replace(
        "@/", f":{secret}@/", 1)
    assert secret in url
    controller = harness.ControllerProcess(
        harness.free_port(), log_path=tmp_path / "controller.log",
        extra_args=["--db", url, "--log-level", "DEBUG", "--metrics-listen", "off"])
    try:
        address = controller.wait_ready()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.EnforcementServiceStub(channel)
            with contextlib.suppress(grpc.RpcError):  # nobody is located: refused
                stub.Apply(pb.ApplyRequest(request_id="r1", case_id="C-1",
                                           subscriber=pb.Subscriber(ip="10.0.0.1"),
                                           violation=pb.VIOLATION_SPAM, reason="x"), timeout=5)
            stub.ListAudit(pb.ListAuditRequest(), timeout=5)
        controller.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
    finally:
        controller.stop()
    log = (tmp_path / "controller.log").read_text()
    assert "reload" in log.lower() and len(log.splitlines()) > 10
    away = url.replace("?host=", "?connect_timeout=2&host=/nonexistent")
    failed = _run("--grpc-listen", "127.0.0.1:0", "--ofp-port", str(harness.free_port()),
                  "--db", away, "--log-level", "DEBUG", "--metrics-listen", "off")
    assert failed.returncode != 0 and "store" in failed.stderr, failed.stderr[-2000:]
    for text in (log, failed.stdout, failed.stderr):
        assert secret not in text
    assert "***" in log
