"""A store younger than the switches: the controller restarted on a fresh
database (deleted, or restored from an old backup) while Open vSwitch kept
running. The switches remember the newest generation id they saw, so a
MASTER claim at the fresh store's epoch 1 would be refused as stale and the
controller could never take them back. It reads the switches' generation
first and leads above it.
"""
from __future__ import annotations

import grpc
import pytest

from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet


@pytest.fixture(scope="module")
def lab(lab_factory):
    lab = lab_factory(topologies.LinearTopo(switches=2, hosts_per_switch=2), expected_links=2)
    harness.start_listener(lab.host("h3"), (25, 80))
    return lab


def _controller(lab, tmp_path, name: str, db: str):
    controller = harness.ControllerProcess(
        lab.ofp_port, log_path=lab.log_path.with_name(f"{lab.log_path.stem}-{name}.log"),
        extra_args=["--db", db])
    controller.wait_ready()
    return controller


def test_a_fresh_store_leads_above_the_generation_the_switches_saw(lab, tmp_path):
    lab.controller.stop()  # led at epoch 1 of its store
    second = _controller(lab, tmp_path, "second", lab.controller_args[1])
    second.stop()          # epoch 2: the switches have seen generation 2
    fresh = _controller(lab, tmp_path, "fresh", f"sqlite:///{tmp_path}/fresh.db")
    try:
        with grpc.insecure_channel(fresh.grpc_address) as channel:
            stub = pb_grpc.EnforcementServiceStub(channel)
            harness.wait_until(lambda: len(stub.GetTopology(pb.GetTopologyRequest()).hosts)
                               >= 4, 30, "the hosts read back from the switches")
            record = stub.Apply(pb.ApplyRequest(
                request_id="fresh-1", case_id="CASE-FRESH",
                subscriber=pb.Subscriber(ip=lab.host("h1").IP()),
                violation=pb.VIOLATION_SPAM, reason="test"))
            assert record.state == pb.STATE_ACTIVE, record.state_reason
            h1 = lab.host("h1")
            assert not harness.tcp_connects(h1, lab.host("h3").IP(), 25)
            assert harness.tcp_connects(h1, lab.host("h3").IP(), 80)
        log = fresh.log_path.read_text()
        assert "newer than the store's epoch 1" in log and "leading at epoch 3" in log
        assert "STALE" not in log and " ERROR " not in log and "Traceback" not in log
    finally:
        fresh.stop()
