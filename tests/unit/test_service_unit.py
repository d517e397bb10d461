"""Running under systemd: the unit file in deploy/ is valid and hardened, and
the real controller process speaks the readiness protocol (sd_notify) to a
real AF_UNIX datagram socket, as systemd's would be. These machines do not
run systemd as PID 1, so the unit is checked offline (systemd-analyze) and
the protocol by a test that plays systemd's part."""
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.process import notify
from testbed import lab as harness

UNIT = pathlib.Path(__file__).parents[2] / "deploy" / "enforcement-controller.service"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") or os.environ.get("ENFORCEMENT_NO_SKIP"):
            pytest.fail("systemd-analyze is missing (Debian's systemd package)")
        pytest.skip("systemd-analyze is missing (Debian's systemd package)")
    return found


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def _unit_with_local_script(tmp_path) -> pathlib.Path:
    """The unit with ExecStart pointing at this virtualenv's console script:
    verify checks that the binary exists, and the shipped path
    (/usr/local/bin, where a system-wide pip install puts it) does not here."""
    script = pathlib.Path(sys.executable).parent / "enforcement-controller"
    assert script.exists(), "pip install -e . in the virtualenv"
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/enforcement-controller",
                                    f"ExecStart={script}")
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def test_the_unit_file_verifies(tmp_path):
    result = subprocess.run([_systemd_analyze(), "verify", str(_unit_with_local_script(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_the_unit_is_hardened(tmp_path):
    """systemd's own exposure score, offline: 'OK' is 3.0 or lower (30 here)."""
    result = subprocess.run([_systemd_analyze(), "security", "--offline=true",
                             "--threshold=30", str(_unit_with_local_script(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_the_unit_runs_the_script_itself_with_the_shipped_config_path():
    unit = _directives(UNIT.read_text())
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    # No shell in between: the controller is the main process, gets SIGTERM
    # and SIGHUP itself, and is the one allowed to notify.
    assert unit["ExecStart"] == [("/usr/local/bin/enforcement-controller "
                                  "--config /etc/sdn-enforcement/controller.toml")]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["StateDirectory"] == ["sdn-enforcement"]
    # The example configuration is the one the install copies.
    assert "deploy/controller.example.toml /etc/sdn-enforcement/controller.toml" \
        in UNIT.read_text()


def _receive_until(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    """Datagrams as systemd receives them, up to one holding `wanted`."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            datagram = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(datagram)
        if wanted in datagram.split("\n"):
            return got
    raise AssertionError(f"no {wanted} within {timeout} s; got {got}")


@contextlib.contextmanager
def _under_systemd(tmp_path, monkeypatch, *extra_args, abstract=False):
    """The real controller with $NOTIFY_SOCKET naming a datagram socket of
    the test's, as systemd gives one (a path, or abstract: '@' in the
    variable, systemd's own choice nowadays). Yields the socket, the
    process and its gRPC port."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        if abstract:
            name = f"enforcement-test-{os.getpid()}-{time.monotonic_ns()}"
            systemd.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            systemd.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        grpc_port = harness.free_port()
        controller = harness.ControllerProcess(
            harness.free_port(), grpc_listen=f"127.0.0.1:{grpc_port}",
            log_path=tmp_path / "controller.log",
            extra_args=["--state-dir", str(tmp_path / "state"), *extra_args])
        try:
            yield systemd, controller, grpc_port
        finally:
            controller.stop()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_after_grpc_serves_and_stopping_on_sigterm(tmp_path, monkeypatch, abstract):
    with _under_systemd(tmp_path, monkeypatch, abstract=abstract) as (
            systemd, controller, grpc_port):
        before = _receive_until(systemd, "READY=1", 30)
        # At the moment READY=1 arrives, gRPC answers at once: no
        # waiting for the channel, no retry.
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=False)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        statuses = [line for datagram in before for line in datagram.split("\n")
                    if line.startswith("STATUS=")]
        assert statuses[:2] == ["STATUS=opening the store", "STATUS=starting OpenFlow"]
        assert statuses[-1].startswith(f"STATUS=serving gRPC on 127.0.0.1:{grpc_port}")
        # The READY line on stdout comes with it.
        assert controller.wait_ready(10) == f"127.0.0.1:{grpc_port}"
        controller.proc.send_signal(signal.SIGTERM)
        after = _receive_until(systemd, "STOPPING=1", 15)
        assert controller.proc.wait(15) == 0
        assert all("READY=1" not in datagram for datagram in after)


def test_notify_does_nothing_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify("READY=1") is False


def test_notify_to_a_socket_nobody_listens_on_is_logged_not_raised(tmp_path, monkeypatch,
                                                                   caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify.notify("RELOADING=1") is False
    assert "cannot reach systemd's notification socket" in caplog.text


def test_notify_sends_one_datagram(tmp_path, monkeypatch):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert notify.notify("RELOADING=1\nSTATUS=reloading the policy") is True
        systemd.settimeout(2)
        assert systemd.recv(4096) == b"RELOADING=1\nSTATUS=reloading the policy"


def test_reloading_says_when_on_the_monotonic_clock(tmp_path, monkeypatch):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notify.reloading("reloading the policy") is True
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        systemd.settimeout(2)
        lines = systemd.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[2] == "STATUS=reloading the policy"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=")[1]) <= after


def test_sighup_reloads_the_policy_and_tells_systemd(tmp_path, monkeypatch):
    """`systemctl reload` is a SIGHUP (ExecReload): the real process reads
    the policy again, says RELOADING=1 then READY=1 with the version it now
    runs, answers GetTopology with it; a broken file is refused, the version
    in force stays, and the refusal is on Watch."""
    import importlib.resources

    from enforcement.domain import policy
    from enforcement.v1 import enforcement_pb2 as pb
    from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
    shipped = importlib.resources.files("enforcement.domain").joinpath(
        "default_policy.toml").read_text(encoding="utf-8")
    changed = shipped.replace("[escalation]\n", "[escalation]\n# changed\n", 1)
    assert changed != shipped
    path = tmp_path / "policy.toml"
    path.write_text(shipped)
    with _under_systemd(tmp_path, monkeypatch, "--policy", str(path)) as (
            systemd, controller, grpc_port):
        _receive_until(systemd, "READY=1", 30)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = pb_grpc.EnforcementServiceStub(channel)

        def version():
            return stub.GetTopology(pb.GetTopologyRequest(), timeout=5).policy_version
        assert version() == policy.version_of(shipped)
        path.write_text(changed)
        controller.proc.send_signal(signal.SIGHUP)
        said = _receive_until(systemd, "READY=1", 15)
        lines = [line for datagram in said for line in datagram.split("\n")]
        assert lines.index("RELOADING=1") < lines.index("READY=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in lines)
        assert f"STATUS=policy {policy.version_of(changed)}" in lines
        assert version() == policy.version_of(changed)

        path.write_text("this is not TOML [")
        controller.proc.send_signal(signal.SIGHUP)
        said = _receive_until(systemd, "READY=1", 15)
        assert any("last reload refused" in d for d in said)
        assert version() == policy.version_of(changed)
        events = []
        call = stub.Watch(pb.WatchRequest(), timeout=10)
        for event in call:
            events.append(event)
            if event.kind == pb.EVENT_KIND_RELOAD_REFUSED:
                call.cancel()
                break
        kinds = [e.kind for e in events]
        assert kinds == [pb.EVENT_KIND_POLICY_RELOADED, pb.EVENT_KIND_RELOAD_REFUSED]
        assert "not valid TOML" in events[-1].detail
        channel.close()
        assert controller.proc.poll() is None  # a reload never ends the process
