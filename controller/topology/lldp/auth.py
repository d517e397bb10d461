"""LLDP frames only the controller's instances can write.

A link is what the controller hears when its own LLDP frame, sent out of
one switch port, comes back as a packet-in from another. Any subscriber can
send an LLDP frame too, saying it is any switch's port: OS-Ken believed it,
and one such frame invented a link, turned the subscriber's port (and the
claimed one) into uplinks and cut a neighbour off. So each frame the
controller sends carries a keyed authenticator in an organizationally
specific TLV (type 127):

    HMAC-SHA256(key, label | dpid | port | time | nonce)

time in nanoseconds since 1970 by the sender's clock, nonce random. The
key is the deployment's (controller/topology/lldp/key.py): the instances sharing a
store all verify what the leader sends, since they hear its probes too.

A frame is authentic when its authenticator is right for what it claims,
it was sent within MAX_AGE (a few LLDP periods: older is a replay of a
frame captured earlier) and not after now plus MAX_AHEAD (the instances'
clocks differ a little), and it was not heard before (the same frame twice
is a copy: a switch sends each probe once, to one port; a sweep, below, is
heard by every neighbour of its sender).

Chassis and port ids keep OS-Ken's format (`dpid:%016x`, port number as a
32-bit integer) so that captures read as before. A sweep (one frame sent
out of many ports of a switch at once: controller/topology/lldp/schedule.py)
names the port ANY_PORT: authentic, it says which switch sent it and
nothing about the port, so it makes no link, only a probe of the port it
was heard on.

Pure: bytes and a clock in, a verdict out.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable

from os_ken.lib.packet import ethernet, lldp, packet

ETH_TYPE_LLDP = 0x88CC
# Locally administered (second bit of the first octet): nobody's registered
# OUI, so no other LLDP agent gives this TLV a meaning.
OUI = b"\x02\x5d\xb0"
SUBTYPE = 1
_LABEL = b"sdn-enforcement lldp v1"
_INFO = struct.Struct("!QQ32s")       # time (ns), nonce, HMAC-SHA256
_SIGNED = struct.Struct("!QIQQ")      # dpid, port, time, nonce
_CHASSIS_PREFIX = "dpid:"
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_BYTES = frozenset(b"0123456789abcdefABCDEF")

# OpenFlow's OFPP_ANY: no port of the switch in particular (a sweep).
ANY_PORT = 0xFFFF_FFFF

MAX_AGE = 5.0    # seconds: LLDP goes out every 0.9 s, a packet-in may queue a while
MAX_AHEAD = 1.0  # seconds: instances' clocks differ a little (NTP keeps them close)
KEY_BYTES_MIN = 16

UNREADABLE = "unreadable"
NO_AUTHENTICATOR = "no authenticator"
BAD_AUTHENTICATOR = "bad authenticator"
STALE = "stale"
FUTURE = "from the future"
REPLAYED = "replayed"
# Authentic, but heard on (or claiming) a port the inventory declares a
# subscriber's line: a probe that reached the subscriber, carried to
# another port (controller/topology/lldp/discovery.py refuses it).
SUBSCRIBER_LINE = "subscriber line"
REASONS = (UNREADABLE, NO_AUTHENTICATOR, BAD_AUTHENTICATOR, STALE, FUTURE, REPLAYED,
           SUBSCRIBER_LINE)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a frame claims (dpid and port: None when unreadable) and why it
    was refused (None: authentic)."""
    dpid: int | None
    port: int | None
    refusal: str | None = None

    @property
    def sweep(self) -> bool:
        return self.port == ANY_PORT

    @property
    def claimed(self) -> str:
        if self.dpid is None or self.port is None:
            return UNREADABLE
        if self.sweep:
            return f"switch {self.dpid:016x} (a sweep of its ports)"
        return f"switch {self.dpid:016x} port {self.port}"


