"""A full mesh of four switches (three redundant paths between any two):
everything reaches everything, TCP included, and nothing storms."""
import time

import pytest

import lab as harness
import topologies

pytestmark = pytest.mark.mininet


def packet_ins(lab) -> int:
    return sum(harness.packets_to_controller(s.name) for s in lab.net.switches)


def test_mesh_full_reachability_without_storm(lab_factory):
    lab = lab_factory(topologies.MeshTopo(switches=4), expected_links=12)
    assert lab.net.pingAll(timeout=2) == 0
    harness.start_listener(lab.host("h4"), [8080])
    assert harness.tcp_connects(lab.host("h1"), lab.host("h4").IP(), 8080)
    before = packet_ins(lab)
    time.sleep(3)
    assert packet_ins(lab) - before < 100
    assert not lab.log_problems()
