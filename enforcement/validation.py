"""Checks an Apply request and turns it into a Decision, or says what to fix.

Pure: takes plain values (the API layer has already unpacked protobuf), raises
InvalidArgument with a message naming the field.
"""
from __future__ import annotations

import ipaddress
import re

from enforcement.errors import InvalidArgument
from enforcement.model import Decision, Subscriber, Violation

MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 2048
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]+$")


def parse_subscriber_ip(text: str) -> ipaddress.IPv4Address:
    if not text:
        raise InvalidArgument("subscriber.ip is required")
    try:
        # ipaddress rejects leading zeros, short forms ("10.1") and ranges.
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(
            f"subscriber.ip {text!r} is not an IP address; "
            "give a dotted-quad IPv4 address such as 10.0.0.1") from None
    if address.version != 4:
        raise InvalidArgument(
            f"subscriber.ip {text!r} is IPv6; only IPv4 subscribers are "
            "supported so far")
    if (address.is_unspecified or address.is_loopback or address.is_multicast
            or address.is_reserved or address.is_link_local
            or address == ipaddress.IPv4Address("255.255.255.255")):
        raise InvalidArgument(
            f"subscriber.ip {text} is not a unicast host address")
    return address


def parse_mac(text: str) -> str | None:
    if not text:
        return None
    mac = text.lower()
    if not _MAC.match(mac):
        raise InvalidArgument(
            f"subscriber.mac {text!r} is not a MAC address; "
            "use the colon form aa:bb:cc:dd:ee:ff")
    if int(mac[:2], 16) & 1:
        raise InvalidArgument(f"subscriber.mac {text} is a group address")
    return mac


def _identifier(name: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{name} is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(
            f"{name} is {len(value)} characters long; at most "
            f"{MAX_ID_LENGTH} are allowed")
    if not _PRINTABLE_ID.match(value):
        raise InvalidArgument(
            f"{name} may hold only printable ASCII without spaces")
    return value


def parse_scope(text: str, ip: ipaddress.IPv4Address) -> ipaddress.IPv4Network | None:
    """An optional prefix around the subscriber; whether the policy allows it
    is the service's call."""
    if not text:
        return None
    try:
        scope = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise InvalidArgument(
            f"scope {text!r} is not an IPv4 prefix with no host bits set ({exc})") from None
    if ip not in scope:
        raise InvalidArgument(f"scope {scope} does not contain subscriber.ip {ip}")
    return None if scope.prefixlen == 32 else scope


def validate_apply(*, request_id: str, case_id: str, ip: str, mac: str,
                   violation: Violation | None, reason: str, scope: str = "",
                   requested_action=None, duration: float | None = None,
                   until: float | None = None) -> Decision:
    """violation is None when the request left it unspecified or unknown;
    requested_action is an already checked policy.ActionSpec or None."""
    if violation is None:
        raise InvalidArgument(
            "violation is required: set one of the VIOLATION_* values other "
            "than VIOLATION_UNSPECIFIED")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgument(
            f"reason is {len(reason)} characters long; at most "
            f"{MAX_REASON_LENGTH} are allowed")
    address = parse_subscriber_ip(ip)
    return Decision(
        request_id=_identifier("request_id", request_id),
        case_id=_identifier("case_id", case_id),
        subscriber=Subscriber(ip=address, mac=parse_mac(mac)),
        violation=violation,
        reason=reason,
        scope=parse_scope(scope, address),
        requested_action=requested_action,
        duration=duration,
        until=until,
    )


def validate_id(name: str, value: str) -> str:
    return _identifier(name, value)
