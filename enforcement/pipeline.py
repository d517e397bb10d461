"""The OpenFlow pipeline every managed switch gets, and the cookie scheme.

Enforcement sits in the first table, at ingress, before learning and flooding,
so broadcast and unknown-unicast traffic obey it too. Forwarding comes after.
Cookies carry a namespace in their top 16 bits so the controller can find,
count and delete exactly its own flows (and leave foreign ones alone).
"""
from __future__ import annotations

TABLE_ENFORCE = 0
TABLE_FORWARD = 1

# Priority bands inside TABLE_ENFORCE.
PRIORITY_TABLE_MISS = 0
PRIORITY_BLOCK = 2000

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
