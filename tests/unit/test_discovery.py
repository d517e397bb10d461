"""OS-Ken's discovery as this controller runs it
(controller/topology/lldp/discovery.py): its own sender and reaper loops, the
schedule fed by OS-Ken's port bookkeeping, sweeps, and only switches writing
links."""
import threading
import time

from os_ken.lib import hub

from controller.topology.lldp.schedule import NEW_SECONDS, Kind
from tests.frames import port


def test_the_native_hub_event_ignores_its_timeout():
    """Why discovery's loops wait on a threading.Event of their own: on the
    native hub OS-Ken's loops slept until some switch event woke them. If
    os-ken fixes it this test says so."""
    event = hub.Event()
    returned = threading.Event()
    threading.Thread(target=lambda: (event.wait(timeout=0.1), returned.set()),
                     daemon=True).start()
    assert not returned.wait(1.0)
    event.set()
    assert returned.wait(1.0)


KEY = b"the deployment's LLDP key, in tests"


def verdict(frame: bytes):
    """What a frame says, checked apart from the app (whose check would
    then refuse the frame as replayed)."""
    from controller.topology.lldp.auth import Authenticator
    return Authenticator(KEY).check(frame)


def discovery_app():
    """os-ken's Switches, as this controller runs it (controller/topology/lldp/discovery.py),
    with the loops' events but without starting them."""
    import os_ken.topology.switches  # noqa: F401  (registers its options)
    from os_ken import cfg

    from controller.topology.lldp.discovery import Discovery
    if not hasattr(cfg.CONF, "observe_links"):
        cfg.CONF(args=[], project="os_ken")
    app = Discovery(lldp_key=KEY)
    # Link discovery on, as --observe-links sets it, but the loops are not
    # started (a test runs them); OS-Ken makes these events with it, and
    # its handlers and close() set them.
    app.link_discovery = True
    app.lldp_event = hub.Event()
    app.link_event = hub.Event()
    return app


def test_ports_coming_and_going_never_stop_the_lldp_sender(monkeypatch):
    """A switch's ports are added and removed by the app's event handlers
    while the sender takes its due probes: the sender's thread must survive
    (it used to die on a KeyError, and discovery went blind for good)."""
    app = discovery_app()
    app.start_probing()  # walk the send path too
    failures = []

    def sender():
        try:
            app.lldp_loop()
        except Exception as exc:  # what the test looks for
            failures.append(exc)

    def churn(ev):
        # What os-ken's handlers do to the ports on connect, status, leave.
        for no in range(1, 40):
            app.ports.add_port(port(no), b"lldp")
        for no in range(1, 40, 3):
            app.ports.move_front(port(no))
        for no in range(1, 40):
            app.ports.del_port(port(no))

    handler = app._guarded(churn)
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not failures:
        handler(None)
    app.close()
    thread.join(2.0)
    assert failures == []
    assert not thread.is_alive()


def test_a_stale_link_is_reaped_and_announced_and_its_reverse_hurried():
    from os_ken.topology.switches import Link
    app = discovery_app()
    a, b = port(1), port(2)
    app.ports.add_port(a, b"lldp")
    app.ports.add_port(b, b"lldp")
    app.links.update_link(a, b)
    app.links.update_link(b, a)
    now, clock = time.time(), time.monotonic()
    app.schedule.take(clock)  # the first contact
    timeout = app.schedule.link_timeout()
    app.links[Link(a, b)] = now - timeout - 1
    gone = app.reap_stale_links(now)
    assert gone == [Link(a, b)]
    assert Link(a, b) not in app.links
    # The reverse is due for reaping next pass, and b is probed at once.
    assert app.links[Link(b, a)] == now - timeout
    assert [p.ports for p in app.schedule.take(clock + 0.01).probes] == [(2,)]


# ---- only switches write links -------------------------------------------------

class FakeDatapath:
    def __init__(self, dpid, ports):
        from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser
        self.id = dpid
        self.ofproto, self.ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser
        self.ports = {no: ofproto_v1_3_parser.OFPPort(
            port_no=no, hw_addr=f"00:00:00:00:{dpid:02x}:{no:02x}",
            name=f"s{dpid}-eth{no}".encode(), config=0, state=0, curr=0, advertised=0,
            supported=0, peer=0, curr_speed=0, max_speed=0) for no in ports}
        self.sent = []

    def send_msg(self, msg):
        self.sent.append(msg)


