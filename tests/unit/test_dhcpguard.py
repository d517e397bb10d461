"""DHCP snooping in the data plane and the controller: trusted ports are
configured (controller/process/config.py), their server replies copied and every
other access port's dropped (controller/openflow/dhcpguard.py, through a simulated
switch), and the copies become bindings (controller/topology/dhcp/snooping.py)."""
import logging
import types

import pytest

from controller.openflow import compiler, dhcpguard
from controller.openflow.dataplane import Budgets, Ports, host_rules, learn_meter, switch_rules
from controller.process import config
from controller.topology.dhcp.bindings import Binding, BindingTable, Release
from controller.topology.dhcp.snooping import Snooping
from enforcement.domain.model import HostView
from tests.flowsim import simulate
from tests.frames import CLIENT, NAK, v4_frame

BROADCAST = "ff:ff:ff:ff:ff:ff"
H1 = HostView("00:00:00:00:00:01", "10.0.0.1", 1, 1)     # a subscriber
H2 = HostView("00:00:00:00:00:02", "10.0.0.2", 1, 2)     # a subscriber, rogue server
SERVER = HostView("00:00:00:00:00:fd", "10.0.0.253", 1, 3)
UPLINK, SETTLING = 4, 6
PORTS = Ports(access=frozenset({1, 2, 3}), tree=frozenset({UPLINK}))


def switch(ports=PORTS, trusted=frozenset({3}), hosts=(H1, H2, SERVER)):
    rules, _ = switch_rules(1, ports, Budgets(), trusted)
    for host in hosts:
        rules += host_rules(1, host, host.port, host.port in ports.access)
    return rules


def udp4(in_port, src, sport, dport, dst=BROADCAST):
    return {"in_port": in_port, "eth_src": src, "eth_dst": dst, "eth_type": 0x0800,
            "ipv4_src": "10.0.0.253", "ip_proto": 17, "udp_src": sport, "udp_dst": dport}


def udp6(in_port, src, sport, dport, dst="33:33:00:01:00:02"):
    return {"in_port": in_port, "eth_src": src, "eth_dst": dst, "eth_type": 0x86DD,
            "ipv6_src": "fe80::1", "ip_proto": 17, "udp_src": sport, "udp_dst": dport}


def test_the_trusted_servers_replies_are_copied_and_forwarded_unmetered_by_its_port():
    rules = switch()
    to_client = simulate(rules, 1, udp4(3, SERVER.mac, 67, 68, dst=H1.mac))
    assert (to_client.ports, to_client.copied) == ((1,), True)
    assert learn_meter(3) not in to_client.meters
    broadcast = simulate(rules, 1, udp4(3, SERVER.mac, 67, 68))
    assert broadcast.ports == (1, 2, UPLINK) and broadcast.copied
    v6 = simulate(rules, 1, udp6(3, SERVER.mac, 547, 546, dst=H1.mac))
    assert (v6.ports, v6.copied) == ((1,), True)


def test_a_rogue_server_on_a_subscriber_port_reaches_nobody_and_is_counted():
    rules = switch()
    for packet in (udp4(2, H2.mac, 67, 68), udp4(2, H2.mac, 67, 68, dst=H1.mac),
                   udp4(2, H2.mac, 67, 67), udp6(2, H2.mac, 547, 546),
                   udp4(2, "02:99:99:99:99:99", 67, 68)):  # a source never seen
        verdict = simulate(rules, 1, packet)
        assert verdict.outcome == "dropped" and not verdict.copied, packet
        assert dhcpguard.is_drop(verdict.rule)  # its own rule: its counters move


def test_subscribers_still_ask_for_leases_and_other_udp_flows():
    rules = switch()
    discover = simulate(rules, 1, udp4(1, H1.mac, 68, 67))
    assert discover.ports == (2, 3, UPLINK)
    solicit = simulate(rules, 1, udp6(1, H1.mac, 546, 547))
    assert solicit.ports == (2, 3, UPLINK)
    dns = simulate(rules, 1, udp4(2, H2.mac, 5353, 53, dst=H1.mac))
    assert dns.ports == (1,)


