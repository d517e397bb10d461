"""The optional static inventory (`--inventory FILE`): subscriber accounts
with their addresses pinned to an access switch and port.

    [[subscriber]]
    account = "ACME-0001"          # the provider's account name
    ip = "10.0.0.1"
    ipv6 = ["2001:db8:1::5", "2001:db8:1::/64"]   # optional: addresses, prefixes
    mac = "00:00:00:00:00:01"      # optional
    switch = "0000000000000002"    # datapath id, as shown everywhere (or a number)
    port = 1

A pinned subscriber is located at its pinned port from the start, before it
sends anything, and stays there: seeing any of its addresses elsewhere is
logged, not believed (an inventory is the provider's own record of where a
line is). `ip` is required for now, even for a subscriber named by IPv6
(an IPv6-only line is a later change). `ipv6` lists global IPv6 addresses
and prefixes (its /64, a delegated /56): no link-local, multicast or IPv4;
no two entries may share an address or overlap. Pure: loading and checking
only.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import pathlib

from enforcement.domain import tomlfile
from enforcement.domain.errors import InvalidArgument
from enforcement.domain.validation import parse_mac, parse_prefix, parse_subscriber_ip

_FIELDS = {"account", "ip", "ipv6", "mac", "switch", "port"}
# Each address or prefix becomes rules on the subscriber's switch.
MAX_IPV6_PER_SUBSCRIBER = 16
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_MULTICAST = ipaddress.IPv6Network("ff00::/8")


class InventoryError(ValueError):
    """The inventory file is wrong; the message names the entry and field."""


@dataclasses.dataclass(frozen=True)
class Pinned:
    account: str
    ip: str
    mac: str | None
    dpid: int
    port: int
    # Canonical text: a single address without "/128", a prefix with its length.
    ipv6: tuple[str, ...] = ()


def _dpid(value, where: str) -> int:
    if isinstance(value, bool):
        raise InventoryError(f"{where}.switch must be a datapath id")
    if isinstance(value, int):
        dpid = value
    elif isinstance(value, str) and 0 < len(value) <= 16:
        try:
            dpid = int(value, 16)
        except ValueError:
            raise InventoryError(f"{where}.switch {value!r} is not a hex datapath id") from None
    else:
        raise InventoryError(f"{where}.switch must be a datapath id (hex text or a number)")
    if not 0 < dpid < 2**64:
        raise InventoryError(f"{where}.switch is out of range")
    return dpid


def _ipv6(value, where: str) -> tuple[str, ...]:
    field = f"{where}.ipv6"
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InventoryError(f"{field} must be a list of IPv6 addresses and prefixes, "
                             'for example ["2001:db8:1::5", "2001:db8:1::/64"]')
    if len(value) > MAX_IPV6_PER_SUBSCRIBER:
        raise InventoryError(f"{field} lists {len(value)} entries; "
                             f"at most {MAX_IPV6_PER_SUBSCRIBER}")
    found: list[str] = []
    for n, text in enumerate(value):
        item = f"{field}[{n}]"
        try:
            network = parse_prefix(text, item)
        except InvalidArgument as exc:
            raise InventoryError(str(exc)) from None
        why = None
        if not isinstance(network, ipaddress.IPv6Network):
            why = "is IPv4; give it in ip, and only IPv6 here"
        elif network.overlaps(_LINK_LOCAL):
            why = ("is link-local (fe80::/10), which names no subscriber beyond its own "
                   "link; give global addresses and prefixes")
        elif network.overlaps(_MULTICAST):
            why = "is multicast (ff00::/8)"
        elif (network.network_address.is_reserved or network.network_address.is_loopback
              or network.network_address.is_unspecified):
            why = "is not a unicast address or prefix"
        if why:
            raise InventoryError(f"{item} {text!r} {why}")
        found.append(str(network.network_address) if network.prefixlen == 128
                     else str(network))
    return tuple(dict.fromkeys(found))


def _no_shared_ipv6(pinned: list[Pinned]) -> None:
    """Sorting and one sweep, not every pair (an ISP's inventory is large).
    Prefixes either nest or are apart: sorted by first address, the wider
    first, one overlaps an earlier one only by lying inside the last prefix
    that lay inside no other, so that one is the only one to compare with."""
    spans = sorted(((ipaddress.IPv6Network(text), n, text)
                    for n, p in enumerate(pinned) for text in p.ipv6),
                   key=lambda span: (span[0].network_address, span[0].prefixlen))
    reach: tuple[ipaddress.IPv6Network, int, str] | None = None
    for network, owner, text in spans:
        if reach is not None and network.network_address <= reach[0].broadcast_address:
            if reach[1] != owner:
                (a, a_text), (b, b_text) = sorted([(reach[1], reach[2]), (owner, text)])
                raise InventoryError(
                    f"{pinned[a].account} and {pinned[b].account} have overlapping IPv6 "
                    f"addresses ({a_text} and {b_text})")
            continue  # an entry's address inside its own prefix
        reach = (network, owner, text)


def parse(data: dict) -> tuple[Pinned, ...]:
    unknown = set(data) - {"subscriber"}
    if unknown:
        raise InventoryError(f"unknown section(s) {sorted(unknown)}; expected [[subscriber]]")
    entries = data.get("subscriber", [])
    if not isinstance(entries, list):
        raise InventoryError("subscriber must be an array of tables: [[subscriber]]")
    pinned: list[Pinned] = []
    for n, entry in enumerate(entries):
        where = f"subscriber[{n}]"
        if not isinstance(entry, dict):
            raise InventoryError(f"{where} must be a table")
        extra = set(entry) - _FIELDS
        if extra:
            raise InventoryError(f"{where} has unknown field(s) {sorted(extra)}")
        account = entry.get("account")
        if not isinstance(account, str) or not account.strip() or len(account) > 128:
            raise InventoryError(f"{where}.account must be a name of 1-128 characters")
        try:
            ip = str(parse_subscriber_ip(str(entry.get("ip", "")), f"{where}.ip"))
            mac = parse_mac(entry.get("mac", "") or "")
        except InvalidArgument as exc:
            raise InventoryError(str(exc).replace("subscriber.mac", f"{where}.mac")) from None
        port = entry.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 0xFF00:
            raise InventoryError(f"{where}.port must be a switch port number (1-65279)")
        pinned.append(Pinned(account, ip, mac, _dpid(entry.get("switch"), where), port,
                             _ipv6(entry.get("ipv6"), where)))
    for field, what in ((lambda p: p.ip, "address"), (lambda p: (p.dpid, p.port), "port"),
                        (lambda p: p.account, "account")):
        seen: dict = {}
        for p in pinned:
            key = field(p)
            if key in seen:
                raise InventoryError(f"{seen[key].account} and {p.account} have the same {what}"
                                     if what != "account" else
                                     f"account {p.account} appears twice")
            seen[key] = p
    _no_shared_ipv6(pinned)
    return tuple(pinned)


def load(path: str | pathlib.Path | None) -> tuple[Pinned, ...]:
    if path is None:
        return ()
    return tomlfile.read(path, InventoryError, parse)
