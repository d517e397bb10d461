"""The real enforcement-controller process: start-up, health, clean stop.
No switch needed; the Mininet tests cover what it does with switches."""
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import lab as harness


def test_starts_answers_health_and_stops_cleanly_on_sigterm(tmp_path):
    controller = harness.ControllerProcess(harness.free_port(),
                                           log_path=tmp_path / "controller.log")
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
