"""The LLDP schedule (controller/topology/lldp/schedule.py): which port is
probed when, under a budget of packet-outs, with simulated time."""
import collections
import itertools

import pytest

from controller.topology.lldp.schedule import (
    LINK_TIMEOUT_MIN,
    NEW_SECONDS,
    SETTLED_PERIOD,
    TICK,
    Cadence,
    Kind,
    Schedule,
)


def run(schedule: Schedule, start: float, seconds: float, tick: float = TICK):
    """take() every tick from start for seconds: [(time, probe)], and the
    notices given."""
    sent, notices = [], []
    steps = round(seconds / tick)
    for step in range(steps):
        now = start + step * tick
        taken = schedule.take(now)
        sent += [(now, probe) for probe in taken.probes]
        if taken.notice:
            notices.append(taken.notice)
    return sent, notices


def probes_of(sent, dpid, port):
    """Times at which (dpid, port) was reached: on its own or by a sweep."""
    return [t for t, p in sent if p.dpid == dpid and port in p.ports]


def gaps(times):
    return [b - a for a, b in itertools.pairwise(times)]


def switch(schedule, dpid, ports, now=0.0):
    for port in ports:
        schedule.port_up(dpid, port, now)


def test_a_new_port_is_reached_at_once_then_every_second_until_it_settles():
    schedule = Schedule()
    schedule.port_up(1, 5, 0.0)
    sent, _ = run(schedule, 0.0, NEW_SECONDS + 2 * SETTLED_PERIOD)
    times = probes_of(sent, 1, 5)
    assert times[0] == 0.0                          # at once
    new = [t for t in times if t < NEW_SECONDS]
    assert 29 <= len(new) <= 31                     # every LINK_PERIOD while NEW
    later = [t for t in times if t > NEW_SECONDS + 1]
    assert 2 <= len(later) <= 3                     # then only its switch's sweeps
    assert gaps(later) == pytest.approx([SETTLED_PERIOD] * (len(later) - 1))
    assert schedule.kind((1, 5), NEW_SECONDS + 1) is Kind.SETTLED


def test_a_switch_that_connects_is_reached_by_one_sweep_then_each_port_on_its_own():
    schedule = Schedule()
    switch(schedule, 1, range(1, 101))
    first = schedule.take(0.0).probes
    assert [(p.ports, p.sweep, p.kind) for p in first] == [
        (tuple(range(1, 101)), True, Kind.NEW)]
    sent, _ = run(schedule, TICK, 1.5)
    # each port once more on its own, half a period to a period and a half
    # later (at its phase: spread over the period)
    assert sorted(p.ports[0] for _, p in sent if not p.sweep) == list(range(1, 101))
    per_tick = collections.Counter(t for t, _ in sent)
    assert max(per_tick.values()) <= 15


def test_settled_ports_cost_one_packet_out_per_switch_per_period():
    """1,000 switches of 100 settled lines and 2 links each, at idle."""
    schedule = Schedule(Cadence(pps=10_000))
    for dpid in range(1, 1001):
        switch(schedule, dpid, range(1, 103))
        schedule.linked(dpid, 101, 0.0)
        schedule.linked(dpid, 102, 0.0)
    _, notices = run(schedule, 0.0, NEW_SECONDS + 1)
    # 102,000 ports new at once want more than 10,000/s for a while
    assert len(notices) == 1 and "links go first" in notices[0]
    start = NEW_SECONDS + SETTLED_PERIOD
    run(schedule, NEW_SECONDS + 1, start - NEW_SECONDS - 1)
    sent, notices = run(schedule, start, 2 * SETTLED_PERIOD)
    kinds = collections.Counter(p.label for _, p in sent)
    # links on their own every second; the rest swept, each switch once a period
    assert kinds == {"link": pytest.approx(2 * 1000 * 2 * SETTLED_PERIOD, rel=0.01),
                     "settled_sweep": 2 * 1000}
    sweeps = [p for _, p in sent if p.sweep]
    assert all(p.ports == tuple(range(1, 101)) for p in sweeps)
    assert not [n for n in notices if "links go first" in n]
    per_second = collections.Counter(int(t) for t, _ in sent)
    wanted = 2000 / 1.0 + 1000 / SETTLED_PERIOD
    assert max(per_second.values()) <= 1.2 * wanted  # spread, not bunched


def test_a_link_port_is_probed_every_second_for_good_and_its_switch_sweeps_the_rest():
    schedule = Schedule()
    switch(schedule, 1, (1, 2, 3))
    schedule.linked(1, 3, 0.0)
    sent, _ = run(schedule, 0.0, 100.0)
    link = [t for t, p in sent if p.ports == (3,)]
    assert len(link) >= 99
    assert gaps(link[1:]) == pytest.approx([1.0] * (len(link) - 2))
    late_sweeps = [p.ports for t, p in sent if p.sweep and t > NEW_SECONDS + 1]
    assert late_sweeps and all(ports == (1, 2) for ports in late_sweeps)


def test_a_port_that_goes_down_is_not_probed_and_comes_back_new():
    schedule = Schedule()
    switch(schedule, 1, (1, 2))
    schedule.linked(1, 2, 0.0)
    run(schedule, 0.0, 5.0)
    schedule.port_down(1, 2)
    sent, _ = run(schedule, 5.0, 60.0)
    assert probes_of(sent, 1, 2) == []
    schedule.port_up(1, 2, 65.0)
    assert schedule.kind((1, 2), 65.0) is Kind.NEW  # no longer a link's end
    sent, _ = run(schedule, 65.0, 2.0)
    assert probes_of(sent, 1, 2)[0] == 65.0


