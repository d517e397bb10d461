"""The scale harness's pure parts (testbed/scale/): the tree as data, its
OVSDB operations, the pacing order of hosts, the frames hosts send, and the
parsers of what Open vSwitch and the controller report. The harness itself
runs against real Open vSwitch in tests/e2e/test_scale_harness.py."""
import ipaddress
import os
import subprocess
import sys
import time

import pytest
from os_ken.lib import pcaplib
from os_ken.lib.packet import arp, dhcp, ethernet, icmpv6, packet

from controller.topology.dhcp import replies
from testbed.scale import bridges, frames, hosts, lab, measure, tree


def test_a_tree_has_its_tiers_links_and_one_subscriber_per_line():
    t = tree.build(50, 2000)
    sizes = {tier: len(t.tier(tier)) for tier in tree.TIERS}
    assert sizes == {"gateway": 1, "aggregation": 6, "access": 43}
    assert t.links == 49  # a tree: one link fewer than switches
    assert len(t.subscribers) == 2000
    per_access = [sum(1 for h in t.subscribers if h.switch == s.name) for s in t.tier("access")]
    assert min(per_access) >= 46 and max(per_access) <= 47
    # Every subscriber on a line of its own, every netdev name unique.
    assert len({(h.dpid, h.port) for h in t.subscribers}) == 2000
    assert len({p.name for p in t.ports}) == len(t.ports)
    assert len({(p.switch, p.number) for p in t.ports}) == len(t.ports)


def test_addresses_and_ids_are_fixed_and_say_where_a_switch_is():
    t = tree.build(10, 600)
    assert t == tree.build(10, 600)
    for switch in t.switches:
        assert tree.tier_of_dpid(switch.dpid) == switch.tier
    ips = [ipaddress.IPv4Address(h.ip) for h in t.subscribers]
    assert len(set(ips)) == 600
    assert all(int(ip) & 0xFF not in (0, 255) for ip in ips)
    assert len({h.mac for h in t.subscribers} | {h.mac for h in t.services}) == 606
    assert t.service("inet").ip == "10.0.0.200" and t.service("dhcp").ip == "10.0.0.253"
    dhcp_port = t.service("dhcp")
    assert t.dhcp_trusted() == f"{dhcp_port.dpid:016x}:{dhcp_port.port}"
    assert t.deepest().switch == t.tier("access")[-1].name


def test_every_link_is_a_pair_of_patch_ports_naming_each_other():
    t = tree.build(12, 30)
    by_name = {p.name: p for p in t.ports}
    for port in t.ports:
        if port.peer:
            assert by_name[port.peer].peer == port.name
            assert by_name[port.peer].switch != port.switch
    uplinks = [p for p in t.ports if p.peer and p.number == tree.UPLINK]
    assert len(uplinks) == len(t.switches) - 1  # all but the gateway


def test_too_small_a_tree_is_refused():
    with pytest.raises(ValueError):
        tree.build(2, 10)
    with pytest.raises(ValueError):
        tree.build(3, 0)


def test_counts_by_tier_keep_the_tree_order_and_skip_missing_switches():
    t = tree.build(5, 10)
    counts = {s.dpid: 100 + i for i, s in enumerate(t.switches)}
    del counts[t.switches[-1].dpid]
    assert tree.tier_counts(t, counts) == {"gateway": [100], "aggregation": [101],
                                           "access": [102, 103]}
    assert tree.spread([5, 1, 3]) == "1 / 3 / 5"
    assert tree.spread([]) == "-"


def test_the_ovsdb_operations_make_each_switch_a_secure_openflow13_dummy_bridge():
    t = tree.build(4, 6)
    ops = bridges.add_switches(t, t.switches[:2], "tcp:127.0.0.1:6653",
                               port_options={"gw.inet": {"tx_pcap": "/x.pcap"}})
    rows = {op["row"]["name"]: op for op in ops if op["op"] == "insert"
            and op["table"] == "Bridge"}
    assert set(rows) == {"gw", "ag0"}
    gw = rows["gw"]["row"]
    assert gw["fail_mode"] == "secure" and gw["datapath_type"] == "dummy"
    assert gw["protocols"] == ["set", ["OpenFlow13"]]
    assert ["datapath-id", f"{t.gateway.dpid:016x}"] in gw["other_config"][1]
    interfaces = {op["row"]["name"]: op["row"] for op in ops if op["table"] == "Interface"}
    assert interfaces["gw.inet"]["options"] == ["map", [["tx_pcap", "/x.pcap"]]]
    assert interfaces["gw.ag0"]["type"] == "patch"
    assert interfaces["gw.ag0"]["options"] == ["map", [["peer", "ag0.gw"]]]
    assert interfaces["gw"]["type"] == "internal"  # the bridge's local port
    controllers = [op["row"] for op in ops if op["table"] == "Controller"]
    assert controllers[0] == {"target": "tcp:127.0.0.1:6653", "controller_rate_limit": 1000,
                              "controller_burst_limit": 250}
    (mutate,) = [op for op in ops if op["op"] == "mutate"]
    assert len(mutate["mutations"][0][2][1]) == 2
    names = [op["uuid-name"] for op in ops if "uuid-name" in op]
    assert len(names) == len(set(names))


