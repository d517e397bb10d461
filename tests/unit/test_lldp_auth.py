"""Only the controller's instances write LLDP the controller believes: the
authenticator (controller/topology/lldp/auth.py), links that count once heard both
ways (controller/topology/lldp/linkpairs.py), and what a refused frame leaves behind
(controller/topology/lldp/refused.py)."""
import struct

import hypothesis
import pytest
from hypothesis import strategies as st
from os_ken.lib.packet import ethernet, lldp, packet
from os_ken.topology.switches import Link, LLDPPacket

from controller.topology.lldp import auth as lldpauth
from controller.topology.lldp.auth import Authenticator
from controller.topology.lldp.linkpairs import TwoWayLinks
from controller.topology.lldp.refused import RefusedFrames
from tests.frames import port as os_ken_port

KEY = b"k" * 32
MAC = "00:00:00:00:00:01"


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def pair(clock=None):
    """A sender and a receiver sharing the key (two instances)."""
    clock = clock or Clock()
    return Authenticator(KEY, clock=clock), Authenticator(KEY, clock=clock), clock


def test_a_probe_verifies_with_the_same_key_and_says_where_it_was_sent():
    sender, receiver, _ = pair()
    verdict = receiver.check(sender.frame(0xFEDC_BA98_7654_3210, 7, MAC))
    assert (verdict.dpid, verdict.port, verdict.refusal) == (0xFEDC_BA98_7654_3210, 7, None)
    # still readable as OS-Ken's format (captures, other tools)
    assert LLDPPacket.lldp_parse(sender.frame(1, 2, MAC)) == (1, 2)


def test_a_probe_signed_with_another_key_is_refused():
    other = Authenticator(b"x" * 32, clock=Clock())
    _, receiver, _ = pair()
    verdict = receiver.check(other.frame(1, 2, MAC))
    assert (verdict.refusal, verdict.claimed) == (lldpauth.BAD_AUTHENTICATOR,
                                                  "switch 0000000000000001 port 2")


def retarget(frame: bytes, chassis: bytes | None = None, port: int | None = None) -> bytes:
    """The frame with its chassis id or port id rewritten, authenticator kept."""
    pkt = packet.Packet(frame)
    eth, probe = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(lldp.lldp)
    tlvs = list(probe.tlvs)
    if chassis is not None:
        tlvs[0] = lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                                 chassis_id=chassis)
    if port is not None:
        tlvs[1] = lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT,
                              port_id=struct.pack("!I", port))
    out = packet.Packet()
    out.add_protocol(ethernet.ethernet(eth.dst, eth.src, eth.ethertype))
    out.add_protocol(lldp.lldp(tuple(_fresh(t) for t in tlvs)))
    out.serialize()
    return bytes(out.data)


def _fresh(tlv):
    # Parsed TLVs re-serialize as they came; End and TTL need building anew.
    if isinstance(tlv, lldp.End):
        return lldp.End()
    if isinstance(tlv, lldp.TTL):
        return lldp.TTL(ttl=tlv.ttl)
    if isinstance(tlv, lldp.OrganizationallySpecific):
        return lldp.OrganizationallySpecific(oui=tlv.oui, subtype=tlv.subtype, info=tlv.info)
    return tlv


@pytest.mark.parametrize("change", [
    {"chassis": b"dpid:0000000000000002"},
    {"port": 3},
])
def test_a_probe_whose_switch_or_port_was_changed_is_refused(change):
    sender, receiver, _ = pair()
    genuine = sender.frame(1, 2, MAC)
    forged = retarget(genuine, **change)
    assert receiver.check(forged).refusal == lldpauth.BAD_AUTHENTICATOR
    assert receiver.check(genuine).refusal is None  # the rewrite itself is faithful


def test_a_flipped_bit_in_the_authenticator_is_refused():
    sender, receiver, _ = pair()
    frame = bytearray(sender.frame(1, 2, MAC))
    tail = frame.index(lldpauth.OUI) + 4 + 16  # into the HMAC itself
    frame[tail] ^= 1
    assert receiver.check(bytes(frame)).refusal == lldpauth.BAD_AUTHENTICATOR


