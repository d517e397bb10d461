"""What the controller does with what it learns: the packet-in worker's side
of the app (controller/osken/app.py stays a shell of OpenFlow events).

From each copy a switch sends: hosts and their claims judged
(controller/topology/state.py, controller/topology/claims.py), a held claim that was
accepted sent on (controller/openflow/fabric.py), DHCP bindings snooped
(controller/topology/dhcp/snooping.py); then whatever must reach the service: the
subscribers whose enforcements follow them, refused claims, ports over a
budget. Reports go out from the leading instance only: the followers hear
the same copies.

service: what the reports go to (controller.osken.app.Service): the
service, once the process entry has connected it (controller/main.py).
"""
from __future__ import annotations

import dataclasses
import logging
import threading

from controller.topology.dhcp.bindings import Binding
from enforcement.domain.model import IdentityEvent, PortAlarm

LOG = logging.getLogger(__name__)

_BUDGET_WORDS = {
    "learn": "copies to the controller over the port's learning budget",
    "storm": "broadcast and unknown unicast over the storm-control budget",
    "learning_ban": "new MACs faster than allowed: learning banned for {ban:.0f} s",
    "max_hosts": "the port holds its maximum of hosts: no more learned",
}


class Learning:
    def __init__(self, service, net, fabric, leading, is_connected, *, snooping=None):
        self._service = service
        self._net = net
        self._fabric = fabric
        self._leading = leading          # () -> bool
        self._is_connected = is_connected
        self._snooping = snooping        # (it reports through binding_changed)
        self.alarms_raised = 0

    def learn(self, dpid: int, in_port: int, data: bytes) -> None:
        """The packet-in worker: learns hosts, and DHCP bindings, from a copy."""
        if not self._is_connected(dpid):
            return
        learned = self._net.learn(dpid, in_port, data, self._service.is_enforced)
        if learned.macs:
            self._fabric.mark_hosts(learned.macs)
        if learned.release and self._leading():
            self._fabric.release(_source_mac(data), dpid, in_port, data)
        for alarm in learned.alarms:
            self.budget_alarm(*alarm)
        self.refused(learned.refused)
        self.follow(learned.follow)
        if self._snooping is not None:
            self._snooping.handle(dpid, in_port, data)

    def follow(self, macs) -> None:
        if macs:
            threading.Thread(target=self._service.host_moved, args=(macs,),
                             daemon=True).start()

    def refused(self, events) -> None:
        if not self._leading():
            return  # the followers see the same frames: one report is enough
        for event in events:
            if event.subscriber_ip is None:
                ip = self._net.subscriber_at(event.dpid, event.port)
                if ip:
                    event = dataclasses.replace(event, subscriber_ip=ip)
            try:
                self._service.report_identity_event(event)
            except Exception:
                LOG.exception("identity event not delivered")

    def report_identity(self, event: IdentityEvent) -> None:
        """A refused LLDP frame (controller/topology/lldp/discovery.py), on the discovery event
        thread: report_identity_event returns at once (the service's writer
        stores it)."""
        self.refused([event])

    def binding_changed(self, change) -> None:
        """A DHCP binding made or renewed: the address is its MAC's (taken
        from whoever held it, claims by anyone else refused); ended: no
        longer reserved (controller/topology/state.py bind, unbind)."""
        if isinstance(change, Binding):
            learned = self._net.bind(change.mac, change.ip)
            if learned.macs:
                self._fabric.mark_hosts(learned.macs)
            self.follow(learned.follow)
        else:
            self._net.unbind(change.binding.mac, change.binding.ip)

    def budget_alarm(self, dpid: int, port: int, budget: str, rate: float,
                     limit: float) -> None:
        if not self._leading():
            return  # the followers see the same ports: one report is enough
        ip = self._net.subscriber_at(dpid, port)
        detail = _BUDGET_WORDS[budget].format(ban=self._fabric.budgets.ban_seconds)
        LOG.warning("%016x port %d (%s): %s (%.1f, limit %.1f)", dpid, port,
                    ip or "no known subscriber", detail, rate, limit)
        self.alarms_raised += 1
        try:
            self._service.report_port_alarm(PortAlarm(dpid=dpid, port=port, budget=budget,
                                                rate_pps=rate, limit=limit,
                                                subscriber_ip=ip, detail=detail))
        except Exception:
            LOG.exception("port alarm not delivered")


def _source_mac(frame: bytes) -> str:
    return ":".join(f"{b:02x}" for b in frame[6:12])
