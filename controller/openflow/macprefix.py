"""Every MAC address but a few, as a handful of masked matches.

Open vSwitch caches each decision as a datapath flow (a megaflow) that
matches only the bits the classifier had to look at. A rule that matches
one destination MAC exactly makes the classifier look at all 48 bits of
every frame that reaches it, so a subscriber sending to random destinations
makes the switch cache one flow per frame and ask its slow path each time
(the tuple-space explosion: Csikor et al., CoNEXT 2019).

complement() answers "not one of these" with prefixes instead: for each
bit where a frame first parts from every listed address, one match on that
many leading bits. Given priorities that fall as the prefix grows (shorter
first), the classifier stops at the first one that matches, so a frame to
a random MAC is decided, and cached, on its first few bits: at most one
cached flow per (listed address, bit) whatever the sender does.
Pure: MAC texts in, (value, mask, length) out.
"""
from __future__ import annotations

from collections.abc import Iterable

BITS = 48
_FULL = (1 << BITS) - 1


def _number(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def text(number: int) -> str:
    return ":".join(f"{(number >> shift) & 0xFF:02x}" for shift in range(40, -8, -8))


def mask_of(length: int) -> int:
    """The mask of a prefix of `length` leading bits."""
    return _FULL ^ ((1 << (BITS - length)) - 1)


def complement(macs: Iterable[str]) -> list[tuple[str, str, int]]:
    """(value, mask, prefix length) matches that together cover every MAC
    not in macs, and none in it; no two overlap. Empty macs: one match of
    length 0 (everything)."""
    listed = {_number(m) for m in macs}
    if not listed:
        return [(text(0), text(0), 0)]
    found = []
    # The prefixes of the listed addresses at each length: a branch off
    # them that leads to none is one covering match.
    prefixes = {0}
    for length in range(BITS):
        shift = BITS - length - 1
        deeper = {m & mask_of(length + 1) for m in listed}
        for prefix in sorted(prefixes):
            for bit in (0, 1):
                child = prefix | (bit << shift)
                if child not in deeper:
                    found.append((text(child), text(mask_of(length + 1)), length + 1))
        prefixes = deeper
    return found