class Authenticator:
    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time,
                 nonce: Callable[[], int] = lambda: int.from_bytes(os.urandom(8), "big"),
                 max_age: float = MAX_AGE, max_ahead: float = MAX_AHEAD):
        if len(key) < KEY_BYTES_MIN:
            raise ValueError(f"an LLDP key needs {KEY_BYTES_MIN} bytes or more, "
                             f"not {len(key)}")
        self._key = key
        self._clock = clock
        self._nonce = nonce
        self._max_age_ns = int(max_age * 1e9)
        self._max_ahead_ns = int(max_ahead * 1e9)
        # Authentic frames heard, oldest first, until they age out of the
        # window (after that their time refuses them anyway). Only frames
        # with a right authenticator get in: a forger cannot grow it.
        self._heard: collections.OrderedDict[tuple, int] = collections.OrderedDict()

    def _mac(self, dpid: int, port: int, sent_ns: int, nonce: int) -> bytes:
        return hmac.new(self._key, _LABEL + _SIGNED.pack(dpid, port, sent_ns, nonce),
                        hashlib.sha256).digest()

    def frame(self, dpid: int, port: int, hw_addr: str) -> bytes:
        """A probe to send out of switch dpid's port (from hw_addr, the
        port's own MAC); port ANY_PORT: a sweep, to send out of several."""
        sent_ns = int(self._clock() * 1e9)
        nonce = self._nonce() & 0xFFFF_FFFF_FFFF_FFFF
        head, tail = _around_authenticator(dpid, port, hw_addr)
        return head + _INFO.pack(sent_ns, nonce, self._mac(dpid, port, sent_ns, nonce)) + tail

    def check(self, data: bytes) -> Verdict:
        claim = _claim(data)
        if claim is None:
            return Verdict(None, None, UNREADABLE)
        dpid, port, info = claim
        if info is None:
            return Verdict(dpid, port, NO_AUTHENTICATOR)
        if len(info) != _INFO.size:
            return Verdict(dpid, port, BAD_AUTHENTICATOR)
        sent_ns, nonce, mac = _INFO.unpack(info)
        if not hmac.compare_digest(mac, self._mac(dpid, port, sent_ns, nonce)):
            return Verdict(dpid, port, BAD_AUTHENTICATOR)
        now_ns = int(self._clock() * 1e9)
        if sent_ns < now_ns - self._max_age_ns:
            return Verdict(dpid, port, STALE)
        if sent_ns > now_ns + self._max_ahead_ns:
            return Verdict(dpid, port, FUTURE)
        if port == ANY_PORT:
            # A sweep leaves through every port at once, so every switch
            # next to the sender hears the same frame: not a replay. It
            # makes no link, only a probe of the port it is heard on (each
            # probe single-use), so a copied sweep gains nothing.
            return Verdict(dpid, port)
        self._forget_before(now_ns - self._max_age_ns)
        key = (dpid, port, sent_ns, nonce)
        if key in self._heard:
            return Verdict(dpid, port, REPLAYED)
        self._heard[key] = sent_ns
        return Verdict(dpid, port)

    def _forget_before(self, oldest_ns: int) -> None:
        # Frames arrive roughly in the order they were sent; one that came
        # late stays a little longer, which only costs memory for a while.
        while self._heard:
            key, sent_ns = next(iter(self._heard.items()))
            if sent_ns >= oldest_ns:
                return
            del self._heard[key]