def test_replies_from_behind_a_link_pass_and_a_settling_port_is_not_judged():
    rules = switch()
    assert simulate(rules, 1, udp4(UPLINK, SERVER.mac, 67, 68, dst=H1.mac)).ports == (1,)
    assert not dhcpguard.is_drop(simulate(rules, 1, udp4(SETTLING, H2.mac, 67, 68)).rule)


def test_without_trusted_ports_every_access_port_drops_server_replies():
    rules = switch(trusted=frozenset())
    for port in (1, 2, 3):
        assert simulate(rules, 1, udp4(port, SERVER.mac, 67, 68)).outcome == "dropped"


def test_a_port_under_a_learning_ban_still_drops_them():
    ports = Ports(access=PORTS.access, tree=PORTS.tree, closed_learning=frozenset({2}))
    verdict = simulate(switch(ports), 1, udp4(2, H2.mac, 67, 68))
    assert dhcpguard.is_drop(verdict.rule)


def test_a_trusted_port_still_settling_is_snooped():
    ports = Ports(access=frozenset({1, 2}), tree=PORTS.tree)
    verdict = simulate(switch(ports, hosts=(H1, H2)), 1, udp4(3, SERVER.mac, 67, 68,
                                                               dst=H1.mac))
    assert verdict.copied and verdict.ports == (1,)


def test_the_rules_compile_and_read_back_as_themselves():
    """A restarted controller reads them back (controller/openflow/fabric.py adopts
    what a switch holds): the match through its wire form, as a switch
    reports it."""
    from os_ken.ofproto import ofproto_v1_3_parser as parser
    for rule in dhcpguard.dhcp_rules(1, frozenset({1, 2}), frozenset({2})):
        mod = compiler.flow_add(rule)
        wire = bytearray()
        mod.match.serialize(wire, 0)
        stats = types.SimpleNamespace(table_id=mod.table_id, priority=mod.priority,
                                      cookie=mod.cookie, match=parser.OFPMatch.parser(wire, 0),
                                      instructions=mod.instructions)
        assert compiler.rule_from_stats(1, stats) == rule


# ---- configuration -------------------------------------------------------------

def test_trusted_ports_are_hex_datapath_ids_and_port_numbers():
    ports, errors = dhcpguard.parse_trusted("0000000000000009:6, a:1,0x1F:2")
    assert errors == [] and ports == {(9, 6), (10, 1), (31, 2)}
    assert dhcpguard.parse_trusted(None) == (frozenset(), [])
    assert dhcpguard.on_switch(ports, 10) == {1}


@pytest.mark.parametrize("text, wrong", [
    ("9", "give DPID:PORT"), ("9:0", "not an OpenFlow port"), ("9:x", "not an OpenFlow port"),
    ("g:1", "not a datapath id"), ("0:1", "not a datapath id"), (":1", "not a datapath id"),
    ("1" * 17 + ":1", "not a datapath id"), ("9:1,,9:2", "an empty item"),
    ("9:4294967041", "not an OpenFlow port"),
])
def test_bad_trusted_ports_are_each_named(text, wrong):
    _, errors = dhcpguard.parse_trusted(text)
    assert len(errors) == 1 and wrong in errors[0]


def test_the_setting_reaches_the_parsed_settings_from_a_flag_or_the_file(tmp_path):
    args, errors = config.load(["--dhcp-trusted", "9:6"], {})
    assert errors == [] and args.dhcp_trusted_ports == {(9, 6)}
    path = tmp_path / "controller.toml"
    path.write_text('[identity]\ndhcp_trusted = "9:6,nine:1"\n')
    args, errors = config.load(["--config", str(path)], {})
    assert errors == [(f"{path}:2: identity.dhcp_trusted 'nine:1': 'nine' is not a "
                       "datapath id (1 to 16 hex digits)")]
    args, errors = config.load([], {})
    assert errors == [] and args.dhcp_trusted_ports == frozenset()


# ---- the controller's side -----------------------------------------------------

