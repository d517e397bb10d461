from controller.topology.settling import Settling


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_port_settles_after_the_period():
    clock = Clock()
    ports = Settling(1.5, clock)
    ports.came_up(1, [1, 2])
    assert ports.is_settling(1, 1) and ports.settling_ports(1) == {1, 2}
    clock.now += 1.4
    assert ports.is_settling(1, 2)
    clock.now += 0.1
    assert not ports.is_settling(1, 2) and ports.settling_ports(1) == set()


def test_a_link_found_on_a_port_settles_it_at_once():
    ports = Settling(1.5, Clock())
    ports.came_up(1, [3])
    ports.link_found(1, 3)
    assert not ports.is_settling(1, 3)


def test_other_switches_and_ports_are_untouched():
    ports = Settling(1.5, Clock())
    ports.came_up(1, [1])
    ports.came_up(2, [1])
    assert not ports.is_settling(1, 2)
    ports.forget_switch(1)
    assert not ports.is_settling(1, 1) and ports.is_settling(2, 1)


def test_a_port_settles_again_only_after_it_was_down():
    clock = Clock()
    ports = Settling(1.5, clock)
    ports.came_up(1, [1])
    clock.now += 2
    ports.went_up(1, 1)  # a speed change, say: nothing behind it changed
    assert not ports.is_settling(1, 1)
    ports.went_down(1, 1)
    assert not ports.is_settling(1, 1)
    ports.went_up(1, 1)  # a cable plugged in: anything may be behind it now
    assert ports.is_settling(1, 1)


def test_a_port_once_an_uplink_teaches_no_host_until_it_goes_down():
    ports = Settling(1.5, Clock())
    ports.link_found(1, 4)
    ports.forget_switch(1)               # the switch reconnects: still an uplink
    ports.came_up(1, [4])
    assert ports.was_uplink(1, 4) and not ports.was_uplink(1, 3)
    ports.went_down(1, 4)                # re-cabled: whatever is behind it now
    assert not ports.was_uplink(1, 4)
    ports.link_found(2, 4)
    ports.removed(2, 4)
    assert not ports.was_uplink(2, 4)


def test_a_restarted_controller_takes_a_switchs_old_tree_links_for_links_while_it_holds():
    """After a restart nothing remembers which ports were uplinks: those the
    switch's own flows show as tree links (dataplane.tree_ports_of) settle
    for the reconnect hold, not the short period, so an LLDP slower than
    the period does not turn them into access ports (whose learning rules
    would hold the far side's ARP: a restart once cost 3 s of pings that
    way); a link found ends it at once."""
    from controller.openflow.dataplane import Budgets, Ports, switch_rules, tree_ports_of
    from controller.openflow.fabric import RECONNECT_HOLD
    from controller.topology.state import TopologyState

    rules, _ = switch_rules(1, Ports(access=frozenset({1, 2}), tree=frozenset({3, 4}), up=3),
                            Budgets())
    assert tree_ports_of(rules) == {3, 4}
    clock = Clock()
    state = TopologyState((), Budgets())
    state.settling = Settling(0.8, clock)
    state.switch_up(1, {p: (f"s1-eth{p}", True) for p in (1, 2, 3, 4)})
    state.links_held(1, tree_ports_of(rules), RECONNECT_HOLD)
    clock.now += 1.0
    assert state.snapshot().ports[1].access == {1, 2}
    state.settling.link_found(1, 4)
    clock.now += RECONNECT_HOLD
    assert state.snapshot().ports[1].access == {1, 2, 3}  # no link came: an access port
