"""DHCP server replies read from copied frames (controller/topology/dhcp/replies.py).

Frames are built with OS-Ken's packet library (another implementation than
the parser's), and by hand where it cannot build them (DHCPv6's nested
options, options overloaded into 'file')."""
import math
import struct

import pytest
from os_ken.lib.packet import dhcp6, ethernet, ipv6, packet, udp

from controller.topology.dhcp import replies as dhcpsnoop
from controller.topology.dhcp.replies import Lease
from tests.frames import CLIENT, DISCOVER, NAK, OFFER, SERVER, v4_frame


def opt6(code, value: bytes) -> bytes:
    return struct.pack("!HH", code, len(value)) + value


def iaaddr(address, valid, preferred=None, status=None) -> bytes:
    import ipaddress
    inner = opt6(13, struct.pack("!H", status) + b"failed") if status is not None else b""
    return opt6(5, ipaddress.IPv6Address(address).packed
                + struct.pack("!II", preferred if preferred is not None else valid, valid)
                + inner)


def ia_na(*addresses, status=None) -> bytes:
    inner = b"".join(addresses)
    if status is not None:
        inner += opt6(13, struct.pack("!H", status) + b"no")
    return opt6(3, struct.pack("!III", 1, 60, 90) + inner)


def v6_frame(msg_type=7, *options: bytes, dst=CLIENT, sport=547, dport=546,
             duid=b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x01"):
    body = opt6(1, duid) + opt6(2, b"\x00\x03\x00\x01" + bytes(6)) + b"".join(options)
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst, src=SERVER, ethertype=0x86DD))
    pkt.add_protocol(ipv6.ipv6(src="fe80::fd", dst="fe80::1", nxt=17))
    pkt.add_protocol(udp.udp(src_port=sport, dst_port=dport))
    pkt.add_protocol(dhcp6.dhcp6(msg_type, dhcp6.options(
        [dhcp6.option(code, value, len(value)) for code, value in _split6(body)]),
        transaction_id=7))
    pkt.serialize()
    return bytes(pkt.data)


def _split6(body: bytes):
    i = 0
    while i < len(body):
        code, length = struct.unpack_from("!HH", body, i)
        yield code, body[i + 4:i + 4 + length]
        i += 4 + length


def test_an_ack_gives_the_client_its_address_for_the_lease():
    reply = dhcpsnoop.parse(v4_frame())
    assert reply is not None
    assert (reply.family, reply.kind, reply.client_mac) == (4, "ACK", CLIENT)
    assert reply.leases == (Lease("10.0.0.101", 120.0),)
    assert (reply.server_id, reply.eth_src, reply.offered) == ("10.0.0.253", SERVER,
                                                               "10.0.0.101")


def test_offers_naks_and_infinite_leases():
    offer = dhcpsnoop.parse(v4_frame(OFFER))
    assert offer.kind == "OFFER" and offer.offered == "10.0.0.101"
    nak = dhcpsnoop.parse(v4_frame(NAK, yiaddr="0.0.0.0", lease=None))
    assert (nak.kind, nak.client_mac, nak.leases, nak.offered) == ("NAK", CLIENT, (), "")
    forever = dhcpsnoop.parse(v4_frame(lease=0xFFFFFFFF))
    assert forever.leases == (Lease("10.0.0.101", math.inf),)


def test_an_ack_without_a_lease_or_an_address_binds_nothing():
    # The answer to a DHCPINFORM: options only, no address given.
    assert dhcpsnoop.parse(v4_frame(lease=None)).leases == ()
    assert dhcpsnoop.parse(v4_frame(yiaddr="0.0.0.0")).leases == ()


def test_client_messages_and_other_udp_are_not_server_replies():
    assert dhcpsnoop.parse(v4_frame(DISCOVER, sport=68, dport=67, op=1)) is None
    assert dhcpsnoop.parse(v4_frame(sport=53, dport=68)) is None
    assert dhcpsnoop.parse(v4_frame(op=1)) is None  # BOOTREQUEST on server ports
    assert dhcpsnoop.parse(v4_frame(DISCOVER)) is None  # a client's type from a server
    assert not dhcpsnoop.is_server_reply(v4_frame(sport=68, dport=67))
    assert dhcpsnoop.is_server_reply(v4_frame())


def test_a_vlan_tagged_reply_is_read_through_its_tag():
    assert dhcpsnoop.parse(v4_frame(tag=10)).leases == (Lease("10.0.0.101", 120.0),)


def test_options_overloaded_into_the_file_field_are_read():
    frame = bytearray(v4_frame(lease=None, extra=[(52, b"\x01")]))
    dhcp_start = 14 + 20 + 8
    file_area = bytes([51, 4]) + struct.pack("!I", 300) + b"\xff"
    frame[dhcp_start + 108:dhcp_start + 108 + len(file_area)] = file_area
    assert dhcpsnoop.parse(bytes(frame)).leases == (Lease("10.0.0.101", 300.0),)


