"""Who may claim what (controller/topology/claims.py through controller/topology/state.py):
a subscriber's frames cannot take a neighbour's address or MAC, a DHCP
binding is the server's word, and a refusal is reported, not learned."""
from controller.openflow.dataplane import Budgets
from controller.topology.state import TopologyState
from enforcement.domain.inventory import Pinned
from tests.frames import arp_frame, ip_frame, nd_frame

A, B, C = "00:00:00:00:00:0a", "00:00:00:00:00:0b", "00:00:00:00:00:0c"


def network(pinned=()):
    """s1 with access ports 1-3; hosts A on port 1 (10.0.0.1, 2001:db8::1)
    and B on port 2 (10.0.0.2)."""
    state = TopologyState(pinned, Budgets())
    state.settling = type(state.settling)(0.0)
    state.switch_up(1, {n: (f"s1-eth{n}", True) for n in (1, 2, 3)})
    assert state.learn(1, 1, arp_frame(A, "10.0.0.1")).release
    state.learn(1, 1, nd_frame(A, 136, "2001:db8::1", "2001:db8::1"))
    state.learn(1, 2, arp_frame(B, "10.0.0.2"))
    return state


def test_an_address_held_on_another_live_port_is_refused_and_reported():
    state = network()
    for frame in (arp_frame(B, "10.0.0.1"),                               # gratuitous ARP
                  nd_frame(B, 136, "2001:db8::2", "2001:db8::1"),         # unsolicited NA
                  nd_frame(B, 135, "2001:db8::1", "2001:db8::9")):        # NS from it
        learned = state.learn(1, 2, frame)
        assert not learned.release, "a refused claim is never sent on"
        (event,) = learned.refused
        assert (event.kind, event.dpid, event.port, event.mac) == ("address_claim", 1, 2, B)
        assert event.claimed in ("10.0.0.1", "2001:db8::1")
        assert A in event.owner and "port 1" in event.owner
        assert event.subscriber_ip == "10.0.0.2"
    assert state.host("10.0.0.1").mac == A and state.host("2001:db8::1").mac == A
    assert state.host("10.0.0.2").mac == B  # the claimant keeps its own


def test_the_same_line_or_a_departed_holder_gives_the_address_up():
    state = network()
    # a new device behind the same line (port 1) takes the line's address
    learned = state.learn(1, 1, arp_frame(C, "10.0.0.1"))
    assert learned.release and not learned.refused and state.host("10.0.0.1").mac == C
    assert state.subscriber(A).ip is None
    # B's port goes down (the subscriber left): its address is free
    state.port_changed(1, 2, "s1-eth2", live=False, added=False, deleted=False)
    learned = state.learn(1, 3, arp_frame("00:00:00:00:00:0d", "10.0.0.2"))
    assert learned.release and state.host("10.0.0.2").port == 3


def test_a_mac_from_another_live_port_moves_nothing():
    state = network()
    learned = state.learn(1, 3, ip_frame(A, "10.0.0.1"))
    (event,) = learned.refused
    assert (event.kind, event.claimed, event.port) == ("mac_claim", A, 3)
    assert state.subscriber(A).port == 1 and not learned.macs
    # unplugged from port 1, plugged into port 3: a move
    state.port_changed(1, 1, "s1-eth1", live=False, added=False, deleted=False)
    moved = state.learn(1, 3, arp_frame(A, "10.0.0.1"), is_enforced={A}.__contains__)
    assert not moved.refused and moved.follow == (A,) and state.subscriber(A).port == 3


def test_a_dhcp_binding_is_the_servers_word():
    state = network()
    # the server hands 10.0.0.1 (A's) to B: A loses it, B holds it
    learned = state.bind(B, "10.0.0.1")
    assert learned.macs == {A, B} and set(learned.follow) == {A, B}
    assert state.host("10.0.0.1").mac == B and state.subscriber(A).ip is None
    # nobody else may claim a bound address, not even from a port that is down
    state.port_changed(1, 2, "s1-eth2", live=False, added=False, deleted=False)
    refused = state.learn(1, 3, arp_frame(C, "10.0.0.1"))
    assert refused.refused[0].kind == "address_claim"
    assert "DHCP lease" in refused.refused[0].owner
    assert state.host("10.0.0.1").mac == B
    # A takes a new lease: its claim on it is accepted
    state.bind(A, "10.0.0.7")
    assert state.host("10.0.0.7").mac == A
    assert state.learn(1, 1, arp_frame(A, "10.0.0.7")).refused == []
    # a lease that ended leaves the address with its holder, first come first served
    state.unbind(B, "10.0.0.1")
    state.port_changed(1, 2, "s1-eth2", live=True, added=False, deleted=False)
    assert state.learn(1, 3, arp_frame(C, "10.0.0.1")).refused[0].kind == "address_claim"


def test_an_inventory_pin_is_claimed_from_its_own_port_only():
    state = network([Pinned("ACME", "10.0.0.50", "00:00:00:00:00:50", 1, 3)])
    learned = state.learn(1, 2, arp_frame(B, "10.0.0.50"))
    assert learned.refused and "ACME" in learned.refused[0].owner
    assert state.learn(1, 3, arp_frame("00:00:00:00:00:50", "10.0.0.50")).release


def test_what_claims_nothing_is_not_held_and_a_retry_is_released():
    state = network()
    # duplicate address detection is forwarded by the switch: no release
    assert not state.learn(1, 1, nd_frame(A, 135, "::", "2001:db8::5")).release
    # a held claim that is already known (a retry) is sent on as well
    assert state.learn(1, 1, arp_frame(A, "10.0.0.1")).release


def test_an_accepted_claim_is_sent_on_once_its_hosts_flows_are_in():
    """Fabric.release: the held frame goes out through the pipeline
    (packet-out to OFPP_TABLE from its port) after the host's flows were
    pushed, never before, and once."""
    from os_ken.ofproto import ofproto_v1_3 as ofp

    from controller.openflow.dataplane import Ports, host_rules
    from controller.openflow.fabric import Fabric, Snapshot
    from enforcement.domain.model import HostView

    host = HostView(A, "10.0.0.1", 1, 1)
    log: list = []

    class Recording(Fabric):
        def send_change(self, dpid, change):
            log.append(("flows", {r.key for r in change.rules_to_add}))

    ports = {1: Ports(frozenset({1, 2}), frozenset())}
    snaps = [Snapshot(ports, {}, {1: {}}, {})]
    fabric = Recording(lambda dpid, messages, timeout: log.append(("out", messages)) or {},
                       lambda: snaps[-1], Budgets(), startup_grace=0.0, reconnect_hold=0.0)
    fabric.adopt(1, [], [])
    log.clear()
    snaps.append(Snapshot(ports, {A: host}, {1: {}}, {}))  # the claim accepted
    frame = arp_frame(A, "10.0.0.1")
    fabric.mark_hosts({A})
    fabric.release(A, 1, 1, frame)
    fabric.tick()
    kinds = [kind for kind, _ in log]
    assert kinds == ["flows", "out"], kinds
    assert {r.key for r in host_rules(1, host, 1, True)} <= log[0][1]
    (message,) = log[1][1]
    assert message.in_port == 1 and message.data == frame
    assert [a.port for a in message.actions] == [ofp.OFPP_TABLE]
    # the same frame copied back again (say its flows were missing after all):
    # not sent on a second time
    fabric.release(A, 1, 1, frame)
    fabric.tick()
    assert [kind for kind, _ in log].count("out") == 1