class Recorder:
    def __init__(self, trusted=frozenset({(9, 6)}), leading=True):
        self.changes, self.events, self.now = [], [], 100.0
        self.table = BindingTable(lambda: 5000.0)
        self.snooping = Snooping(trusted, on_change=self.changes.append,
                                 on_untrusted=self.events.append, leading=lambda: leading,
                                 subscriber_at=lambda dpid, port: "10.0.0.2" if port == 2
                                 else None, table=self.table, monotonic=lambda: self.now)


def test_a_reply_from_a_trusted_port_makes_a_binding_and_tells_it(caplog):
    seen = Recorder()
    with caplog.at_level(logging.INFO, logger="controller.topology.dhcp.snooping"):
        assert seen.snooping.handle(9, 6, v4_frame())
    assert seen.changes == [Binding(CLIENT, "10.0.0.101", 5120.0)]
    assert "dhcp binding: 02:00:00:00:00:01 10.0.0.101, lease ends" in caplog.text
    assert seen.snooping.handle(9, 6, v4_frame(NAK, yiaddr="0.0.0.0", lease=None))
    assert seen.changes[-1] == Release(Binding(CLIENT, "10.0.0.101", 5120.0), "nak")
    assert seen.events == []


def test_other_frames_are_left_to_learning():
    seen = Recorder()
    assert not seen.snooping.handle(9, 6, v4_frame(sport=68, dport=67, op=1))
    assert not seen.snooping.handle(9, 6, b"\xff" * 60)
    assert seen.changes == [] and seen.events == []


def test_a_reply_from_an_untrusted_port_binds_nothing_and_is_reported_once_a_while():
    seen = Recorder()
    assert seen.snooping.handle(2, 2, v4_frame())
    assert seen.changes == [] and len(seen.table) == 0
    [event] = seen.events
    assert (event.kind, event.dpid, event.port, event.mac, event.claimed) == (
        "dhcp_untrusted", 2, 2, "02:00:00:00:00:fd", "10.0.0.101")
    assert event.subscriber_ip == "10.0.0.2"
    assert "not declared trusted" in event.text()
    seen.snooping.handle(2, 2, v4_frame())
    seen.now += 11
    seen.snooping.handle(2, 2, v4_frame(NAK, yiaddr="0.0.0.0", lease=None))
    assert [e.claimed for e in seen.events] == ["10.0.0.101", "DHCP server"]
    assert seen.snooping.untrusted_replies == 3


def test_a_follower_keeps_bindings_but_does_not_report():
    seen = Recorder(leading=False)
    seen.snooping.handle(2, 2, v4_frame())
    seen.snooping.handle(9, 6, v4_frame())
    assert seen.events == [] and len(seen.changes) == 1


def test_ended_leases_are_told_and_a_failing_hook_stops_nothing():
    clock = [0.0]
    changes = []

    def hook(change):
        changes.append(change)
        raise RuntimeError("the lead's bug")
    snooping = Snooping(frozenset({(9, 6)}), on_change=hook, on_untrusted=lambda e: None,
                        table=BindingTable(lambda: clock[0]))
    snooping.handle(9, 6, v4_frame(lease=30))
    clock[0] = 30.0
    assert snooping.expire() == [Release(Binding(CLIENT, "10.0.0.101", 30.0), "expired")]
    assert [type(c).__name__ for c in changes] == ["Binding", "Release"]


def test_the_packet_in_worker_hands_every_copy_to_snooping_after_learning():
    from controller.osken.learning import Learning
    order = []
    learned = types.SimpleNamespace(macs=(), alarms=(), follow=(), release=False, refused=())
    snooping = Snooping(frozenset({(9, 6)}), on_change=lambda c: order.append(("bound", c)),
                        on_untrusted=lambda e: None, table=BindingTable(lambda: 0.0))
    net = types.SimpleNamespace(learn=lambda *args: order.append("learned") or learned)
    learning = Learning(types.SimpleNamespace(is_enforced=lambda mac: False), net,
                        fabric=None, leading=lambda: True, is_connected=lambda dpid: True,
                        snooping=snooping)
    learning.learn(9, 6, v4_frame())
    assert order == ["learned", ("bound", Binding(CLIENT, "10.0.0.101", 120.0))]
