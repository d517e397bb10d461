"""Which enforcements, filed by address, belong to a host.

A subscriber is one identity with many addresses, and a decision may name it
by any of them: a host owns what is filed under its IPv4 address, and under
any IPv6 address or prefix that overlaps one of its IPv6 addresses or
prefixes (an address inside its inventory /64, the /64 an enforcement was
planned for holding its address). Link-local addresses are left out: the
same fe80:: address can sit on many links, so it names no one host.
"""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

_BITS = 128


class AddressIndex(Generic[T]):
    """by_address: canonical address or prefix text to what is filed under it."""

    def __init__(self, by_address: Mapping[str, Sequence[T]]):
        self._by_address = by_address
        # IPv6 keys by prefix length, then by first address (an int: a
        # topology of thousands of hosts is matched on every poll of the view).
        self._at: dict[int, dict[int, list[str]]] = {}
        for key in by_address:
            span = _span(key) if ":" in key else None
            if span is not None:
                self._at.setdefault(span[1], {}).setdefault(span[0], []).append(key)
        self._lengths = sorted(self._at)
        self._inside: dict[int, dict[int, list[str]]] = {}

    def of(self, ip: str | None, ipv6: Iterable[str] = ()) -> list[T]:
        """What is filed under the host's addresses, each once, in the order
        of its addresses (IPv4 first)."""
        keys: list[str] = [ip] if ip else []
        for text in ipv6:
            span = _span(text)
            if span is not None:
                keys.extend(self._overlapping(*span))
        found: list[T] = []
        seen: set[T] = set()
        for key in keys:
            for item in self._by_address.get(key, ()):
                if item not in seen:
                    seen.add(item)
                    found.append(item)
        return found

    def _overlapping(self, first: int, length: int) -> list[str]:
        """Prefixes nest or are apart: the keys that hold this span, then
        those it holds."""
        found: list[str] = []
        for at in self._lengths:
            if at > length:
                break
            found.extend(self._at[at].get(_masked(first, at), ()))
        if length < _BITS:
            found.extend(self._held_at(length).get(first, ()))
        return found

    def _held_at(self, length: int) -> dict[int, list[str]]:
        """The keys longer than length, by the prefix of that length that holds them."""
        table = self._inside.get(length)
        if table is None:
            table = {}
            for at, keys in self._at.items():
                if at > length:
                    for first, texts in keys.items():
                        table.setdefault(_masked(first, length), []).extend(texts)
            self._inside[length] = table
        return table


def _masked(address: int, length: int) -> int:
    drop = _BITS - length
    return address >> drop << drop


@functools.lru_cache(maxsize=65536)
def _span(text: str) -> tuple[int, int] | None:
    """(first address, prefix length) of an IPv6 address or prefix, None for
    link-local ones and for anything else."""
    try:
        network = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        return None
    if network.network_address.is_link_local:
        return None
    return int(network.network_address), network.prefixlen