class PacketIn:
    def __init__(self, dp, in_port, data):
        self.msg = type("Msg", (), {"datapath": dp, "data": data,
                                    "match": {"in_port": in_port}})()


def two_switches(monkeypatch):
    """s1 port 1 -- s2 port 1, each with an access port 2; what discovery
    announces is collected."""
    from controller.topology.lldp.discovery import Hooks
    app = discovery_app()
    s1, s2 = FakeDatapath(1, (1, 2)), FakeDatapath(2, (1, 2))
    for dp in (s1, s2):
        app._register(dp)
    announced, refused = [], []
    monkeypatch.setattr(app, "send_event_to_observers", announced.append)
    app.connect(Hooks(refused=refused.append))
    return app, s1, s2, announced, refused


def test_a_link_is_announced_once_authentic_probes_crossed_it_both_ways(monkeypatch):
    from os_ken.topology import event as topology_event
    app, s1, s2, announced, refused = two_switches(monkeypatch)
    app.lldp_packet_in_handler(PacketIn(s2, 1, app.auth.frame(1, 1, "00:00:00:00:01:01")))
    assert announced == []  # one way: nothing yet
    app.lldp_packet_in_handler(PacketIn(s1, 1, app.auth.frame(2, 1, "00:00:00:00:02:01")))
    assert all(isinstance(e, topology_event.EventLinkAdd) for e in announced)
    assert sorted((e.link.src.dpid, e.link.dst.dpid) for e in announced) == [(1, 2), (2, 1)]
    assert refused == [] and app.refusals.total() == 0


def test_forged_probes_change_nothing_and_are_counted_and_reported(monkeypatch):
    from controller.topology.lldp.auth import Authenticator
    app, s1, s2, announced, refused = two_switches(monkeypatch)
    forger = Authenticator(b"not the deployment's key!", clock=time.time)
    # a subscriber on s1 port 2 and one on s2 port 2 claim each other's switch
    for _ in range(5):
        app.lldp_packet_in_handler(PacketIn(s1, 2, forger.frame(2, 2, "02:00:00:00:00:01")))
        app.lldp_packet_in_handler(PacketIn(s2, 2, forger.frame(1, 2, "02:00:00:00:00:02")))
    assert announced == [] and len(app.links) == 0
    assert app.refusals.total() == 10
    assert sorted((e.dpid, e.port, e.mac, e.claimed) for e in refused) == [
        (1, 2, "02:00:00:00:00:01", "switch 0000000000000002 port 2"),
        (2, 2, "02:00:00:00:00:02", "switch 0000000000000001 port 2")]


def sent_frames(dp):
    return [(tuple(a.port for a in out.actions), out.data) for out in dp.sent]


def send_due(app, now):
    for dp, message, _ in app.probe_due(now):
        dp.send_msg(message)


def add_ports(app, *ports):
    for dpid, no in ports:
        app._port_added(app._get_port(dpid, no))


def test_each_probe_sent_is_fresh_and_verifies(monkeypatch):
    app, s1, _, _, _ = two_switches(monkeypatch)
    app.start_probing()
    add_ports(app, (1, 1))
    now = time.monotonic()
    send_due(app, now)           # at once
    send_due(app, now + 1.5)     # and again within its period, as a new port
    (ports1, first), (ports2, second) = sent_frames(s1)
    assert ports1 == ports2 == (1,)
    assert first != second
    assert [verdict(f).refusal for f in (first, second)] == [None, None]
    assert verdict(first).port == 1
    assert app.probes_sent == {"new": 2}


def test_a_follower_sends_nothing():
    app = discovery_app()
    dp = FakeDatapath(1, (1, 2))
    app._register(dp)
    add_ports(app, (1, 1), (1, 2))
    send_due(app, time.monotonic())
    assert dp.sent == [] and app.probes_sent == {}


def test_a_switch_whose_data_plane_was_just_pushed_is_reached_again_at_once(monkeypatch):
    app, s1, s2, _, _ = two_switches(monkeypatch)
    app.start_probing()
    add_ports(app, (1, 1), (1, 2), (2, 1))
    now = time.monotonic()
    send_due(app, now)  # as when the switches connected (lost: no copy rule yet)
    send_due(app, now + 0.01)
    assert [ports for ports, _ in sent_frames(s1)] == [(1, 2)]  # one sweep
    assert [ports for ports, _ in sent_frames(s2)] == [(1,)]
    app.probe_switch(1)
    send_due(app, now + 0.02)
    assert [ports for ports, _ in sent_frames(s1)] == [(1, 2), (1, 2)]  # s1 again, not s2
    assert len(s2.sent) == 1


