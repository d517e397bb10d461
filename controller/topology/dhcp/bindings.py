"""DHCP snooping's binding table: which address a DHCP server gave which
MAC, and until when.

Pure bookkeeping, with the clock injected (by default time.time, so a lease
end reads as the Unix time a server's lease file would show). Only replies
from trusted ports reach it (controller/topology/dhcp/snooping.py), and the server decides:
whatever it last said about an address or a MAC is what the table holds.
Every call returns what changed, in order, for the caller to act on:

- a Binding: an address given (or its lease renewed) to a MAC;
- a Release: a binding that ended, and why (REASONS).

Invariants: an address is bound to one MAC at most (a second MAC given it
replaces the first); a MAC holds one IPv4 binding at most (a DHCPv4 client
holds one lease per interface: a new address ends the old one), and any
number of IPv6 ones (a DHCPv6 server may give several).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import threading
import time
from collections.abc import Callable

from controller.topology.dhcp.replies import ServerReply

REASONS = {
    "nak": "the server refused the client's address (DHCPNAK)",
    "expired": "the lease ended",
    "reassigned": "the server gave the address to another MAC",
    "moved": "the server gave the MAC another address",
    "withdrawn": "the server gave the address a valid lifetime of 0",
}


@dataclasses.dataclass(frozen=True)
class Binding:
    """mac holds ip until lease_end (on the table's clock; math.inf: no
    end). duid: a DHCPv6 client's DUID, in hex."""
    mac: str
    ip: str
    lease_end: float
    duid: str = ""

    @property
    def family(self) -> int:
        return 6 if ":" in self.ip else 4

    def text(self, now: float | None = None) -> str:
        if math.isinf(self.lease_end):
            until = "no lease end"
        else:
            until = "lease ends " + time.strftime("%Y-%m-%d %H:%M:%S",
                                                  time.localtime(self.lease_end))
            if now is not None:
                until += f" (in {self.lease_end - now:.0f} s)"
        return f"{self.mac} {self.ip}, {until}"


@dataclasses.dataclass(frozen=True)
class Release:
    """A binding that ended; reason: a key of REASONS."""
    binding: Binding
    reason: str

    def __post_init__(self):
        if self.reason not in REASONS:
            raise ValueError(f"unknown release reason {self.reason!r}")


Change = Binding | Release


class BindingTable:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._by_ip: dict[str, Binding] = {}
        self._by_mac: dict[str, dict[str, Binding]] = {}

    # ---- what the server said ----------------------------------------------

    def apply(self, reply: ServerReply) -> list[Change]:
        """A server's reply, parsed (controller/topology/dhcp/replies.py): an ACK binds
        its address, a NAK ends the client's IPv4 binding, a DHCPv6 Reply
        binds each address it gives and ends each it withdraws. Offers and
        advertisements are only offers: they change nothing."""
        if reply.kind == "NAK":
            return list(self.release_mac(reply.client_mac, family=4, reason="nak"))
        if reply.kind not in ("ACK", "REPLY"):
            return []
        changes: list[Change] = []
        for lease in reply.leases:
            changes += self.bind(reply.client_mac, lease.ip, lease.seconds,
                                 duid=reply.client_duid)
        return changes

    def bind(self, mac: str, ip: str, seconds: float, duid: str = "") -> list[Change]:
        """mac holds ip for seconds from now (math.inf: no end; 0 or less:
        the server withdrew it, so mac's binding of ip ends)."""
        mac, ip = _mac(mac), _ip(ip)
        if seconds <= 0:
            with self._lock:
                held = self._by_ip.get(ip)
                if held is None or held.mac != mac:
                    return []
                self._drop(held)
            return [Release(held, "withdrawn")]
        binding = Binding(mac, ip, self._clock() + seconds, duid)
        changes: list[Change] = []
        with self._lock:
            holder = self._by_ip.get(ip)
            if holder is not None and holder.mac != mac:
                self._drop(holder)
                changes.append(Release(holder, "reassigned"))
            if binding.family == 4:
                for old in list(self._by_mac.get(mac, {}).values()):
                    if old.family == 4 and old.ip != ip:
                        self._drop(old)
                        changes.append(Release(old, "moved"))
            self._by_ip[ip] = binding
            self._by_mac.setdefault(mac, {})[ip] = binding
        changes.append(binding)
        return changes

    def release_mac(self, mac: str, family: int | None = None,
                    reason: str = "nak") -> list[Release]:
        """Ends mac's bindings (of one family, or all)."""
        with self._lock:
            ended = [b for b in self._by_mac.get(_mac(mac), {}).values()
                     if family is None or b.family == family]
            for binding in ended:
                self._drop(binding)
        return [Release(b, reason) for b in ended]

    def expire(self) -> list[Release]:
        """Ends the bindings whose lease ended by now; returns them."""
        now = self._clock()
        with self._lock:
            ended = [b for b in self._by_ip.values() if b.lease_end <= now]
            for binding in ended:
                self._drop(binding)
        return [Release(b, "expired") for b in sorted(ended, key=lambda b: b.lease_end)]

    # ---- reading -------------------------------------------------------------

    def by_ip(self, ip: str) -> Binding | None:
        with self._lock:
            return self._by_ip.get(_ip(ip))

    def by_mac(self, mac: str) -> tuple[Binding, ...]:
        """mac's bindings, IPv4 first."""
        with self._lock:
            held = list(self._by_mac.get(_mac(mac), {}).values())
        return tuple(sorted(held, key=lambda b: (b.family, b.ip)))

    def bindings(self) -> list[Binding]:
        with self._lock:
            return sorted(self._by_ip.values(), key=lambda b: (b.mac, b.family, b.ip))

    def next_end(self) -> float | None:
        """The soonest lease end, None when no lease ends."""
        with self._lock:
            ends = [b.lease_end for b in self._by_ip.values() if not math.isinf(b.lease_end)]
        return min(ends, default=None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_ip)

    def _drop(self, binding: Binding) -> None:
        """Under the lock."""
        self._by_ip.pop(binding.ip, None)
        held = self._by_mac.get(binding.mac, {})
        held.pop(binding.ip, None)
        if not held:
            self._by_mac.pop(binding.mac, None)


def _mac(mac: str) -> str:
    return mac.lower()


def _ip(ip: str) -> str:
    """One text per address (IPv6 has many)."""
    return str(ipaddress.ip_address(ip))