def test_stale_and_future_probes_are_refused():
    sender, receiver, clock = pair()
    old = sender.frame(1, 2, MAC)
    clock.now += lldpauth.MAX_AGE + 0.1
    assert receiver.check(old).refusal == lldpauth.STALE
    ahead = sender.frame(1, 2, MAC)
    clock.now -= lldpauth.MAX_AHEAD + 0.1
    assert receiver.check(ahead).refusal == lldpauth.FUTURE
    # within the window both ways: fine
    clock.now += 0.2
    assert receiver.check(ahead).refusal is None


def test_a_sweep_heard_by_every_neighbour_of_its_sender_is_no_replay():
    """One sweep leaves through all of a switch's ports at once: each switch
    next to it hears the same frame (in CI, the second and third were
    refused as forged replays and reported as identity events)."""
    sender, receiver, clock = pair()
    sweep = sender.frame(1, lldpauth.ANY_PORT, MAC)
    assert [receiver.check(sweep).refusal for _ in range(3)] == [None] * 3
    clock.now += lldpauth.MAX_AGE + 1
    assert receiver.check(sweep).refusal == lldpauth.STALE


def test_the_same_probe_heard_twice_is_a_replay():
    sender, receiver, clock = pair()
    frame = sender.frame(1, 2, MAC)
    assert receiver.check(frame).refusal is None
    clock.now += 1.0
    assert receiver.check(frame).refusal == lldpauth.REPLAYED
    # a new probe of the same port is not
    assert receiver.check(sender.frame(1, 2, MAC)).refusal is None


def test_what_it_remembers_against_replays_ages_out_with_the_window():
    sender, receiver, clock = pair()
    for _ in range(100):
        assert receiver.check(sender.frame(1, 2, MAC)).refusal is None
        clock.now += 0.9
    assert len(receiver._heard) <= lldpauth.MAX_AGE / 0.9 + 1


def test_a_probe_without_authenticator_and_unreadable_frames_are_refused():
    _, receiver, _ = pair()
    unsigned = LLDPPacket.lldp_packet(1, 2, MAC, 120)  # what OS-Ken sends
    assert receiver.check(unsigned).refusal == lldpauth.NO_AUTHENTICATOR
    head = b"\x01\x80\xc2\x00\x00\x0e" + bytes.fromhex("020000000001") + b"\x88\xcc"
    for body in (bytes(46),                                      # zero padding only
                 b"\x02\x07\x07dpid:\xff\xfe\xfd\x04\x05\x02\x00\x00\x00\x01",  # not text
                 (b"\x02\x16\x07dpid:000000000000000z\x04\x05\x02\x00\x00\x00\x01"
                  b"\x06\x02\x00\x78\x00\x00"),                   # not hex
                 b"\x02\x0a\x07dpid:00"):                         # truncated
        verdict = receiver.check(head + body)
        assert (verdict.refusal, verdict.claimed) == (lldpauth.UNREADABLE, "unreadable")
    assert receiver.check(b"\x00" * 14).refusal == lldpauth.UNREADABLE


def test_each_frame_is_the_packet_librarys_with_a_fresh_authenticator():
    """frame() builds each port's frame once and fills in the authenticator:
    byte for byte what OS-Ken's library writes, for a sweep too."""
    sender, _, clock = pair()
    for dpid, port, mac in ((1, 2, MAC), (0xFEDC_BA98_7654_3210, 7, "02:5d:b0:00:00:09"),
                            (3, lldpauth.ANY_PORT, MAC)):
        for _ in range(2):
            clock.now += 0.5
            frame = sender.frame(dpid, port, mac)
            dpid_read, port_read, info = lldpauth._own_claim(frame)
            assert (dpid_read, port_read) == (dpid, port)
            assert frame == lldpauth.build(dpid, port, mac, info)


@hypothesis.given(edits=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)),
                                 max_size=4),
                  cut=st.integers(80, 140))
