"""A full mesh of four switches (two spare paths between any two): all hosts
reach each other, TCP included, nothing storms (through the switches' own
flooding or the controller) while the hosts are quiet, and cutting two links
still leaves everyone reachable."""
import time

import pytest

from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet


def flooded_and_copied(lab) -> int:
    return sum(harness.packets_to_controller(s.name) + harness.packets_flooded(s.name)
               for s in lab.net.switches)


def quiet_growth(lab, seconds: float = 3.0) -> int:
    before = flooded_and_copied(lab)
    time.sleep(seconds)
    return flooded_and_copied(lab) - before


def test_mesh_reachability_no_storm_and_two_cuts(lab_factory):
    # lab_factory checks all 12 directed links are discovered and pingAll loses nothing.
    lab = lab_factory(topologies.MeshTopo(switches=4), expected_links=12)
    h1, h4 = lab.host("h1"), lab.host("h4")
    harness.start_listener(h4, [8080])
    assert harness.tcp_connects(h1, h4.IP(), 8080)
    # The hosts' own IPv6 chatter is a few packets a second; one frame going
    # round a loop would be thousands.
    assert quiet_growth(lab) < 100

    lab.net.configLinkStatus("s1", "s4", "down")
    lab.net.configLinkStatus("s2", "s4", "down")
    cut = time.monotonic()
    harness.wait_until(lambda: harness.ping(h1, h4.IP(), timeout=1), 10,
                       "h1 to reach h4 through s3")
    print(f"h1 reached h4 again {time.monotonic() - cut:.2f} s after two cuts")
    assert lab.net.pingAll(timeout=2) == 0
    assert harness.tcp_connects(h1, h4.IP(), 8080)
    assert quiet_growth(lab) < 100
    assert lab.log_problems() == []
