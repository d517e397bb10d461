"""The probes built from an enforcement's own rules do what they are for,
shown on the simulated switch (tests.flowsim) holding the data plane, the
catch rules and the enforcement: a probe that must be stopped is dropped by
the very rule it was built from; one that must pass comes back to the
controller through a catch rule (and reaches no port); and a probe that a
higher-priority allow rule of someone else's lets through comes back."""
import ipaddress

import pytest

from controller.openflow import probeframes
from controller.openflow.dataplane import PRIORITY_PROBE_CATCH
from enforcement.domain import pipeline
from enforcement.domain.flows import FlowRule, GotoTable
from enforcement.domain.model import Violation
from enforcement.domain.planner import Context, Target, plan
from enforcement.domain.probes import PASS, PROBE_MAC, STOP, Subject, covers, probes_for
from enforcement.domain.routing import route
from tests.flowsim import simulate
from tests.planning import H1, POLICY, VIEW, step, switch

CONTEXT = Context(POLICY.assets, POLICY.quarantine_vlan,
                  {ip: route(VIEW, 1, ip) for ip in ("10.0.0.250", "10.0.0.251")})
SUBJECT = Subject(H1.mac, H1.port, "10.0.0.1", ("fe80::1", "2001:db8::1"))
TARGET = Target(H1, ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Network("10.0.0.1"),
                (ipaddress.IPv6Network("fe80::1/128"), ipaddress.IPv6Network("2001:db8::1/128")))


def planned(violation):
    return plan(step(violation), TARGET, CONTEXT, pipeline.enforcement_cookie(7), 7)


def fate(rules, probe):
    packet = dict(probe.fields)
    if probe.in_port is not None:
        packet["in_port"] = probe.in_port
    else:
        packet["in_port"] = 0xFFFFFFFD  # OFPP_CONTROLLER
    return simulate(rules, 1, packet)


@pytest.mark.parametrize("violation", [
    Violation.SPAM, Violation.OPEN_RELAY, Violation.MAIL_POLLING, Violation.SPOOFING,
    Violation.PING_FLOOD, Violation.PORT_SCAN, Violation.ILLEGAL_USE, Violation.MALWARE])
def test_each_probe_meets_the_fate_it_expects_and_none_reaches_a_port(violation):
    enforcement = planned(violation)
    rules = switch(enforcement)
    probes = probes_for((r for r in enforcement.rules if r.dpid == 1), SUBJECT)
    assert probes, violation
    assert any(p.expect == STOP for p in probes) or any(p.rule for p in probes)
    for probe in probes:
        verdict = fate(rules, probe)
        assert verdict.outcome != "output", (probe.why, verdict)   # no host ever gets one
        if probe.expect == STOP:
            assert verdict.outcome == "dropped" and verdict.rule == probe.rule, (probe.why,
                                                                                verdict)
        else:
            assert verdict.outcome == "controller", (probe.why, verdict)
            assert verdict.rule.priority == PRIORITY_PROBE_CATCH, (probe.why, verdict)
            if probe.rule is not None:   # its rule took it on the way
                assert covers(probe.rule.match, {**dict(probe.fields),
                                                 "in_port": probe.in_port}), probe.why


def test_a_port_25_block_is_probed_in_both_families_and_for_narrowness():
    probes = probes_for(planned(Violation.SPAM).rules, SUBJECT)
    stops = sorted(p.why for p in probes if p.expect == STOP)
    passes = sorted(p.why for p in probes if p.expect == PASS)
    assert stops == ["TCP 25 from the subscriber", "TCP 25 over IPv6 from the subscriber"]
    assert passes == ["its other traffic: TCP 80 from the subscriber",
                      "its other traffic: TCP 80 over IPv6 from the subscriber"]
    assert all(p.field("eth_dst") == PROBE_MAC for p in probes)


def test_a_cutoff_is_probed_both_ways():
    probes = probes_for(planned(Violation.ILLEGAL_USE).rules, SUBJECT)
    assert {p.why for p in probes} == {"TCP 80 from the subscriber",
                                       "TCP 80 toward the subscriber"}
    toward = next(p for p in probes if p.in_port is None)
    assert toward.field("eth_src") == PROBE_MAC and toward.field("eth_dst") == SUBJECT.mac


def test_a_higher_priority_allow_of_someone_else_lets_the_stop_probe_through():
    enforcement = planned(Violation.SPAM)
    foreign = FlowRule(1, pipeline.TABLE_ENFORCE, 3500, 0x1234,
                       (("in_port", 1), ("eth_type", 0x0800), ("ip_proto", 6), ("tcp_dst", 25)),
                       (GotoTable(pipeline.TABLE_METER),))
    rules = [*switch(enforcement), foreign]
    v4 = next(p for p in probes_for(enforcement.rules, SUBJECT)
              if p.expect == STOP and p.field("eth_type") == 0x0800)
    verdict = fate(rules, v4)
    assert verdict.outcome == "controller"        # it came back: the proof fails


def test_a_rule_toward_a_host_elsewhere_or_with_a_vlan_gets_no_probe():
    tagged = FlowRule(1, pipeline.TABLE_ENFORCE, 3000, 1, (("in_port", 1), ("vlan_vid", 4100)))
    elsewhere = FlowRule(1, pipeline.TABLE_ENFORCE, 3000, 1, (("in_port", 9),))
    assert probes_for([tagged, elsewhere], SUBJECT) == ()


def test_each_frame_carries_its_nonce_and_matches_its_fields():
    from os_ken.lib.packet import packet as oskpacket
    for violation in (Violation.SPAM, Violation.SPOOFING, Violation.PING_FLOOD):
        for n, probe in enumerate(probes_for(planned(violation).rules, SUBJECT)):
            data = probeframes.frame(probe, 1000 + n)
            assert probeframes.is_probe(data)
            assert probeframes.nonce_of(data) == 1000 + n, probe.why
            parsed = oskpacket.Packet(data)
            assert parsed.protocols[0].ethertype == probe.field("eth_type")
    assert probeframes.nonce_of(b"\x00" * 60) is None