def test_heard_here_or_reaped_here_is_probed_at_once():
    schedule = Schedule()
    switch(schedule, 1, (1, 2))
    run(schedule, 0.0, NEW_SECONDS + SETTLED_PERIOD)
    now = NEW_SECONDS + SETTLED_PERIOD + 0.01
    schedule.hurry(1, 2, now)                       # a sweep was heard on port 2
    assert [p.ports for p in schedule.take(now).probes] == [(2,)]
    assert schedule.kind((1, 2), now) is Kind.NEW   # and often, for a while
    schedule.linked(1, 1, now)
    schedule.take(now + 1.0)
    schedule.hurry(1, 1, now + 1.5)                 # its link's reverse was reaped
    assert [p.ports for p in schedule.take(now + 1.5).probes] == [(1,)]
    assert schedule.kind((1, 1), now + 1.5) is Kind.LINK


def test_a_new_host_on_a_settled_port_makes_it_new_again():
    schedule = Schedule()
    switch(schedule, 1, (1, 2, 3))
    run(schedule, 0.0, NEW_SECONDS + 1)
    now = NEW_SECONDS + 5
    schedule.arrived(1, 2, now)
    assert [(p.ports, p.kind) for p in schedule.take(now).probes] == [((2,), Kind.NEW)]
    sent, _ = run(schedule, now + TICK, NEW_SECONDS)
    assert len([t for t, p in sent if p.ports == (2,)]) >= 28


def test_a_switch_whose_data_plane_was_pushed_is_reached_again_at_once():
    schedule = Schedule()
    switch(schedule, 1, (1, 2, 3))
    switch(schedule, 2, (1, 2))
    run(schedule, 0.0, 0.5)
    schedule.switch_new(1, 0.5)
    assert [(p.dpid, p.ports) for p in schedule.take(0.5).probes] == [(1, (1, 2, 3))]


def test_packet_outs_never_exceed_the_budget_and_come_a_few_every_tick():
    schedule = Schedule(Cadence(pps=100))
    for dpid in range(1, 51):
        switch(schedule, dpid, range(1, 11))     # 500 new ports: 500/s wanted
    sent, _ = run(schedule, 0.0, 20.0)
    per_tick = collections.Counter(t for t, _ in sent)
    assert max(per_tick.values()) <= 2 * 100 * TICK
    for start in range(20):
        window = [t for t, _ in sent if start <= t < start + 1]
        assert len(window) <= 100 + 10                # burst of two ticks at most
    assert len(sent) >= 0.95 * 100 * 20               # and the budget is used


def test_a_short_budget_serves_links_first_then_new_then_settled_and_says_so_once():
    schedule = Schedule(Cadence(pps=50))
    for dpid in range(1, 21):
        switch(schedule, dpid, range(1, 11))
    for dpid in range(1, 21):
        for port in (9, 10):
            schedule.linked(dpid, port, 0.0)      # 40 link ports: 40/s of 50
    sent, notices = run(schedule, 0.0, 20.0)
    link = [t for t, p in sent if p.kind is Kind.LINK and t >= 5]
    new = [t for t, p in sent if p.kind is Kind.NEW and t >= 5]
    assert len(link) >= 0.97 * 40 * 15              # links at their period
    assert 0 < len(new) <= 0.3 * 50 * 15            # new ports take what is left
    assert not [p for _, p in sent if p.kind is Kind.SETTLED]
    assert len(notices) == 1 and "links go first" in notices[0]
    assert "budget of 50/s" in notices[0]
    # the new ports settle; the rest fits, and it says so once
    sent, notices = run(schedule, 20.0, 80.0)
    assert [n for n in notices if "covers every port" in n] == notices and len(notices) == 1
    assert [p for t, p in sent if p.sweep and t > 60]


def test_the_link_timeout_stretches_with_the_links_real_period():
    schedule = Schedule(Cadence(pps=100))
    assert schedule.link_timeout() == LINK_TIMEOUT_MIN
    for dpid in range(1, 301):
        switch(schedule, dpid, (1, 2))
        schedule.linked(dpid, 1, 0.0)
        schedule.linked(dpid, 2, 0.0)             # 600 link ports at 100/s: every 6 s
    assert schedule.link_period() == pytest.approx(6.0)
    assert schedule.link_timeout() == pytest.approx(18.0)
    # and it holds: every link port is probed within that, under the budget
    sent, _ = run(schedule, 0.0, 60.0)
    for dpid in (1, 150, 300):
        times = [t for t, p in sent if p.dpid == dpid and p.ports == (1,)]
        assert max(gaps(times)) < schedule.link_timeout() / 2


def test_a_switch_that_leaves_stops_being_swept():
    schedule = Schedule()
    switch(schedule, 7, (1, 2))
    run(schedule, 0.0, NEW_SECONDS + 1)
    schedule.port_down(7, 1)
    schedule.port_down(7, 2)
    sent, _ = run(schedule, NEW_SECONDS + 1, 3 * SETTLED_PERIOD)
    assert sent == []


def test_a_cadence_must_be_positive():
    with pytest.raises(ValueError):
        Cadence(pps=0)
