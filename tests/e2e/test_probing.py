"""Discovery probes settled subscriber lines rarely, and still finds a switch
plugged in behind one within the stated bound (one settled period:
--lldp-settled-seconds, 20 s), with no port going down or up anywhere.

Topology (BehindLineTopo): s1 (h1 on port 1, h2 on port 2) -- s2 (h3);
s3, a switch connected to the controller like the others, whose ports 1
and 2 lead to h1's second and third interfaces (two ports, so that its
settled ports are swept, as a subscriber switch's are; one would be
probed on its own). h1 is a subscriber that does not bridge its
interfaces until the test makes it bridge the first two: then s3 hangs
off h1's line on s1 through h1's Linux bridge, and nothing
carrier-related happens on any switch port (Open vSwitch's link_resets
shows it).
"""
import pathlib
import re
import struct
import subprocess
import time
import urllib.request

import pytest
from mininet.topo import Topo

from controller.topology.lldp.auth import ANY_PORT
from controller.topology.lldp.schedule import NEW_SECONDS, SETTLED_PERIOD
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed.capture import Capture

pytestmark = pytest.mark.mininet

LINE = (1, 1)          # h1's line on s1
BEHIND = (3, 1)        # s3's port toward h1's second interface
LINK_PORTS = ((1, 3), (2, 1))
BRIDGED = ("h1-eth0", "h1-eth1")


class BehindLineTopo(Topo):
    def build(self):
        s1, s2, s3 = (self.addSwitch(f"s{n}") for n in (1, 2, 3))
        h1 = self.addHost("h1", ip="10.0.0.1/24")
        self.addLink(h1, s1)                                    # s1:1, h1-eth0
        self.addLink(self.addHost("h2", ip="10.0.0.2/24"), s1)  # s1:2
        self.addLink(s1, s2)                                    # s1:3 - s2:1
        self.addLink(self.addHost("h3", ip="10.0.0.3/24"), s2)  # s2:2
        self.addLink(s3, h1)                                    # s3:1, h1-eth1
        self.addLink(s3, h1)                                    # s3:2, h1-eth2


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(BehindLineTopo(), expected_links=2)


@pytest.fixture(autouse=True)
def no_controller_errors(lab):
    yield
    assert lab.log_problems() == [], "the controller logged errors"


def metrics(lab, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{lab.controller.metrics_address}/metrics",
                                  timeout=5).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        rf'^{name}\{{kind="([^"]+)"\}} (\S+)$', text, re.M)}


def links(lab) -> set[tuple[int, int, int, int]]:
    return {(link.src_datapath_id, link.src_port, link.dst_datapath_id, link.dst_port)
            for link in lab.stub.GetTopology(pb.GetTopologyRequest()).links}


def link_resets(interface: str) -> int:
    """How many times Open vSwitch saw the port's carrier change."""
    return int(subprocess.run(["ovs-vsctl", "get", "Interface", interface, "link_resets"],
                              capture_output=True, text=True, check=True).stdout.strip())


def lldp_frames(pcap: pathlib.Path) -> list[tuple[float, int]]:
    """(time, port id) of each LLDP frame in a capture (ANY_PORT: a sweep)."""
    data = pcap.read_bytes()
    frames, at = [], 24  # past the global header
    while at + 16 <= len(data):
        seconds, micros, length = struct.unpack_from("<III", data, at)
        frame = data[at + 16:at + 16 + length]
        at += 16 + length
        # the chassis id TLV at 14, the port id TLV after it: subtype, 4 bytes
        chassis = struct.unpack_from("!H", frame, 14)[0] & 0x1FF
        port = struct.unpack_from("!I", frame, 14 + 2 + chassis + 3)[0]
        frames.append((seconds + micros / 1e6, port))
    return frames


def test_a_settled_line_is_probed_rarely_and_a_switch_behind_it_is_found_in_time(lab):
    h1 = lab.host("h1")
    # Nothing that came up stays NEW past NEW_SECONDS: then every port is a
    # link's or settled.
    harness.wait_until(lambda: metrics(lab, "openflow_lldp_ports").get("new") == 0,
                       NEW_SECONDS + 15, "every port settled or a link's")
    assert metrics(lab, "openflow_lldp_ports") == {"link": 2, "new": 0, "settled": 5}

    # Rarely: what h1's line receives in two settled periods, against what
    # a link's port is sent meanwhile.
    capture = Capture(h1, "ether proto 0x88cc", "probing-line")
    before = metrics(lab, "openflow_lldp_probes_total")
    time.sleep(2 * SETTLED_PERIOD)
    after = metrics(lab, "openflow_lldp_probes_total")
    at_line = capture.stop()
    per_link_port = (after["link"] - before.get("link", 0)) / len(LINK_PORTS)
    print(f"in {2 * SETTLED_PERIOD:.0f} s: h1's line received {len(at_line)} LLDP frames, "
          f"each link port was sent {per_link_port:.0f}")
    assert 1 <= len(at_line) <= 3
    assert per_link_port >= 0.9 * 2 * SETTLED_PERIOD
    assert after.get("new", 0) == before.get("new", 0)  # nothing probed on its own

    # Plug s3 in behind h1's line: h1 bridges two of its interfaces (LLDP
    # passes: group_fwd_mask), silently (no address, no IPv6), and no
    # switch port changes state.
    resets = {name: link_resets(name) for name in ("s1-eth1", "s3-eth1")}
    for intf in ("h1-eth0", "h1-eth1", "h1-eth2"):
        h1.cmd(f"ip addr flush dev {intf}; sysctl -qw net.ipv6.conf.{intf}.disable_ipv6=1")
    h1.cmd("ip link add br0 type bridge group_fwd_mask 0x4000 stp_state 0 && "
           "sysctl -qw net.ipv6.conf.br0.disable_ipv6=1")
    # What crosses the bridge: what leaves each bridged interface (before
    # the bridge they send nothing).
    crossing = [Capture(h1, "ether proto 0x88cc", f"probing-{intf}", intf=intf,
                        direction="out") for intf in BRIDGED]
    try:
        h1.cmd("ip link set br0 up && "
               + " && ".join(f"ip link set {intf} master br0" for intf in BRIDGED))
        plugged = time.monotonic()
        wanted = {(*LINE, *BEHIND), (*BEHIND, *LINE)}
        harness.wait_until(lambda: wanted <= links(lab), SETTLED_PERIOD + 10,
                           "the link through h1's bridge")
        took = time.monotonic() - plugged
    finally:
        for capture in crossing:
            capture.stop()
    print(f"the switch behind h1's line found {took:.1f} s after it was plugged in")
    assert took <= SETTLED_PERIOD + 3
    assert {name: link_resets(name) for name in resets} == resets
    # The first of the controller's frames to cross was a sweep: found by
    # the rare probing, not by a port coming up.
    crossed = sorted(frame for capture in crossing
                     for frame in lldp_frames(pathlib.Path(capture.path)))
    assert crossed and crossed[0][1] == ANY_PORT, crossed
    # No uplink is a subscriber's any more: h1 is forgotten there.
    assert "10.0.0.1" not in {h.ip for h in lab.stub.GetTopology(
        pb.GetTopologyRequest()).hosts}
