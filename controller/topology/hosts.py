"""Where each host lives: MAC -> (switch, access port, its addresses).

Hosts are learned only on access ports (ports that are not one end of a
switch-to-switch link): a host's flooded packets also reach other switches
through their uplinks, and must not move it there.

A host is one identity with addresses of both families: its IPv4 address
(from ARP or a DHCP binding) and its IPv6 addresses (from neighbour
discovery, link-local included). An address belongs to one host at a time:
learn() hands it to the newest sighting, and its caller decides first
whether that sighting may take it (controller/topology/claims.py). DHCP bindings
(address -> MAC, from the server's answers) are kept here for that
judgement. Every address is indexed, so finding a subscriber by any of them
costs the same with ten hosts or ten thousand.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from enforcement.domain.inventory import Pinned
from enforcement.domain.model import HostView

# A host keeps at most this many IPv6 addresses, the oldest forgotten first:
# privacy addresses come and go, and a host that claims thousands must not
# grow the controller's memory or its own flows.
MAX_IPV6_PER_HOST = 8


class HostTable:
    def __init__(self, pinned: Iterable[Pinned] = ()) -> None:
        self._by_mac: dict[str, HostView] = {}
        self._by_address: dict[str, str] = {}  # either family -> MAC
        self._pinned: dict[str, Pinned] = {}
        self._pinned_v6: dict[str, Pinned] = {}
        self._pinned_prefixes: list[tuple[ipaddress.IPv6Network, Pinned]] = []
        self._bindings: dict[str, str] = {}  # address -> MAC the DHCP server gave it to
        self.repin(pinned)

    def repin(self, pinned: Iterable[Pinned]) -> None:
        """The inventory's subscribers (enforcement/domain/inventory.py), by address:
        located at their pinned port before and whatever they are seen
        doing. Called again when the inventory is reloaded; what was learned
        from traffic stays."""
        by_ip = {p.ip: p for p in pinned}
        by_v6: dict[str, Pinned] = {}
        prefixes: list[tuple[ipaddress.IPv6Network, Pinned]] = []
        for p in by_ip.values():
            for text in p.ipv6:
                if "/" in text:
                    prefixes.append((ipaddress.IPv6Network(text), p))
                else:
                    by_v6[text] = p
        self._pinned, self._pinned_v6, self._pinned_prefixes = by_ip, by_v6, prefixes

    def learn(self, dpid: int, port: int, mac: str, ip: str | None,
              ipv6: str | None = None) -> bool:
        """Records a sighting (an IPv4 address from ARP, or an IPv6 address
        from neighbour discovery, or neither); returns True when anything
        changed."""
        pin = self._pin_of(ip) or self._pin_of(ipv6)
        if pin is not None and (pin.dpid, pin.port) != (dpid, port):
            return False  # the inventory says where this line is
        known = self._by_mac.get(mac)
        ip = ip or (known.ip if known else None)
        addresses = known.ipv6 if known else ()
        if ipv6 and ipv6 not in addresses:
            addresses = (*addresses, ipv6)[-MAX_IPV6_PER_HOST:]
        seen = HostView(mac=mac, ip=ip, dpid=dpid, port=port, ipv6=addresses)
        if known == seen:
            return False
        for address in (ip, ipv6):
            owner = self._by_address.get(address) if address else None
            if owner is not None and owner != mac:
                self._drop_address(owner, address)
        if known is not None:
            for address in set(known.ipv6) - set(addresses):
                self._by_address.pop(address, None)
            if known.ip and known.ip != ip:
                self._by_address.pop(known.ip, None)
        self._by_mac[mac] = seen
        for address in (ip, *addresses):
            if address:
                self._by_address[address] = mac
        return True

    def bound_to(self, address: str | None) -> str | None:
        """The MAC a DHCP binding gives the address to, if any."""
        return self._bindings.get(address) if address else None

    def bind(self, mac: str, address: str) -> str | None:
        """A DHCP server gave address to mac: recorded, and taken from any
        other host holding it. Returns that host's MAC, if any. (mac itself
        takes the address when it is located: the caller's learn().)"""
        self._bindings[address] = mac
        holder = self._by_address.get(address)
        if holder is not None and holder != mac:
            self._drop_address(holder, address)
            return holder
        return None

    def unbind(self, mac: str, address: str) -> bool:
        """The lease ended (or was refused): the address is no longer
        reserved for mac. Whoever holds it keeps it, first come, first
        served, as for a static address."""
        if self._bindings.get(address) == mac:
            del self._bindings[address]
            return True
        return False

    def _drop_address(self, mac: str, address: str) -> None:
        other = self._by_mac[mac]
        self._by_mac[mac] = HostView(
            other.mac, None if other.ip == address else other.ip, other.dpid, other.port,
            ipv6=tuple(a for a in other.ipv6 if a != address))
        del self._by_address[address]

    def forget_port(self, dpid: int, port: int) -> list[str]:
        """Drops hosts learned on a port that turned out to be an uplink."""
        gone = [mac for mac, h in self._by_mac.items()
                if (h.dpid, h.port) == (dpid, port)]
        for mac in gone:
            host = self._by_mac.pop(mac)
            for address in (host.ip, *host.ipv6):
                if address and self._by_address.get(address) == mac:
                    del self._by_address[address]
        return gone

    def by_mac(self, mac: str) -> HostView | None:
        return self._by_mac.get(mac)

    def subscriber(self, mac: str) -> HostView | None:
        """The host with this MAC, as by_ip() shows it (the inventory's
        view of a pinned line): what its enforcements are planned for."""
        seen = self._by_mac.get(mac)
        if seen is None:
            return None
        pin = self._pin_of(seen.ip)
        return seen if pin is None else self._pinned_view(pin, seen)

    def _pin_of(self, address: str | None):
        if not address:
            return None
        if ":" not in address:
            return self._pinned.get(address)
        pin = self._pinned_v6.get(address)
        if pin is None and self._pinned_prefixes:
            ip = ipaddress.IPv6Address(address)
            pin = next((p for net, p in self._pinned_prefixes if ip in net), None)
        return pin

    def pinned_elsewhere(self, ip: str | None, dpid: int, port: int):
        """The inventory entry of an address when it pins it to another port."""
        pin = self._pin_of(ip)
        return pin if pin is not None and (pin.dpid, pin.port) != (dpid, port) else None

    def by_ip(self, ip: str) -> HostView | None:
        """The host an address of either family belongs to."""
        mac = self._by_address.get(ip)
        seen = self._by_mac[mac] if mac is not None else None
        pin = self._pin_of(ip)
        if pin is None:
            return seen
        return self._pinned_view(pin, seen)

    def _pinned_view(self, pin, seen: HostView | None = None) -> HostView:
        if seen is None:
            mac = self._by_address.get(pin.ip)
            seen = self._by_mac[mac] if mac is not None else None
        learned = seen.ipv6 if seen else ()
        given = pin.ipv6
        return HostView(seen.mac if seen else (pin.mac or ""), pin.ip, pin.dpid, pin.port,
                        pin.account, True,
                        ipv6=tuple(dict.fromkeys((*given, *learned))))

    def count_at(self, dpid: int, port: int) -> int:
        return sum(1 for h in self._by_mac.values() if (h.dpid, h.port) == (dpid, port))

    def located(self) -> list[HostView]:
        """Every host with a MAC and a place: what forwarding is built for."""
        return [h for h in self.all() if h.mac]

    def all(self) -> tuple[HostView, ...]:
        hosts = {h.mac: h for h in self._by_mac.values() if h.ip not in self._pinned}
        for ip, pin in self._pinned.items():
            view = self._pinned_view(pin)
            hosts[view.mac or f"pinned:{ip}"] = view
        return tuple(sorted(hosts.values(), key=lambda h: (h.dpid, h.port, h.mac)))
