"""The data-plane worker at rest: it looks at the switches only when the
topology changed (a port, a link, a host, a settle period or a learning ban
that ran out), a host was marked, or a switch's hold ends. Before, it took a
snapshot of every port of every switch ten times a second, which at a
thousand switches is most of a core spent finding that nothing changed.
The port meters are read a bounded number of switches at a time."""
from controller.openflow import compiler
from controller.openflow.dataplane import Budgets
from controller.openflow.fabric import Fabric
from controller.topology.portguard import PortGuard
from controller.topology.settling import Settling
from controller.topology.state import TopologyState
from enforcement.domain import pipeline
from enforcement.domain.flows import FlowRule
from enforcement.domain.model import LinkView
from tests.frames import arp_frame


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def network(clock, budgets=None):
    budgets = budgets or Budgets()
    state = TopologyState((), budgets)
    state.settling = Settling(0.8, clock)
    state.guard = PortGuard(budgets, clock)
    state.switch_up(1, {p: (f"s1-eth{p}", True) for p in (1, 2, 3)})
    state.switch_up(2, {p: (f"s2-eth{p}", True) for p in (1, 3)})
    return state


def test_the_generation_moves_with_every_change_and_only_then():
    clock = Clock()
    budgets = Budgets(churn_macs=2, churn_seconds=10, ban_seconds=30)
    state = network(clock, budgets)
    first = state.generation()
    assert state.generation() == first
    clock.now += 0.5
    assert state.generation() == first             # still settling
    clock.now += 0.5
    settled = state.generation()
    assert settled != first                        # settled by time alone
    assert state.generation() == settled
    state.link_added(LinkView(1, 3, 2, 3))
    linked = state.generation()
    assert linked != settled
    assert state.learn(1, 1, arp_frame("00:00:00:00:00:01", "10.0.0.1")).macs
    learned = state.generation()
    assert learned != linked
    state.learn(1, 1, arp_frame("00:00:00:00:00:01", "10.0.0.1"))  # known: nothing new
    assert state.generation() == learned
    state.port_changed(1, 2, "s1-eth2", False, False, False)
    down = state.generation()
    assert down != learned
    # three new MACs within the window ban learning on port 1 for 30 s
    for n in (2, 3, 4):
        state.learn(1, 1, arp_frame(f"00:00:00:00:00:0{n}", f"10.0.0.{n}"))
    assert 1 in state.snapshot().closed_learning[1]
    banned = state.generation()
    clock.now += 29
    assert state.generation() == banned
    clock.now += 1
    assert state.generation() != banned            # the ban ran out
    assert 1 not in state.snapshot().closed_learning[1]


class Switches:
    """Answers every request at once and records what was asked."""
    def __init__(self):
        self.asked: list[tuple[int, str]] = []

    def transact(self, dpid, messages, timeout, meanwhile=None):
        self.asked += [(dpid, type(m).__name__) for m in messages]
        return {}


def fabric_for(state, clock, switches):
    taken = []

    def snapshot():
        taken.append(clock.now)
        return state.snapshot()

    fabric = Fabric(switches.transact, snapshot, Budgets(), clock=clock, startup_grace=0.0,
                    reconnect_hold=3.0, generation=state.generation)
    return fabric, taken


def test_an_idle_network_costs_the_worker_no_snapshot():
    clock = Clock()
    state = network(clock)
    switches = Switches()
    fabric, taken = fabric_for(state, clock, switches)
    for dpid in (1, 2):
        fabric.adopt(dpid, [], [])
    clock.now += 1.0                               # the ports settled
    assert fabric.tick()
    before, asked = len(taken), len(switches.asked)
    for _ in range(100):                           # ten seconds of ticks
        clock.now += 0.1
        assert not fabric.tick()
    assert len(taken) == before and len(switches.asked) == asked
    # a host learned: one look, and the host's flows pushed
    learned = state.learn(1, 1, arp_frame("00:00:00:00:00:01", "10.0.0.1"))
    fabric.mark_hosts(learned.macs)
    assert fabric.tick() and len(taken) == before + 1
    assert len(switches.asked) > asked
    assert not fabric.tick()
    # a link: the tree changed, every switch is looked at again
    state.link_added(LinkView(1, 3, 2, 3))
    assert fabric.tick() and not fabric.tick()


def test_a_switch_whose_hold_ends_is_synced_in_full_then():
    """A switch that reconnects holding our flows gets only additions for
    the hold; when it ends, the worker looks again although nothing
    changed in the topology."""
    clock = Clock()
    state = network(clock)
    switches = Switches()
    fabric, _ = fabric_for(state, clock, switches)
    kept = FlowRule(dpid=1, table_id=3, priority=100,
                    cookie=pipeline.NS_FORWARD << pipeline.COOKIE_NAMESPACE_SHIFT,
                    match=(("eth_dst", "00:00:00:00:00:77"),))
    fabric.adopt(1, [kept], [])
    clock.now += 1.0
    assert fabric.tick()
    assert not fabric.tick()
    clock.now += 2.5                                # past the 3 s hold
    assert fabric.tick()                           # looked again, unasked
    assert not fabric.tick()


def test_the_port_meters_are_read_a_few_switches_at_a_time_in_turn():
    clock = Clock()
    state = network(clock)
    switches = Switches()
    fabric, _ = fabric_for(state, clock, switches)
    for dpid in (1, 2, 3, 4, 5):
        fabric.adopt(dpid, [], [])
    meters = type(compiler.meter_stats_request()).__name__
    read = []
    for _ in range(3):
        switches.asked.clear()
        fabric.poll_budgets(2)
        read.append([dpid for dpid, kind in switches.asked if kind == meters])
    assert read == [[1, 2], [3, 4], [5, 1]]