def build(dpid: int, port: int, hw_addr: str, info: bytes) -> bytes:
    """A probe as OS-Ken's packet library writes it: the layout every frame
    keeps (frame() fills in only the authenticator)."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(lldp.LLDP_MAC_NEAREST_BRIDGE, hw_addr,
                                       ETH_TYPE_LLDP))
    pkt.add_protocol(lldp.lldp((
        lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                       chassis_id=f"{_CHASSIS_PREFIX}{dpid:016x}".encode()),
        lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=struct.pack("!I", port)),
        lldp.TTL(ttl=120),
        lldp.OrganizationallySpecific(oui=OUI, subtype=SUBTYPE, info=info),
        lldp.End())))
    pkt.serialize()
    return bytes(pkt.data)


# Building the frame with the packet library took most of a probe's cost
# to send: each port's frame is built once, and only its authenticator
# changes. Bounded: link ports are what is probed on its own all the time.
@functools.lru_cache(maxsize=8192)
def _around_authenticator(dpid: int, port: int, hw_addr: str) -> tuple[bytes, bytes]:
    frame = build(dpid, port, hw_addr, bytes(_INFO.size))
    end = len(frame) - _END_TLV_SIZE
    return frame[:end - _INFO.size], frame[end:]


# The controller's own frames, byte by byte (what build() writes): the
# typelen of each TLV (type << 9 | length), and where each field sits.
_END_TLV_SIZE = 2
_OWN = struct.Struct("!12xH H B5s16s H BI H2x H3sB48s H")
_OWN_TYPELENS = (0x88CC, 1 << 9 | 22, 2 << 9 | 5, 3 << 9 | 2, 127 << 9 | 52, 0)
_CHASSIS_SUBTYPE, _PORT_SUBTYPE = 7, 2   # locally assigned; port component


def _own_claim(data: bytes) -> tuple[int, int, bytes] | None:
    """What _claim() finds in a frame laid out exactly as the controller
    writes them, read in one unpack; None for any other layout (the
    packet library reads those). Reading its own frames with the packet
    library took most of the cost of hearing one."""
    if len(data) < _OWN.size:
        return None
    (ethertype, chassis_tl, chassis_sub, prefix, digits, port_tl, port_sub, port,
     ttl_tl, org_tl, oui, subtype, info, end_tl) = _OWN.unpack_from(data)
    if ((ethertype, chassis_tl, port_tl, ttl_tl, org_tl, end_tl) != _OWN_TYPELENS
            or chassis_sub != _CHASSIS_SUBTYPE or port_sub != _PORT_SUBTYPE
            or prefix != _CHASSIS_PREFIX.encode() or oui != OUI or subtype != SUBTYPE
            or not set(digits) <= _HEX_BYTES):
        return None
    return int(digits, 16), port, info


def _claim(data: bytes) -> tuple[int, int, bytes | None] | None:
    """(dpid, port, authenticator TLV info or None) of an LLDP frame in the
    controller's format; None when it is not readable as one. OS-Ken's
    parser raises on broken TLVs in many ways (struct, index, unicode...):
    whatever it raises means unreadable."""
    own = _own_claim(data)
    return own if own is not None else _library_claim(data)


def _library_claim(data: bytes) -> tuple[int, int, bytes | None] | None:
    """_claim() through OS-Ken's packet library: any layout it reads."""
    try:
        pkt = packet.Packet(data)
        frame = pkt.get_protocol(lldp.lldp)
        if frame is None or len(frame.tlvs) < 2:
            return None
        chassis, port_id = frame.tlvs[0], frame.tlvs[1]
        if not (isinstance(chassis, lldp.ChassisID) and isinstance(port_id, lldp.PortID)
                and chassis.subtype == lldp.ChassisID.SUB_LOCALLY_ASSIGNED
                and port_id.subtype == lldp.PortID.SUB_PORT_COMPONENT
                and len(port_id.port_id) == 4):
            return None
        text = chassis.chassis_id.decode("ascii")
        digits = text[len(_CHASSIS_PREFIX):]
        if (not text.startswith(_CHASSIS_PREFIX) or len(digits) != 16
                or not set(digits) <= _HEX):
            return None
        dpid = int(digits, 16)
        (port,) = struct.unpack("!I", port_id.port_id)
        info = next((tlv.info for tlv in frame.tlvs
                     if isinstance(tlv, lldp.OrganizationallySpecific)
                     and tlv.oui == OUI and tlv.subtype == SUBTYPE), None)
        return dpid, port, info
    except Exception:  # anything a forged frame makes the parser raise
        return None
