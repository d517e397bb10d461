"""Where each host lives: MAC -> (switch, access port, last IPv4 seen).

Hosts are learned only on access ports (ports that are not one end of a
switch-to-switch link): a host's flooded packets also reach other switches
through their uplinks, and must not move it there.
"""
from __future__ import annotations

from enforcement.model import HostView


class HostTable:
    def __init__(self) -> None:
        self._by_mac: dict[str, HostView] = {}

    def learn(self, dpid: int, port: int, mac: str, ip: str | None) -> bool:
        """Records a sighting; returns True when anything changed."""
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

    def by_ip(self, ip: str) -> HostView | None:
        return next((h for h in self._by_mac.values() if h.ip == ip), None)

    def all(self) -> tuple[HostView, ...]:
        return tuple(sorted(self._by_mac.values(), key=lambda h: (h.dpid, h.port, h.mac)))
