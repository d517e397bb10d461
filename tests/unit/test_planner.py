import ipaddress

import pytest

from controller.forwarding import base_rules, learned_rule
from enforcement import pipeline
from enforcement.errors import Unimplemented
from enforcement.model import ActionKind, Decision, Location, Subscriber, Violation
from enforcement.planner import plan
from flowsim import simulate

H1 = Location(dpid=1, port=1, mac="00:00:00:00:00:01")
COOKIE = pipeline.enforcement_cookie(7)


def decision(violation=Violation.SPAM, ip="10.0.0.1"):
    return Decision("req", "case", Subscriber(ipaddress.IPv4Address(ip)), violation, "")


def tcp(src, dst, dport, in_port):
    return {"in_port": in_port, "eth_type": 0x0800, "ipv4_src": src,
            "ipv4_dst": dst, "ip_proto": 6, "tcp_dst": dport}


def switch_one(extra=()):
    """s1 after learning: h1 on port 1, h2 on port 2, uplink on port 3."""
    return [*base_rules(1), learned_rule(1, "00:00:00:00:00:01", 1),
            learned_rule(1, "00:00:00:00:00:02", 2), *extra]


def test_spam_blocks_only_smtp_from_the_subscriber_port():
    action, rules = plan(decision(), H1, COOKIE)
    assert action.kind is ActionKind.BLOCK
    assert len(rules) == 1
    rule = rules[0]
    assert (rule.dpid, rule.table_id, rule.cookie) == (1, pipeline.TABLE_ENFORCE, COOKIE)
    assert dict(rule.match) == {"in_port": 1, "eth_type": 0x0800, "ipv4_src": "10.0.0.1",
                                "ip_proto": 6, "tcp_dst": 25}
    assert rule.instructions == ()  # drop
    assert "587" in action.description


@pytest.mark.parametrize("packet, blocked", [
    (tcp("10.0.0.1", "10.0.0.3", 25, in_port=1), True),
    (tcp("10.0.0.1", "10.0.0.3", 587, in_port=1), False),
    (tcp("10.0.0.1", "10.0.0.3", 465, in_port=1), False),
    (tcp("10.0.0.1", "10.0.0.3", 80, in_port=1), False),
    # another subscriber on the same switch
    (tcp("10.0.0.2", "10.0.0.3", 25, in_port=2), False),
    # mail *to* the subscriber is not what spam enforcement stops
    (tcp("10.0.0.3", "10.0.0.1", 25, in_port=3), False),
    (dict(in_port=1, eth_type=0x0800, ipv4_src="10.0.0.1", ip_proto=1), False),
])
def test_simulated_pipeline_drops_exactly_the_offending_traffic(packet, blocked):
    _, rules = plan(decision(), H1, COOKIE)
    packet = {**packet, "eth_dst": "00:00:00:00:00:02"}
    verdict = simulate(switch_one(rules), 1, packet)
    assert (verdict.outcome == "dropped") is blocked
    if not blocked:
        assert verdict.outcome == "output"
    assert simulate(switch_one(), 1, packet).outcome == "output"  # before: forwarded


def test_enforcement_cookie_is_in_its_own_namespace():
    assert pipeline.namespace_of(COOKIE) == pipeline.NS_ENFORCE
    assert pipeline.namespace_of(pipeline.COOKIE_BASE) == pipeline.NS_BASE
    with pytest.raises(ValueError):
        pipeline.enforcement_cookie(0)


def test_violation_without_an_action_yet_says_so():
    with pytest.raises(Unimplemented, match="SPAM"):
        plan(decision(Violation.MALWARE), H1, COOKIE)
