"""The OpenFlow pipeline every managed switch gets, and the cookie scheme.

Enforcement sits in the first tables, at ingress, before learning and
flooding, so broadcast and unknown-unicast traffic obey it too:

  table 0 (ingress)  drops and allow-lists: cutoff, blocks, quarantine,
                     anti-spoofing, in that order of precedence;
  table 1 (meter)    rate limits, for what table 0 let through;
  table 2 (forward)  learning-switch forwarding.

Separate tables keep actions composable: a block and a rate limit on the same
subscriber both hold without a rule for every combination.
Cookies carry a namespace in their top 16 bits so the controller can find,
count and delete exactly its own flows (and leave foreign ones alone).
"""
from __future__ import annotations

TABLE_ENFORCE = 0
TABLE_METER = 1
TABLE_FORWARD = 2

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
PRIORITY_ANTISPOOF_ALLOW = 2000
PRIORITY_ANTISPOOF_DENY = 1900

# Inside TABLE_METER: narrower limits above whole-subscriber ones.
PRIORITY_METER_NARROW = 2000
PRIORITY_METER_ALL = 1000

# Priority bands inside TABLE_FORWARD.
PRIORITY_LEARNED = 100

COOKIE_NAMESPACE_SHIFT = 48
COOKIE_NAMESPACE_MASK = 0xFFFF << COOKIE_NAMESPACE_SHIFT
COOKIE_SERIAL_MASK = (1 << COOKIE_NAMESPACE_SHIFT) - 1

# Namespaces: base pipeline, learned forwarding, enforcement.
NS_BASE = 0x5DB0
NS_FORWARD = 0x5DF0
NS_ENFORCE = 0x5DE0

COOKIE_BASE = NS_BASE << COOKIE_NAMESPACE_SHIFT
COOKIE_FORWARD = NS_FORWARD << COOKIE_NAMESPACE_SHIFT


def enforcement_cookie(serial: int) -> int:
    if not 0 < serial <= COOKIE_SERIAL_MASK:
        raise ValueError(f"enforcement serial {serial} out of range")
    return (NS_ENFORCE << COOKIE_NAMESPACE_SHIFT) | serial


def namespace_of(cookie: int) -> int:
    return (cookie & COOKIE_NAMESPACE_MASK) >> COOKIE_NAMESPACE_SHIFT