@hypothesis.settings(max_examples=2000, deadline=None)
def test_the_quick_reading_of_own_frames_agrees_with_the_packet_library(edits, cut):
    """Frames near the controller's own (bytes changed, cut short or
    lengthened): the quick reading takes only what the library reads the
    same way, and leaves the rest to it."""
    frame = bytearray(Authenticator(KEY).frame(0x1234, 5, MAC) + bytes(40))
    for at, value in edits:
        if at < len(frame):
            frame[at] = value
    data = bytes(frame[:cut])
    quick = lldpauth._own_claim(data)
    if quick is not None:
        assert quick == lldpauth._library_claim(data)
    assert lldpauth._claim(data) == (quick or lldpauth._library_claim(data))


def test_the_quick_reading_takes_own_frames_and_nothing_else():
    own = Authenticator(KEY).frame(9, 4, MAC)
    assert lldpauth._own_claim(own) is not None
    os_ken_frame = bytes(LLDPPacket.lldp_packet(9, 4, MAC, 120))
    assert lldpauth._own_claim(os_ken_frame) is None           # no authenticator TLV
    assert lldpauth._claim(os_ken_frame) == (9, 4, None)        # the library reads it
    upper = own.replace(b"dpid:0000000000000009", b"dpid:000000000000000A")
    assert lldpauth._own_claim(upper) == lldpauth._library_claim(upper)


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        Authenticator(b"short")


# ---- a link counts once heard both ways ------------------------------------------

def test_one_direction_heard_is_not_a_link_both_are_announced_together_once():
    links = TwoWayLinks()
    a, b = os_ken_port(1), os_ken_port(2)
    assert links.heard(a, b) == ([], True)  # and the reverse is worth probing now
    assert not links.counts(Link(a, b))
    assert links.heard(a, b) == ([], True)  # again: still one way
    assert links.heard(b, a) == ([Link(b, a), Link(a, b)], False)
    assert links.counts(Link(a, b)) and links.counts(Link(b, a))
    assert links.heard(a, b) == ([], False)  # a refresh announces nothing
    assert links.heard(b, a) == ([], False)


def test_a_direction_lost_and_heard_again_makes_the_link_count_again():
    links = TwoWayLinks()
    a, b = os_ken_port(1), os_ken_port(2)
    links.heard(a, b)
    links.heard(b, a)
    links.link_down(Link(a, b))  # reaped
    assert not links.counts(Link(b, a))
    assert links.heard(a, b) == ([Link(a, b), Link(b, a)], False)


# ---- refused frames: counted, logged sparingly, reported per port every 10 s ---------

def test_every_refusal_counts_logs_thin_out_and_events_are_throttled_per_port():
    clock = Clock(100.0)
    refused = RefusedFrames(clock=clock)
    bad = lldpauth.Verdict(3, 9, lldpauth.BAD_AUTHENTICATOR)
    out = [refused.refused(1, 4, "02:00:00:00:00:04", bad) for _ in range(20)]
    assert refused.counts[lldpauth.BAD_AUTHENTICATOR] == refused.total() == 20
    assert [n for n, r in enumerate(out, 1) if r.log] == [1, 2, 4, 8, 16]
    events = [r.event for r in out if r.event]
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.dpid, event.port, event.mac, event.claimed) == (
        "lldp_forged", 1, 4, "02:00:00:00:00:04", "switch 0000000000000003 port 9")
    assert "bad authenticator" in event.detail
    # another port is reported at once; this one again after 10 s, with the count
    other = refused.refused(1, 5, "02:00:00:00:00:05", lldpauth.Verdict(None, None, "unreadable"))
    assert other.event is not None and other.event.claimed == "unreadable"
    clock.now += 9.9
    assert refused.refused(1, 4, "02:00:00:00:00:04", bad).event is None
    clock.now += 0.1
    again = refused.refused(1, 4, "02:00:00:00:00:04", bad).event
    assert again is not None and "21 refused from this port" in again.detail
    assert refused.total() == 23
