"""DHCP snooping in the controller: the switches copy the trusted servers'
replies (controller/openflow/dhcpguard.py), and each one that gives, renews or
refuses a lease changes the binding table (controller/topology/dhcp/bindings.py); leases
that run out end on a thread of their own. Every change goes to one hook
(the app's on_binding), in the order it happened.

A server reply copied from a port not declared trusted is never believed:
it changes nothing and is reported as an identity event. With the switches'
drop rule in place none arrives; a switch without it (older rules, a
foreign one) still cannot write a binding.

Every controller instance keeps the table (a follower must know the
bindings when it takes over); only the leader reports (the followers see
the same copies: one report is enough).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from controller.topology.dhcp import replies as dhcpsnoop
from controller.topology.dhcp.bindings import Binding, BindingTable, Change, Release
from enforcement.domain.model import IdentityEvent

LOG = logging.getLogger(__name__)

EXPIRY_INTERVAL = 1.0     # seconds between looks for ended leases
REPORT_INTERVAL = 10.0    # one untrusted-server report per port this often


class Snooping:
    def __init__(self, trusted: frozenset[tuple[int, int]], *,
                 on_change: Callable[[Change], None],
                 on_untrusted: Callable[[IdentityEvent], None],
                 leading: Callable[[], bool] = lambda: True,
                 subscriber_at: Callable[[int, int], str | None] = lambda dpid, port: None,
                 table: BindingTable | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.trusted = trusted
        self.table = table if table is not None else BindingTable()
        self._on_change = on_change
        self._on_untrusted = on_untrusted
        self._leading = leading
        self._subscriber_at = subscriber_at
        self._monotonic = monotonic
        self._reported: dict[tuple[int, int], float] = {}
        self._stopped = threading.Event()
        self.untrusted_replies = 0

    def handle(self, dpid: int, port: int, frame: bytes) -> bool:
        """A copied frame (the packet-in worker's): whether it was a DHCP
        server reply (then handled here)."""
        reply = dhcpsnoop.parse(frame)
        if reply is None:
            return False
        if (dpid, port) not in self.trusted:
            self._untrusted(dpid, port, reply)
            return True
        held = {b.ip for b in self.table.by_mac(reply.client_mac)}
        for change in self.table.apply(reply):
            renewed = isinstance(change, Binding) and change.ip in held
            self._deliver(change, f" (server {reply.server_id or reply.eth_src} at "
                                  f"{dpid:016x} port {port})", renewed)
        return True

    def expire(self) -> list[Release]:
        ended = self.table.expire()
        for release in ended:
            self._deliver(release, "")
        return ended

    def run(self, interval: float = EXPIRY_INTERVAL) -> None:
        while not self._stopped.wait(interval):
            try:
                self.expire()
            except Exception:  # the next round tries again
                LOG.exception("DHCP lease expiry")

    def stop(self) -> None:
        self._stopped.set()

    def _deliver(self, change: Change, where: str, renewed: bool = False) -> None:
        if isinstance(change, Binding):
            LOG.log(logging.DEBUG if renewed else logging.INFO, "dhcp binding%s: %s%s",
                    " renewed" if renewed else "", change.text(time.time()), where)
        else:
            LOG.info("dhcp binding ended (%s): %s", change.reason, change.binding.text())
        try:
            self._on_change(change)
        except Exception:
            LOG.exception("DHCP binding change not delivered")

    def _untrusted(self, dpid: int, port: int, reply: dhcpsnoop.ServerReply) -> None:
        self.untrusted_replies += 1
        now = self._monotonic()
        last = self._reported.get((dpid, port))
        if not self._leading() or (last is not None and now - last < REPORT_INTERVAL):
            return
        self._reported[(dpid, port)] = now
        detail = (f"switch {dpid:016x} port {port}: {reply.eth_src} answered as a DHCPv"
                  f"{reply.family} server ({reply.kind}"
                  + (f" of {reply.offered}" if reply.offered else "")
                  + f" to {reply.client_mac}) from a port not declared trusted; ignored")
        LOG.warning("%s", detail)
        try:
            self._on_untrusted(IdentityEvent(
                kind="dhcp_untrusted", dpid=dpid, port=port, mac=reply.eth_src,
                claimed=reply.offered or "DHCP server",
                subscriber_ip=self._subscriber_at(dpid, port), detail=detail))
        except Exception:
            LOG.exception("identity event not delivered")
