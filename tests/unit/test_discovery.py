"""The LLDP pacer against os-ken's own Switches app: its loops are woken on
their periods (the native hub's Event.wait ignores timeouts, so without the
pacer they sleep until some switch event)."""
import threading
import time

from os_ken.lib import hub

from controller.topology.lldp import schedule as discovery
from tests.frames import port


def test_the_native_hub_event_ignores_its_timeout():
    # The defect the pacer exists for; if os-ken fixes it this test says so.
    event = hub.Event()
    returned = threading.Event()
    threading.Thread(target=lambda: (event.wait(timeout=0.1), returned.set()),
                     daemon=True).start()
    assert not returned.wait(1.0)
    event.set()
    assert returned.wait(1.0)


class FakeSwitches:
    """Only what the pacer touches, with os-ken's real events and periods."""
    LLDP_SEND_PERIOD_PER_PORT = 0.9
    TIMEOUT_CHECK_PERIOD = 5.0

    def __init__(self):
        self.is_active = True
        self.lldp_event = hub.Event()
        self.link_event = hub.Event()


def test_the_pacer_wakes_the_lldp_sender_and_the_link_reaper_on_their_periods():
    switches = FakeSwitches()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 25:
            switches.is_active = False

    lldp_wakes, link_wakes = [], []
    switches.lldp_event.set = lambda: lldp_wakes.append(sum(slept))
    switches.link_event.set = lambda: link_wakes.append(sum(slept))
    discovery.pace(switches, sleep=sleep)
    assert set(slept) == {0.45}
    assert len(lldp_wakes) == 25
    # Every 5 s or so (11 ticks of 0.45 s = 4.95 s).
    assert [round(t, 2) for t in link_wakes] == [4.95, 9.9]


def test_a_wait_on_the_real_event_returns_once_paced():
    switches = FakeSwitches()
    switches.LLDP_SEND_PERIOD_PER_PORT = 0.1
    threading.Thread(target=discovery.pace, args=(switches,), daemon=True).start()
    try:
        started = time.monotonic()
        switches.lldp_event.clear()
        switches.lldp_event.wait(timeout=0.05)
        assert time.monotonic() - started < 1.0
    finally:
        switches.is_active = False


def discovery_app():
    """os-ken's Switches, as this controller runs it (controller/topology/lldp/discovery.py),
    with the loops' events but without starting them."""
    import os_ken.topology.switches  # noqa: F401  (registers its options)
    from os_ken import cfg

    from controller.topology.lldp.discovery import Discovery
    if not hasattr(cfg.CONF, "observe_links"):
        cfg.CONF(args=[], project="os_ken")
    app = Discovery()
    app.lldp_event = hub.Event()
    app.link_event = hub.Event()
    return app


def test_ports_coming_and_going_never_stop_the_lldp_sender(monkeypatch):
    """A switch's ports are added and removed by the app's event handlers
    while the sender walks them: the sender's thread must survive (it used
    to die on a KeyError, and discovery went blind for good)."""
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
        app.lldp_event.set()
    app.is_active = False
    app.lldp_event.set()
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
    now = time.time()
    app.links[Link(a, b)] = now - app.LINK_TIMEOUT - 1
    app.ports.lldp_sent(b)
    gone = app.reap_stale_links(now)
    assert gone == [Link(a, b)]
    assert Link(a, b) not in app.links
    # The reverse is due for reaping next pass, and b is probed first.
    assert app.links[Link(b, a)] == now - app.LINK_TIMEOUT
    assert app.ports.get_port(b).timestamp is None
    assert app.probe_due_ports(now) == 2


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


def test_each_probe_sent_is_fresh_and_verifies(monkeypatch):
    app, s1, _, _, _ = two_switches(monkeypatch)
    app.start_probing()
    app._port_added(app._get_port(1, 1))
    app.send_lldp_packet(app._get_port(1, 1))
    app.send_lldp_packet(app._get_port(1, 1))
    first, second = (out.data for out in s1.sent)
    assert first != second
    assert [app.auth.check(f).refusal for f in (first, second)] == [None, None]
    assert app.auth.check(first).port == 1


def test_a_switch_whose_data_plane_was_just_pushed_is_probed_at_once(monkeypatch):
    app, s1, s2, _, _ = two_switches(monkeypatch)
    app.start_probing()
    for dpid, no in ((1, 1), (1, 2), (2, 1)):
        app._port_added(app._get_port(dpid, no))
    now = time.time()
    app.probe_due_ports(now)  # as when the switches connected (lost: no copy rule yet)
    assert app.probe_due_ports(now) == 0
    app.probe_switch(1)
    assert app.probe_due_ports(now) == 2  # s1's two ports, not s2's
    assert len(s1.sent) == 4 and len(s2.sent) == 1


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
    # the real cable between them is found as ever
    app.lldp_packet_in_handler(PacketIn(s2, 1, app.auth.frame(1, 1, "00:00:00:00:01:01")))
    app.lldp_packet_in_handler(PacketIn(s1, 1, app.auth.frame(2, 1, "00:00:00:00:02:01")))
    assert len(announced) == 2
