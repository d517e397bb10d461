"""The domain's rules for what a request names (addresses, prefixes, MACs,
identifiers, reasons), and an Apply request's fields as a Decision.

Pure: takes plain values (enforcement.api.requests unpacks the protobuf and
calls these), raises InvalidArgument with a message naming the field.
"""
from __future__ import annotations

import ipaddress
import re

from enforcement.domain.errors import InvalidArgument
from enforcement.domain.model import Decision, Subscriber, Violation

MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 2048
# The longest IPv6 text is 45 characters; anything longer is not an address.
MAX_ADDRESS_LENGTH = 64
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]+$")
_IPV4 = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:]{2,39}$")
_PREFIX_LENGTH = re.compile(r"^(0|[1-9][0-9]?|1[0-2][0-9])$")


def shown(text: str, limit: int = 64) -> str:
    """A value quoted back in an error message, never the whole of a huge one."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_ip(text: str, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4 address in dotted-quad form or an IPv6 address in plain hex
    form. The odd forms that resolvers and inet_aton accept and that
    different tools read differently are refused: leading zeros, fewer than
    four parts, hex or octal parts, zone indexes (fe80::1%eth0), IPv4 inside
    IPv6 (::ffff:10.0.0.1), surrounding spaces."""
    if not text:
        raise InvalidArgument(f"{field} is required")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise InvalidArgument(f"{field} is {len(text)} characters long; "
                              "no IP address is longer than 45")
    example = "give a dotted-quad IPv4 address such as 10.0.0.1"
    if "%" in text:
        raise InvalidArgument(f"{field} {shown(text)} has a zone index; "
                              "give the address without %zone")
    if ":" in text and "." in text:
        raise InvalidArgument(f"{field} {shown(text)} writes an IPv4 address inside "
                              "IPv6; give the IPv4 address itself")
    if _IPV4.fullmatch(text):
        try:
            # ipaddress refuses leading zeros and octets above 255.
            return ipaddress.IPv4Address(text)
        except ValueError as exc:
            raise InvalidArgument(f"{field} {shown(text)} is not an IPv4 address "
                                  f"({exc}); {example}") from None
    if _IPV6.fullmatch(text) and ":" in text:
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError as exc:
            raise InvalidArgument(f"{field} {shown(text)} is not an IPv6 address "
                                  f"({exc})") from None
        if address.ipv4_mapped is not None:
            raise InvalidArgument(f"{field} {shown(text)} is an IPv4-mapped address; "
                                  f"give the IPv4 address {address.ipv4_mapped}")
        return address
    raise InvalidArgument(f"{field} {shown(text)} is not an IP address; {example}")


def parse_subscriber_ip(text: str, field: str = "subscriber.ip"
                        ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A subscriber's unicast address, either family. A link-local IPv6
    address is refused: it names a host only on one link, and a decision
    must name the subscriber anywhere (give its global address)."""
    address = parse_ip(text, field)
    if (address.is_unspecified or address.is_loopback or address.is_multicast
            or address.is_reserved or address.is_link_local
            or address == ipaddress.IPv4Address("255.255.255.255")):
        raise InvalidArgument(f"{field} {address} is not a unicast host address"
                              + ("; give its global IPv6 address"
                                 if address.version == 6 and address.is_link_local else ""))
    return address


def parse_prefix(text: str, field: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or ADDRESS/LENGTH of either family with no host bits set;
    no netmask forms (10.0.0.0/255.0.0.0) and no padded lengths (/08)."""
    if len(text) > MAX_ADDRESS_LENGTH:
        raise InvalidArgument(f"{field} is {len(text)} characters long; "
                              "no prefix is longer than 49")
    address_text, slash, length = text.partition("/")
    address = parse_ip(address_text, field)
    network_type = ipaddress.IPv4Network if address.version == 4 else ipaddress.IPv6Network
    if not slash:
        return network_type(address)
    top = address.max_prefixlen
    if not _PREFIX_LENGTH.fullmatch(length) or int(length) > top:
        raise InvalidArgument(f"{field} {shown(text)}: the prefix length must be "
                              f"a number from 0 to {top} without leading zeros")
    try:
        return network_type(f"{address}/{length}", strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"{field} {shown(text)} has host bits set ({exc})") from None


def parse_filter_ip(text: str, field: str) -> str:
    """An optional address filter: empty, or the address in canonical form."""
    return str(parse_ip(text, field)) if text else ""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def parse_reason(text: str, field: str = "reason") -> str:
    """Free text for people, shown in tables and terminals: any length up to
    the limit, but no control characters (no terminal escapes in the audit
    log); tabs and newlines are fine."""
    bounded(text, field, MAX_REASON_LENGTH)
    if _CONTROL.search(text):
        raise InvalidArgument(f"{field} holds control characters; "
                              "only printable text, tabs and newlines are allowed")
    return text


def bounded(text: str, field: str, limit: int) -> str:
    if len(text) > limit:
        raise InvalidArgument(f"{field} is {len(text)} characters long; "
                              f"at most {limit} are allowed")
    return text


def parse_mac(text: str) -> str | None:
    if not text:
        return None
    mac = text.lower()
    if len(mac) != 17 or not _MAC.fullmatch(mac):
        raise InvalidArgument(
            f"subscriber.mac {shown(text)} is not a MAC address; "
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
    if not _PRINTABLE_ID.fullmatch(value):
        raise InvalidArgument(
            f"{name} may hold only printable ASCII without spaces")
    return value


def parse_scope(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address
                ) -> ipaddress.IPv4Network | None:
    """An optional prefix around an IPv4 subscriber; whether the policy
    allows it is the service's call."""
    if not text:
        return None
    scope = parse_prefix(text, "scope")
    if ip.version == 6 or scope.version == 6:
        raise InvalidArgument(
            f"scope {shown(text)}: scopes are IPv4 prefixes around an IPv4 subscriber; "
            "a decision on an IPv6 address covers the subscriber's whole identity "
            "(all its addresses) already, leave scope empty")
    if ip not in scope:
        raise InvalidArgument(f"scope {scope} does not contain subscriber.ip {ip}")
    assert isinstance(scope, ipaddress.IPv4Network)
    return None if scope.prefixlen == 32 else scope


def validate_apply(*, request_id: str, case_id: str, ip: str, mac: str,
                   violation: Violation | None, reason: str, scope: str = "",
                   requested_action=None, duration: float | None = None,
                   until: float | None = None) -> Decision:
    """violation is None when the request left it unspecified or unknown;
    requested_action is an ActionSpec the policy already checked, or None."""
    if violation is None:
        raise InvalidArgument(
            "violation is required: set one of the VIOLATION_* values other "
            "than VIOLATION_UNSPECIFIED")
    reason = parse_reason(reason)
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
