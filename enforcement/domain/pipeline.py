"""The OpenFlow pipeline every managed switch gets, and the cookie scheme.

Enforcement sits in the first tables, at ingress, before learning and
flooding, so broadcast and unknown-unicast traffic obey it too:

  table 0 (ingress)  drops and allow-lists: cutoff, blocks, quarantine,
                     anti-spoofing, in that order of precedence;
  table 1 (meter)    rate limits, for what table 0 let through;
  table 2 (learn)    known sources pass; a copy of what the controller must
                     learn from (a new source, a new address) goes to it
                     through the port's learning meter; LLDP goes to it
                     (through that meter from an access port) and no
                     further;
  table 3 (forward)  toward located hosts, installed ahead of traffic;
  table 4 (flood)    which ports may flood (tree links, settled access
                     ports through their storm-control meter);
  table 5 (flood out) the flood set: access ports and tree links, less the
                     ports an enforcement closes at egress.

Tables 2-5 are the data plane (controller/openflow/dataplane.py): it works with the
controller gone, and bounds in the switch what reaches the controller.

Separate tables keep actions composable: a block and a rate limit on the same
subscriber both hold without a rule for every combination.
Cookies carry a namespace in their top 16 bits so the controller can find,
count and delete exactly its own flows (and leave foreign ones alone).
"""
from __future__ import annotations

TABLE_ENFORCE = 0
TABLE_METER = 1
TABLE_LEARN = 2
TABLE_FORWARD = 3
TABLE_FLOOD = 4
TABLE_FLOOD_OUT = 5

PRIORITY_TABLE_MISS = 0

# Priority bands inside TABLE_ENFORCE: a higher band wins where they overlap.
# A cutoff beats everything; a quarantine's allow-list beats blocks (the
# portal stays reachable) but its deny beats a block's exceptions; blocks beat
# the anti-spoofing allow-list, which only lets the genuine source through.
PRIORITY_CUTOFF = 4000
PRIORITY_QUARANTINE_ALLOW = 3500
PRIORITY_QUARANTINE_DENY = 3400
PRIORITY_BLOCK_EXCEPTION = 3100
PRIORITY_BLOCK = 3000
# Anti-spoofing, from the subscriber's port. Over IPv6 a genuine source is not
# enough: a neighbour advertisement must also name one of its own addresses
# (above the guard), and router advertisements, redirects, other
# advertisements and DHCPv6 server messages are dropped whatever their source
# (the guard, above the source allow-list). The rest of the port falls to
# the deny.
PRIORITY_ANTISPOOF_ND_ALLOW = 2200
PRIORITY_ANTISPOOF_GUARD = 2100
PRIORITY_ANTISPOOF_ALLOW = 2000
PRIORITY_ANTISPOOF_DENY = 1900

# Inside TABLE_METER: narrower limits above whole-subscriber ones.
PRIORITY_METER_NARROW = 2000
PRIORITY_METER_ALL = 1000

# Priority bands of the data plane (tables 2-5).
PRIORITY_LEARNED = 100

# Meter ids: enforcement meters are numbered by enforcement serial, from 1;
# the data plane's per-port meters live far above them (port number added),
# and the switch-wide cap on packet-ins is OpenFlow's controller meter.
METER_DATAPLANE_BASE = 0xF000_0000
METER_LEARN_BASE = 0xF000_0000
METER_STORM_BASE = 0xF800_0000
METER_CONTROLLER = 0xFFFF_FFFE  # OFPM_CONTROLLER (0xFFFFFFFD is OFPM_SLOWPATH)
# What the probe catch rules return to the controller (enforcement/domain/
# probes.py): one switch-wide meter, so frames a subscriber addresses to the
# probe MAC cost the controller no more than it and nobody's learning. The
# top of the learning range: no port is numbered 0x07FFFFFF.
METER_PROBE = 0xF7FF_FFFF

COOKIE_NAMESPACE_SHIFT = 48
COOKIE_NAMESPACE_MASK = 0xFFFF << COOKIE_NAMESPACE_SHIFT
COOKIE_SERIAL_MASK = (1 << COOKIE_NAMESPACE_SHIFT) - 1

# Namespaces: base pipeline, data plane, known hosts, enforcement. A known
# host's flows carry its IPv4 address in the serial bits, so a restarted
# controller reads the host table back from its switches.
NS_BASE = 0x5DB0
NS_FORWARD = 0x5DF0
NS_HOST = 0x5DA0
NS_ENFORCE = 0x5DE0

COOKIE_BASE = NS_BASE << COOKIE_NAMESPACE_SHIFT
COOKIE_FORWARD = NS_FORWARD << COOKIE_NAMESPACE_SHIFT


def enforcement_cookie(serial: int) -> int:
    if not 0 < serial <= COOKIE_SERIAL_MASK:
        raise ValueError(f"enforcement serial {serial} out of range")
    return (NS_ENFORCE << COOKIE_NAMESPACE_SHIFT) | serial


def is_enforcement_meter(meter_id: int) -> bool:
    return 0 < meter_id < METER_DATAPLANE_BASE


def host_cookie(ipv4: int) -> int:
    return (NS_HOST << COOKIE_NAMESPACE_SHIFT) | ipv4


def namespace_of(cookie: int) -> int:
    return (cookie & COOKIE_NAMESPACE_MASK) >> COOKIE_NAMESPACE_SHIFT