def test_hosts_are_announced_switch_by_switch_in_turn():
    t = tree.build(5, 9)
    order = hosts.interleaved(t.subscribers)
    assert sorted(order, key=lambda h: h.name) == sorted(t.subscribers, key=lambda h: h.name)
    first_round = order[:len(t.tier("access"))]
    assert len({h.switch for h in first_round}) == len(t.tier("access"))


def test_a_host_announces_itself_to_the_router_without_a_broadcast():
    t = tree.build(3, 2)
    host, router = t.subscribers[0], t.service("router")
    pkt = packet.Packet(frames.arp_announce(host, router))
    eth, request = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(arp.arp)
    assert eth.dst == router.mac and request.src_ip == host.ip and request.src_mac == host.mac
    assert packet.Packet(frames.arp_announce(router)).get_protocol(ethernet.ethernet).dst \
        == frames.BROADCAST
    advert = packet.Packet(frames.neighbour_advert(host, router))
    message = advert.get_protocol(icmpv6.icmpv6)
    assert message.type_ == icmpv6.ND_NEIGHBOR_ADVERT and message.data.dst == host.ipv6
    assert advert.get_protocol(ethernet.ethernet).dst == router.mac


def test_the_dhcp_acknowledgement_is_one_the_controller_reads_as_a_lease():
    t = tree.build(3, 2)
    server, client = t.service("dhcp"), t.subscribers[1]
    data = frames.dhcp_ack(server, client, lease=600)
    reply = replies.parse(data)
    assert reply is not None, "the controller's own parser refused the frame"
    assert (reply.kind, reply.client_mac, reply.server_id) == ("ACK", client.mac, server.ip)
    assert [(lease.ip, lease.seconds) for lease in reply.leases] == [(client.ip, 600)]
    assert packet.Packet(data).get_protocol(dhcp.dhcp).yiaddr == client.ip


def test_a_capture_is_read_as_it_grows_whole_records_only(tmp_path):
    t = tree.build(3, 2)
    host, inet, router = t.subscribers[0], t.service("inet"), t.service("router")
    path = tmp_path / "tx.pcap"
    capture = frames.Capture(path)
    assert capture.read() == []
    stream = open(path, "wb")  # noqa: SIM115 (written in steps below)
    writer = pcaplib.Writer(stream)
    writer.write_pkt(frames.tcp_syn(host, inet, 80, 50001))
    writer.write_pkt(frames.arp_announce(host, router))
    stream.flush()
    assert [frames.tcp_probe(f) for f in capture.read()] == [(host.ip, 50001, 80), None]
    advert = frames.neighbour_advert(host, router)
    writer.write_pkt(advert)
    stream.flush()
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])  # Open vSwitch still writing the last record
    assert capture.read() == []
    path.write_bytes(whole)
    (data,) = capture.read()
    assert frames.announcement(data) == (host.mac, "nd")
    assert frames.announcement(frames.arp_announce(host, router)) == (host.mac, "arp")
    assert frames.announcement(frames.tcp_syn(host, inet, 25, 1)) is None
    stream.close()


