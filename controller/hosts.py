"""Where each host lives: MAC -> (switch, access port, last IPv4 seen).

Hosts are learned only on access ports (ports that are not one end of a
switch-to-switch link): a host's flooded packets also reach other switches
through their uplinks, and must not move it there.
"""
from __future__ import annotations

from enforcement.model import HostView


class HostTable:
    def __init__(self, pinned=()) -> None:
        self._by_mac: dict[str, HostView] = {}
        # The inventory's subscribers (enforcement/inventory.py), by address:
        # located at their pinned port before and whatever they are seen doing.
        self._pinned = {p.ip: p for p in pinned}

    def learn(self, dpid: int, port: int, mac: str, ip: str | None) -> bool:
        """Records a sighting; returns True when anything changed."""
        pin = self._pinned.get(ip) if ip else None
        if pin is not None and (pin.dpid, pin.port) != (dpid, port):
            return False  # the inventory says where this line is
        known = self._by_mac.get(mac)
        ip = ip or (known.ip if known else None)
        seen = HostView(mac=mac, ip=ip, dpid=dpid, port=port)
        if known == seen:
            return False
        if ip:
            # An address belongs to one host at a time: the newest sighting wins.
            for other in [h for h in self._by_mac.values()
                          if h.ip == ip and h.mac != mac]:
                self._by_mac[other.mac] = HostView(other.mac, None, other.dpid,
                                                   other.port)
        self._by_mac[mac] = seen
        return True

    def forget_port(self, dpid: int, port: int) -> list[str]:
        """Drops hosts learned on a port that turned out to be an uplink."""
        gone = [mac for mac, h in self._by_mac.items()
                if (h.dpid, h.port) == (dpid, port)]
        for mac in gone:
            del self._by_mac[mac]
        return gone

    def by_mac(self, mac: str) -> HostView | None:
        return self._by_mac.get(mac)

    def pinned_elsewhere(self, ip: str | None, dpid: int, port: int):
        """The inventory entry of ip when it pins it to another port."""
        pin = self._pinned.get(ip) if ip else None
        return pin if pin is not None and (pin.dpid, pin.port) != (dpid, port) else None

    def by_ip(self, ip: str) -> HostView | None:
        seen = next((h for h in self._by_mac.values() if h.ip == ip), None)
        pin = self._pinned.get(ip)
        if pin is None:
            return seen
        return HostView(seen.mac if seen else (pin.mac or ""), ip, pin.dpid, pin.port,
                        pin.account, True)

    def count_at(self, dpid: int, port: int) -> int:
        return sum(1 for h in self._by_mac.values() if (h.dpid, h.port) == (dpid, port))

    def located(self) -> list[HostView]:
        """Every host with a MAC and a place: what forwarding is built for."""
        return [h for h in self.all() if h.mac]

    def all(self) -> tuple[HostView, ...]:
        hosts = {h.mac: h for h in self._by_mac.values() if h.ip not in self._pinned}
        for ip in self._pinned:
            view = self.by_ip(ip)
            hosts[view.mac or f"pinned:{ip}"] = view
        return tuple(sorted(hosts.values(), key=lambda h: (h.dpid, h.port, h.mac)))
