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
is a copy: a switch sends each probe once, to one port).

Chassis and port ids keep OS-Ken's format (`dpid:%016x`, port number as a
32-bit integer) so that captures read as before.

Pure: bytes and a clock in, a verdict out.
"""
from __future__ import annotations

import collections
import dataclasses
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
    def claimed(self) -> str:
        if self.dpid is None or self.port is None:
            return UNREADABLE
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
        port's own MAC)."""
        sent_ns = int(self._clock() * 1e9)
        nonce = self._nonce() & 0xFFFF_FFFF_FFFF_FFFF
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(lldp.LLDP_MAC_NEAREST_BRIDGE, hw_addr,
                                           ETH_TYPE_LLDP))
        pkt.add_protocol(lldp.lldp((
            lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                           chassis_id=f"{_CHASSIS_PREFIX}{dpid:016x}".encode()),
            lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT,
                        port_id=struct.pack("!I", port)),
            lldp.TTL(ttl=120),
            lldp.OrganizationallySpecific(
                oui=OUI, subtype=SUBTYPE,
                info=_INFO.pack(sent_ns, nonce, self._mac(dpid, port, sent_ns, nonce))),
            lldp.End())))
        pkt.serialize()
        return bytes(pkt.data)

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


def _claim(data: bytes) -> tuple[int, int, bytes | None] | None:
    """(dpid, port, authenticator TLV info or None) of an LLDP frame in the
    controller's format; None when it is not readable as one. OS-Ken's
    parser raises on broken TLVs in many ways (struct, index, unicode...):
    whatever it raises means unreadable."""
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