def test_what_open_vswitch_and_the_controller_report_is_parsed():
    coverage = ("ofproto_packet_out   4.0/sec  3.867/sec  0.0644/sec   total: 232\n"
                "rev_flow_table       0.0/sec  0.217/sec  0.0036/sec   total: 13\n")
    assert measure.coverage(coverage, "ofproto_packet_out") == 232
    assert measure.coverage(coverage, "rev_flow_table") == 13
    assert measure.coverage(coverage, "missing") == 0
    assert measure.rules_held("handlers:1 ofconns:2 ports:6 revalidators:1 rules:76") == 76
    rows = [{"status": ["map", [["packet-in-action-bypassed", "7"],
                                ["packet-in-miss-queued", "2"],
                                ["packet-in-action-dropped", "5"], ["state", "ACTIVE"]]]},
            {"status": ["map", []]}]
    assert measure.packet_ins_sent(rows) == 9
    series = {'openflow_packet_ins_total{outcome="handled"}': 5.0,
              'openflow_packet_ins_total{outcome="dropped"}': 2.0,
              "openflow_connected_switches": 3.0}
    assert measure.total(series, "openflow_packet_ins_total") == 7.0
    assert measure.total(series, "openflow_connected_switches") == 3.0


def test_the_budget_stops_a_run_that_is_out_of_time_or_memory():
    measure.Budget(seconds=60).check("fine")
    with pytest.raises(measure.OutOfBudget, match="building: out of time"):
        measure.Budget(seconds=0).check("building")
    with pytest.raises(measure.OutOfBudget, match="over the 0 GiB ceiling"):
        measure.Budget(rss_ceiling=0, pids=lambda: [os.getpid()]).check("hosts")


DPCTL_SHOW = """dummy@ovs-dummy:
  lookups: hit:0 missed:3 lost:0
  flows: 2
  port 0: ovs-dummy (dummy-internal)
    RX packets:0 errors:? dropped:? overruns:? frame:?
    TX packets:0 errors:? dropped:? aborted:? carrier:?
  port 2: ac0p4 (dummy)
    RX packets:20 errors:? dropped:? overruns:? frame:?
    TX packets:3 errors:? dropped:? aborted:? carrier:?
  port 9: gw.inet (dummy: tx_pcap=/tmp/x/inet.pcap)
    RX packets:0 errors:? dropped:? overruns:? frame:?
    TX packets:41 errors:? dropped:? aborted:? carrier:?
"""


def test_every_datapath_ports_tx_counter_is_read_from_one_dpctl_show():
    assert measure.tx_packets(DPCTL_SHOW) == {"ovs-dummy": 0, "ac0p4": 3, "gw.inet": 41}


def test_a_probe_counts_as_stopped_only_if_no_port_sent_half_of_it():
    stray = lab.Egress(20, {"ac0p4": 1, "ac1p2": 2}, 0, "gw.inet")
    assert stray.stopped and not stray.reached_inet_only
    leaked = lab.Egress(20, {"ac0p4": 1, "ac1p2": 10}, 0, "gw.inet")
    assert not leaked.stopped
    seen = lab.Egress(20, {}, 1, "gw.inet")  # a frame in the capture is never stopped
    assert not seen.stopped
    through = lab.Egress(20, {"gw.inet": 20, "ac0p4": 1}, 20, "gw.inet")
    assert through.reached_inet_only and not through.stopped
    flooded = lab.Egress(20, {"gw.inet": 20, "gw.dns": 20}, 20, "gw.inet")
    assert not flooded.reached_inet_only


def test_the_controllers_threads_are_named_by_what_they_run(tmp_path):
    """The start-up hook, in a real interpreter: each thread's native id and
    its target's name reach the map, and /proc's counts are summed by it."""
    threads = tmp_path / "threads.txt"
    script = ("import threading, time\n"
              "def spin(stay=0):\n"
              "    end = time.thread_time() + 0.3\n"
              "    while time.thread_time() < end: pass\n"
              "    time.sleep(stay)\n"
              "t = threading.Thread(target=spin); t.start(); t.join()\n"
              "threading.Thread(target=spin, args=(5,), daemon=True).start()\n"
              "print(threading.get_native_id(), flush=True)\n"
              "time.sleep(5)\n")
    env = {**os.environ, "SCALE_THREAD_MAP": str(threads),
           "PYTHONPATH": str(lab.THREAD_NAMES)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        pid = int(proc.stdout.readline())
        names = measure.thread_names(threads, pid)
        assert sorted(names.values()) == ["MainThread", "spin", "spin"]
        time.sleep(0.5)  # the second spin ends its 0.3 s of CPU
        cpu = measure.thread_cpu(pid, names)
        assert 0.2 <= cpu["spin"] < 0.5  # the first thread ended: only the second counts
    finally:
        proc.kill()
        proc.wait()