def test_a_sweep_makes_no_link_but_the_port_it_reached_is_probed_and_the_link_found(
        monkeypatch):
    """s1 sweeps ports 1 and 2; s2 hears it on port 1 (the cable): that
    port is probed on its own at once, s1 hears that and probes its end
    back, and both directions make the link."""
    from os_ken.topology import event as topology_event

    from controller.topology.lldp import auth as lldpauth
    app, s1, s2, announced, refused = two_switches(monkeypatch)
    app.start_probing()
    add_ports(app, (1, 1), (1, 2), (2, 1), (2, 2))
    now = time.monotonic()
    send_due(app, now)
    (ports, sweep), = [(p, d) for p, d in sent_frames(s1)]
    said = verdict(sweep)
    assert ports == (1, 2) and said.refusal is None and said.sweep
    assert said.port == lldpauth.ANY_PORT and "sweep" in said.claimed
    s2.sent.clear()
    app.lldp_packet_in_handler(PacketIn(s2, 1, sweep))       # across the cable
    assert announced == [] and len(app.links) == 0            # no link from a sweep
    send_due(app, now + 0.01)
    (ports, probe), = sent_frames(s2)
    assert ports == (1,)                                      # s2:1 on its own, at once
    s1.sent.clear()
    app.lldp_packet_in_handler(PacketIn(s1, 1, probe))        # heard back on s1:1
    send_due(app, now + 0.02)
    (ports, answer), = sent_frames(s1)
    assert ports == (1,)                                      # s1:1 hurried back
    app.lldp_packet_in_handler(PacketIn(s2, 1, answer))
    assert sorted((e.link.src.dpid, e.link.dst.dpid) for e in announced
                  if isinstance(e, topology_event.EventLinkAdd)) == [(1, 2), (2, 1)]
    assert app.schedule.kind((1, 1), now) is Kind.LINK
    assert app.schedule.kind((2, 1), now) is Kind.LINK
    assert refused == []


def port_status(dp, no, reason, down=False):
    from os_ken.ofproto import ofproto_v1_3
    desc = dp.ports[no]
    state = ofproto_v1_3.OFPPS_LINK_DOWN if down else 0
    changed = dp.ofproto_parser.OFPPort(
        port_no=no, hw_addr=desc.hw_addr, name=desc.name, config=0, state=state, curr=0,
        advertised=0, supported=0, peer=0, curr_speed=0, max_speed=0)
    return type("Event", (), {"msg": type("Msg", (), {
        "reason": reason, "datapath": dp, "desc": changed})()})()


def test_a_port_down_is_not_probed_and_is_probed_at_once_when_back_up(monkeypatch):
    """Through OS-Ken's own port-status handler."""
    app, s1, _, _, _ = two_switches(monkeypatch)
    app.start_probing()
    add_ports(app, (1, 1), (1, 2))
    ofp = s1.ofproto
    now = time.monotonic()
    send_due(app, now)
    app.port_status_handler(port_status(s1, 2, ofp.OFPPR_MODIFY, down=True))
    s1.sent.clear()
    for step in range(60):
        send_due(app, now + step / 20)
    assert {ports for ports, _ in sent_frames(s1)} == {(1,)}
    app.port_status_handler(port_status(s1, 2, ofp.OFPPR_MODIFY))
    s1.sent.clear()
    now = time.monotonic()  # the handler tells the schedule at the real time
    send_due(app, now)
    assert [ports for ports, _ in sent_frames(s1)] == [(2,)]
    assert app.schedule.kind((1, 2), now) is Kind.NEW
    app.port_status_handler(port_status(s1, 2, ofp.OFPPR_DELETE))
    assert (1, 2) not in app.ports.by_number
    s1.sent.clear()
    send_due(app, now + 5)
    assert (2,) not in [ports for ports, _ in sent_frames(s1)]


