"""DHCP server replies, read from a copied frame (DHCP snooping's input).

Pure: a frame's bytes in, as a packet-in carries them (the switch sends the
whole frame: controller/openflow/compiler.py asks for no buffering); a ServerReply,
or None, out. Only server-to-client messages are read: DHCPv4 from UDP 67
to 68 (RFC 2131, options RFC 2132) and DHCPv6 from UDP 547 to 546
(RFC 8415): they are what a binding is learned from, and what a rogue
server on a subscriber line would send.

The frame comes from the network, and on an untrusted port from the
adversary: every length is checked against the bytes that are there, and a
frame that is not a well-formed server reply gives None, never an exception.
IP fragments are not reassembled (a reply that needs them is not one a
server on the same segment sends).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import struct

DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT = 547, 546

_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8)
_UDP = 17

# DHCPv4 (RFC 2132 section 9.6): what a server sends.
V4_KINDS = {2: "OFFER", 5: "ACK", 6: "NAK"}
_MAGIC = b"\x63\x82\x53\x63"
_FIXED = 236                       # the BOOTP header, up to the magic cookie
_OPT_PAD, _OPT_END = 0, 255
_OPT_LEASE, _OPT_OVERLOAD, _OPT_TYPE, _OPT_SERVER_ID = 51, 52, 53, 54
_INFINITE = 0xFFFFFFFF             # RFC 2131 4.3.1 (and RFC 8415's lifetimes)

# DHCPv6 (RFC 8415 section 7.3 and 21).
V6_KINDS = {2: "ADVERTISE", 7: "REPLY", 10: "RECONFIGURE"}
_V6_CLIENTID, _V6_SERVERID, _V6_IA_NA, _V6_IA_TA, _V6_IAADDR = 1, 2, 3, 4, 5
_V6_STATUS = 13
_DUID_LLT, _DUID_LL = 1, 3
_HW_ETHERNET = 1


@dataclasses.dataclass(frozen=True)
class Lease:
    """An address the server gives, for seconds (math.inf: no end; 0: it
    ends now, as a DHCPv6 server withdraws one)."""
    ip: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class ServerReply:
    """A DHCP server's message to one client, as far as snooping needs it.

    kind:       OFFER, ACK, NAK (DHCPv4); ADVERTISE, REPLY, RECONFIGURE (v6)
    client_mac: who it is for: chaddr (v4); v6: the frame's destination,
                else the link-layer address in the client's DUID ("" if none)
    leases:     v4: the address given (yiaddr) with option 51's lease, on an
                OFFER or ACK that has both; v6: each IA_NA/IA_TA address
    server_id:  option 54's address (v4), the server DUID in hex (v6)
    eth_src:    the frame's source MAC (the server's, or a rogue's)
    offered:    the address it offers or gives, for a report ("" if none)
    """
    family: int
    kind: str
    client_mac: str
    leases: tuple[Lease, ...]
    server_id: str
    eth_src: str
    offered: str = ""
    client_duid: str = ""


def parse(frame: bytes) -> ServerReply | None:
    """The DHCP server reply a frame carries, or None."""
    try:
        return _parse(memoryview(frame))
    except (struct.error, ValueError, IndexError):
        return None  # a length that lied, an address that is none


def is_server_reply(frame: bytes) -> bool:
    """Cheap: whether the frame is UDP from a DHCP server port to a client
    port, well-formed or not (what the switch's rules match)."""
    found = _udp(memoryview(frame))
    return found is not None and found[2] is not None


def _parse(frame: memoryview) -> ServerReply | None:
    found = _udp(frame)
    if found is None:
        return None
    dst, src, udp = found
    if udp is None:
        return None
    family, payload = udp
    if family == 4:
        return _dhcp4(payload, src)
    return _dhcp6(payload, dst, src)


def _udp(frame: memoryview) -> tuple[str, str, tuple[int, memoryview] | None] | None:
    """(eth_dst, eth_src, (family, UDP payload) when it goes from a server
    port to a client port, else None), or None when no IP/UDP frame."""
    if len(frame) < 14:
        return None
    dst, src = _mac(frame[0:6]), _mac(frame[6:12])
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    offset = 14
    for _ in range(2):  # an 802.1Q tag, or two (QinQ)
        if ethertype not in _VLAN_TAGS:
            break
        (ethertype,) = struct.unpack_from("!H", frame, offset + 2)
        offset += 4
    if ethertype == _ETH_IPV4:
        if len(frame) < offset + 20 or frame[offset] >> 4 != 4:
            return None
        header = (frame[offset] & 0x0F) * 4
        (total,) = struct.unpack_from("!H", frame, offset + 2)
        (fragment,) = struct.unpack_from("!H", frame, offset + 6)
        if header < 20 or frame[offset + 9] != _UDP or fragment & 0x3FFF \
                or total < header + 8 or len(frame) < offset + total:
            return None
        family, udp, end = 4, offset + header, offset + total
        ports = (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)
    elif ethertype == _ETH_IPV6:
        if len(frame) < offset + 40 or frame[offset] >> 4 != 6:
            return None
        (length,) = struct.unpack_from("!H", frame, offset + 4)
        # Extension headers are not walked: a server's reply has none.
        if frame[offset + 6] != _UDP or len(frame) < offset + 40 + length or length < 8:
            return None
        family, udp, end = 6, offset + 40, offset + 40 + length
        ports = (DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT)
    else:
        return None
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    if (sport, dport) != ports:
        return dst, src, None
    if length < 8 or udp + length > end:
        return None
    return dst, src, (family, frame[udp + 8:udp + length])


def _dhcp4(msg: memoryview, eth_src: str) -> ServerReply | None:
    if len(msg) < _FIXED + 4 or msg[0] != 2 or msg[_FIXED:_FIXED + 4] != _MAGIC:
        return None
    htype, hlen = msg[1], msg[2]
    if htype != _HW_ETHERNET or hlen != 6:
        return None
    options = _options4(msg[_FIXED + 4:])
    overload = options.get(_OPT_OVERLOAD, b"\x00")[:1]
    # RFC 2131 4.1: options continue in 'file', then in 'sname'.
    if overload and overload[0] & 1:
        options = {**_options4(msg[108:236]), **options}
    if overload and overload[0] & 2:
        options = {**_options4(msg[44:108]), **options}
    message_type = options.get(_OPT_TYPE, b"")
    kind = V4_KINDS.get(message_type[0]) if len(message_type) == 1 else None
    if kind is None:
        return None
    yiaddr = ipaddress.IPv4Address(bytes(msg[16:20]))
    offered = "" if int(yiaddr) == 0 else str(yiaddr)
    leases: tuple[Lease, ...] = ()
    lease = options.get(_OPT_LEASE)
    if offered and lease is not None and len(lease) == 4 and kind != "NAK" \
            and not (yiaddr.is_multicast or yiaddr.is_loopback or int(yiaddr) == 0xFFFFFFFF):
        (seconds,) = struct.unpack("!I", lease)
        leases = (Lease(offered, math.inf if seconds == _INFINITE else float(seconds)),)
    server = options.get(_OPT_SERVER_ID)
    server_id = str(ipaddress.IPv4Address(server)) if server and len(server) == 4 else ""
    return ServerReply(4, kind, _mac(msg[28:34]), leases, server_id, eth_src,
                       offered=offered if kind != "NAK" else "")


def _options4(area: memoryview) -> dict[int, bytes]:
    """Code -> value; a code given twice is concatenated (RFC 3396)."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(area):
        code = area[i]
        if code == _OPT_END:
            break
        if code == _OPT_PAD:
            i += 1
            continue
        if i + 2 > len(area) or i + 2 + area[i + 1] > len(area):
            break  # a truncated option ends the area; what came before stands
        value = bytes(area[i + 2:i + 2 + area[i + 1]])
        found[code] = found.get(code, b"") + value
        i += 2 + area[i + 1]
    return found


def _dhcp6(msg: memoryview, eth_dst: str, eth_src: str) -> ServerReply | None:
    if len(msg) < 4:
        return None
    kind = V6_KINDS.get(msg[0])
    if kind is None:
        return None
    leases: list[Lease] = []
    client = server = b""
    for code, value in _options6(msg[4:]):
        if code == _V6_CLIENTID:
            client = bytes(value)
        elif code == _V6_SERVERID:
            server = bytes(value)
        elif code in (_V6_IA_NA, _V6_IA_TA):
            # IA_NA: IAID, T1, T2, then options; IA_TA: IAID, then options.
            leases += _addresses(value[12:] if code == _V6_IA_NA else value[4:])
    mac = eth_dst if _is_unicast(eth_dst) else _duid_mac(client)
    if not mac:
        return None
    return ServerReply(6, kind, mac, tuple(leases), server.hex(), eth_src,
                       offered=leases[0].ip if leases else "", client_duid=client.hex())


def _addresses(area: memoryview) -> list[Lease]:
    """The IAADDR options of one IA (RFC 8415 21.6), unless its status says
    it failed (NoAddrsAvail, NoBinding...: the IA then holds none)."""
    leases: list[Lease] = []
    for code, value in _options6(area):
        if code == _V6_STATUS and len(value) >= 2 and struct.unpack_from("!H", value)[0]:
            return []
        if code != _V6_IAADDR or len(value) < 24:
            continue
        address = ipaddress.IPv6Address(bytes(value[0:16]))
        if address.is_multicast or address.is_unspecified or address.is_loopback:
            continue
        # An address's own status (a failure) withdraws it too.
        inner = dict(_options6(value[24:]))
        status = inner.get(_V6_STATUS)
        if status is not None and len(status) >= 2 and struct.unpack_from("!H", status)[0]:
            continue
        valid = struct.unpack_from("!I", value, 20)[0]
        leases.append(Lease(str(address), math.inf if valid == _INFINITE else float(valid)))
    return leases


def _options6(area: memoryview) -> list[tuple[int, memoryview]]:
    found = []
    i = 0
    while i + 4 <= len(area):
        code, length = struct.unpack_from("!HH", area, i)
        if i + 4 + length > len(area):
            break  # truncated: what came before stands
        found.append((code, area[i + 4:i + 4 + length]))
        i += 4 + length
    return found


def _duid_mac(duid: bytes) -> str:
    """The Ethernet address in a link-layer DUID (DUID-LL, DUID-LLT), else ""."""
    if len(duid) >= 10 and duid[0:2] == struct.pack("!H", _DUID_LL) \
            and duid[2:4] == struct.pack("!H", _HW_ETHERNET):
        return _mac(memoryview(duid)[4:10])
    if len(duid) >= 14 and duid[0:2] == struct.pack("!H", _DUID_LLT) \
            and duid[2:4] == struct.pack("!H", _HW_ETHERNET):
        return _mac(memoryview(duid)[8:14])
    return ""


def _is_unicast(mac: str) -> bool:
    return not int(mac[0:2], 16) & 1


def _mac(raw: memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))
