"""The optional static inventory (`--inventory FILE`): subscriber accounts
with their addresses pinned to an access switch and port.

    [[subscriber]]
    account = "ACME-0001"          # the provider's account name
    ip = "10.0.0.1"
    mac = "00:00:00:00:00:01"      # optional
    switch = "0000000000000002"    # datapath id, as shown everywhere (or a number)
    port = 1

A pinned subscriber is located at its pinned port from the start, before it
sends anything, and stays there: seeing its address elsewhere is logged, not
believed (an inventory is the provider's own record of where a line is).
Pure: loading and checking only.
"""
from __future__ import annotations

import dataclasses
import pathlib

from enforcement import tomlfile
from enforcement.errors import InvalidArgument
from enforcement.validation import parse_mac, parse_subscriber_ip

_FIELDS = {"account", "ip", "mac", "switch", "port"}


class InventoryError(ValueError):
    """The inventory file is wrong; the message names the entry and field."""


@dataclasses.dataclass(frozen=True)
class Pinned:
    account: str
    ip: str
    mac: str | None
    dpid: int
    port: int


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
        pinned.append(Pinned(account, ip, mac, _dpid(entry.get("switch"), where), port))
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
    return tuple(pinned)


def load(path: str | pathlib.Path | None) -> tuple[Pinned, ...]:
    if path is None:
        return ()
    return tomlfile.read(path, InventoryError, parse)