def test_settled_ports_are_swept_and_new_hosts_make_a_port_new_again(monkeypatch):
    app, s1, _, _, _ = two_switches(monkeypatch)
    app.start_probing()
    arrivals = []
    from controller.topology.lldp.discovery import Hooks
    app.connect(Hooks(arrivals=lambda cursor: (cursor + len(arrivals), arrivals[cursor:])))
    add_ports(app, (1, 1), (1, 2))
    start = time.monotonic()
    later = start + NEW_SECONDS + 1
    for step in range(int((NEW_SECONDS + 21) * 20)):
        send_due(app, start + step / 20)
    s1.sent.clear()
    for step in range(20 * 20):                            # 20 s of settled ports
        send_due(app, later + 20 + step / 20)
    assert [ports for ports, _ in sent_frames(s1)] == [(1, 2)]  # one sweep of both
    arrivals.append((1, 2))                                   # a new host behind port 2
    s1.sent.clear()
    app._take_arrivals(later + 40)
    send_due(app, later + 40)
    assert [ports for ports, _ in sent_frames(s1)] == [(2,)]
    assert app.schedule.kind((1, 2), later + 40) is Kind.NEW


def test_probes_carried_by_a_subscriber_on_its_inventory_lines_make_no_link(monkeypatch):
    """A probe sent out of a subscriber's line reaches the subscriber, which
    may carry it, authentic and fresh, to another port: where the inventory
    declares the lines, no link ends on one."""
    from controller.topology.lldp import auth as lldpauth
    from controller.topology.lldp.discovery import Hooks
    app, s1, s2, announced, refused = two_switches(monkeypatch)
    app.connect(Hooks(is_subscriber_line=lambda dpid, port: (dpid, port) in {(1, 2), (2, 2)},
                      refused=refused.append))
    probe_of_line_1 = app.auth.frame(1, 2, "00:00:00:00:01:02")  # sent out of s1:2
    probe_of_line_2 = app.auth.frame(2, 2, "00:00:00:00:02:02")
    app.lldp_packet_in_handler(PacketIn(s2, 2, probe_of_line_1))  # carried to s2:2
    app.lldp_packet_in_handler(PacketIn(s1, 2, probe_of_line_2))  # and back
    # carried to a port that is no declared line: refused all the same
    app.lldp_packet_in_handler(PacketIn(s2, 1, app.auth.frame(1, 2, "00:00:00:00:01:02")))
    assert announced == [] and len(app.links) == 0
    assert app.refusals.counts[lldpauth.SUBSCRIBER_LINE] == 3
    assert {(e.dpid, e.port, e.claimed) for e in refused} == {
        (2, 2, "switch 0000000000000001 port 2"), (1, 2, "switch 0000000000000002 port 2"),
        (2, 1, "switch 0000000000000001 port 2")}
    # a sweep of s1 carried to a line: refused the same way
    sweep = app.auth.frame(1, lldpauth.ANY_PORT, "00:00:00:00:01:01")
    app.lldp_packet_in_handler(PacketIn(s2, 2, sweep))
    assert app.refusals.counts[lldpauth.SUBSCRIBER_LINE] == 4
    # the real cable between them is found as ever
    app.lldp_packet_in_handler(PacketIn(s2, 1, app.auth.frame(1, 1, "00:00:00:00:01:01")))
    app.lldp_packet_in_handler(PacketIn(s1, 1, app.auth.frame(2, 1, "00:00:00:00:02:01")))
    assert len(announced) == 2


def test_only_lldp_reaches_discovery(monkeypatch):
    """OS-Ken's host discovery parsed every packet-in (and walked every
    link for each): not registered here."""
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import MAIN_DISPATCHER, register_instance
    app, _, _, _, _ = two_switches(monkeypatch)
    register_instance(app)  # what OS-Ken's app manager does
    handlers = app.get_handlers(ofp_event.EventOFPPacketIn(None), MAIN_DISPATCHER)
    assert [h.__name__ for h in handlers] == ["lldp_packet_in_handler"]


def test_one_direction_heard_probes_the_far_end_at_once_but_makes_no_link_port(
        monkeypatch):
    """One direction is all a subscriber relaying probes between two of its
    lines makes by itself: the port is probed at once (to hear the reverse)
    and for a while, not as a link's end for good."""
    app, _, s2, _, _ = two_switches(monkeypatch)
    app.start_probing()
    add_ports(app, (1, 2), (2, 2))
    now = time.monotonic()
    send_due(app, now)
    s2.sent.clear()
    app.heard(1, 2, 2, 2)
    assert app.schedule.kind((2, 2), now) is Kind.NEW
    assert app.schedule.kind((1, 2), now) is not Kind.LINK
    send_due(app, now + 0.01)
    assert [ports for ports, _ in sent_frames(s2)] == [(2,)]
    app.heard(2, 2, 1, 2)  # the reverse: now it is a link
    assert app.schedule.kind((1, 2), now) is Kind.LINK
    assert app.schedule.kind((2, 2), now) is Kind.LINK
