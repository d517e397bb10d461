from controller.openflow import compiler
from enforcement.domain import pipeline
from enforcement.domain.desired import SwitchState, diff
from enforcement.domain.flows import ApplyMeter, FlowRule, GotoTable, MeterSpec

A = pipeline.enforcement_cookie(1)
B = pipeline.enforcement_cookie(2)
BLOCK = (("in_port", 1), ("eth_type", 0x0800), ("ipv4_src", "10.0.0.1"),
         ("ip_proto", 6), ("tcp_dst", 25))


def block(cookie):
    return FlowRule(1, 0, 3000, cookie, BLOCK)


def metered(cookie, meter_id):
    return FlowRule(1, 1, 1000, cookie, (("in_port", 1),),
                    (ApplyMeter(meter_id), GotoTable(2)))


def test_only_the_difference_is_pushed_in_a_safe_order():
    meter = MeterSpec(1, 5, "kbps", 1000, 100)
    before = SwitchState.of([block(A)], [])
    after = SwitchState.of([block(A), metered(B, 5)], [meter])
    change = diff(before, after)
    assert change.meters_to_add == (meter,)
    assert change.rules_to_add == (metered(B, 5),)
    assert change.rules_to_delete == () and change.meters_to_delete == ()
    back = diff(after, before)
    assert back.rules_to_delete == (metered(B, 5),) and back.meters_to_delete == (meter,)
    assert diff(after, after).empty


def test_two_enforcements_wanting_the_same_flow_share_it_until_both_are_gone():
    both = SwitchState.of([block(A), block(B)], [])
    assert list(both.rules.values()) == [block(A)]  # the older one's rule is kept
    only_b = SwitchState.of([block(B)], [])
    change = diff(both, only_b)
    # A lifted: the flow stays, re-stamped with B's cookie, never deleted.
    assert change.rules_to_delete == () and change.rules_to_add == (block(B),)
    assert diff(only_b, SwitchState.empty()).rules_to_delete == (block(B),)


def test_a_changed_meter_is_modified_not_re_added():
    old = SwitchState.of([], [MeterSpec(1, 5, "kbps", 1000, 100)])
    new = SwitchState.of([], [MeterSpec(1, 5, "kbps", 2000, 100)])
    change = diff(old, new)
    assert change.meters_to_modify == (MeterSpec(1, 5, "kbps", 2000, 100),)
    assert change.meters_to_add == ()


def test_the_index_agrees_with_recomputing_the_whole_state_after_any_sequence():
    """DesiredIndex (kept per rule key as enforcements come and go) against
    SwitchState.of over every live enforcement, oldest first: 2,000 random
    adds and removes of enforcements that share flows and meters."""
    import random

    from enforcement.domain.desired import DesiredIndex, apply_change, diff_part
    rng = random.Random(7)
    index, live, held = DesiredIndex(), {}, SwitchState.empty()
    for step in range(2000):
        if live and rng.random() < 0.45:
            serial = rng.choice(sorted(live))
            rules, meters = live.pop(serial)
            index.remove((serial, serial), rules, meters)
        else:
            serial = step + 1
            cookie = pipeline.enforcement_cookie(serial)
            match = (("in_port", 1), ("tcp_dst", rng.randint(1, 30)))
            rules = [FlowRule(1, 0, 3000, cookie, match)]
            meters = []
            if rng.random() < 0.3:
                meters = [MeterSpec(1, serial, "kbps", rng.choice((100, 200)), 10)]
                rules.append(metered(cookie, serial))
            live[serial] = (rules, meters)
            index.add((serial, serial), rules, meters)
        expected = SwitchState.of([r for s in sorted(live) for r in live[s][0]],
                                  [m for s in sorted(live) for m in live[s][1]])
        assert index.state(1) == expected
        # The partial diff over what this step touched brings the switch there.
        keys = {r.key for r in rules}
        rules_part, meters_part = index.part(1, keys, {m.meter_id for m in meters})
        apply_change(held, diff_part(held, rules_part, meters_part))
        assert held == expected
    assert index.counts(1) == (len(expected.rules), len(expected.meters))


def test_an_audit_reads_everything_unless_counts_agree_and_there_is_much():
    from enforcement.domain.desired import audit_parts
    assert audit_parts(100, 100, 8192) == 1
    assert audit_parts(8192, 8192, 8192) == 1
    assert audit_parts(8193, 8193, 8192) == 2
    assert audit_parts(100_000, 100_000, 8192) == 16   # 6,250 flows per audit
    assert audit_parts(100_000, 99_999, 8192) == 1     # one deleted: read all
    assert audit_parts(0, 3, 8192) == 1


def test_cookie_parts_select_what_their_requests_select():
    """The part of a flow, by cookie modulo parts, is what the switch returns
    for a flow stats request of that part (its cookie and mask)."""
    for parts in (1, 2, 16):
        for part in range(parts):
            request = compiler.flow_stats_request(pipeline.NS_ENFORCE, part, parts)
            for serial in range(1, 70):
                cookie = pipeline.enforcement_cookie(serial)
                selected = cookie & request.cookie_mask == request.cookie & request.cookie_mask
                assert selected == (cookie % parts == part)
    import pytest
    with pytest.raises(ValueError):
        compiler.flow_stats_request(pipeline.NS_ENFORCE, 0, 3)


def test_an_audit_read_beside_decisions_reports_only_real_drift():
    from enforcement.domain.desired import without_in_flight
    a, b, c, d = (FlowRule(1, 0, 3000, n, (("in_port", n),)) for n in (1, 2, 3, 4))
    before = SwitchState({r.key: r for r in (a, b, d)}, {})
    # Read while a decision removed b and added c; by hand, someone deleted
    # a and altered d before the read.
    altered = FlowRule(1, 0, 3000, 4, (("in_port", 4),), (GotoTable(1),))
    seen = SwitchState({b.key: b, d.key: altered}, {})
    now = SwitchState({r.key: r for r in (a, c, d)}, {})
    change = without_in_flight(diff(seen, now), seen, before)
    assert set(change.rules_to_add) == {a, d}      # the drift, repaired
    assert change.rules_to_delete == ()            # b: the decision's own delete
    assert c not in change.rules_to_add            # c: the decision's own add