@pytest.mark.parametrize("cut", [0, 10, 14, 30, 41, 42, 100, 250, 279])
def test_truncated_and_garbled_frames_give_nothing_and_never_raise(cut):
    frame = v4_frame()
    assert dhcpsnoop.parse(frame[:cut]) is None
    garbled = bytearray(frame)
    garbled[cut % len(garbled)] ^= 0xFF
    dhcpsnoop.parse(bytes(garbled))  # whatever it says, it says it without raising


def test_lengths_that_lie_are_not_followed():
    frame = bytearray(v4_frame())
    struct.pack_into("!H", frame, 14 + 2, 60000)  # IPv4 total length beyond the frame
    assert dhcpsnoop.parse(bytes(frame)) is None
    frame = bytearray(v4_frame())
    struct.pack_into("!H", frame, 14 + 20 + 4, 4)  # a UDP length shorter than its header
    assert dhcpsnoop.parse(bytes(frame)) is None
    # An option whose length runs past the end: what came before it stands.
    frame = bytearray(v4_frame(extra=[(12, b"host")]))
    assert frame[-7:] == b"\x0c\x04host\xff"
    frame[-6] = 0x30
    assert dhcpsnoop.parse(bytes(frame)).leases == (Lease("10.0.0.101", 120.0),)


def test_fragments_are_not_read():
    frame = bytearray(v4_frame())
    struct.pack_into("!H", frame, 14 + 6, 0x2000)  # more fragments
    assert dhcpsnoop.parse(bytes(frame)) is None


def test_a_dhcpv6_reply_gives_each_address_of_its_ias():
    reply = dhcpsnoop.parse(v6_frame(7, ia_na(iaaddr("2001:db8::101", 3600),
                                              iaaddr("2001:db8::102", 0xFFFFFFFF))))
    assert (reply.family, reply.kind, reply.client_mac) == (6, "REPLY", CLIENT)
    assert reply.leases == (Lease("2001:db8::101", 3600.0), Lease("2001:db8::102", math.inf))
    assert reply.client_duid == "00030001020000000001"
    assert reply.offered == "2001:db8::101"


def test_a_dhcpv6_ia_that_failed_gives_no_address():
    assert dhcpsnoop.parse(v6_frame(7, ia_na(iaaddr("2001:db8::101", 3600),
                                             status=2))).leases == ()
    assert dhcpsnoop.parse(v6_frame(7, ia_na(iaaddr("2001:db8::101", 3600,
                                                    status=3)))).leases == ()


def test_a_withdrawn_dhcpv6_address_has_no_lifetime_left():
    reply = dhcpsnoop.parse(v6_frame(7, ia_na(iaaddr("2001:db8::101", 0))))
    assert reply.leases == (Lease("2001:db8::101", 0.0),)


def test_a_multicast_dhcpv6_frame_takes_the_client_from_its_link_layer_duid():
    reply = dhcpsnoop.parse(v6_frame(7, ia_na(iaaddr("2001:db8::101", 60)),
                                     dst="33:33:00:01:00:02"))
    assert reply.client_mac == "02:00:00:00:00:01"
    llt = b"\x00\x01\x00\x01" + b"\x11\x22\x33\x44" + bytes.fromhex("0200000000aa")
    reply = dhcpsnoop.parse(v6_frame(7, dst="33:33:00:01:00:02", duid=llt))
    assert reply.client_mac == "02:00:00:00:00:aa"
    # No link-layer DUID (DUID-EN) and no unicast destination: nobody to bind.
    assert dhcpsnoop.parse(v6_frame(7, dst="33:33:00:01:00:02",
                                    duid=b"\x00\x02\x00\x00\x00\x09abc")) is None


def test_dhcpv6_client_messages_are_not_server_replies():
    assert dhcpsnoop.parse(v6_frame(3, sport=546, dport=547)) is None  # Request
    assert dhcpsnoop.parse(v6_frame(3)) is None  # a client's type from a server port
    assert dhcpsnoop.parse(v6_frame(2)).kind == "ADVERTISE"


def test_random_damage_never_raises():
    import random
    rng = random.Random(23)
    frames = [v4_frame(), v4_frame(NAK, lease=None), v4_frame(tag=5),
              v6_frame(7, ia_na(iaaddr("2001:db8::101", 60)))]
    for _ in range(3000):
        frame = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 8)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        dhcpsnoop.parse(bytes(frame[:rng.randint(0, len(frame))]))
        dhcpsnoop.parse(bytes(frame))
