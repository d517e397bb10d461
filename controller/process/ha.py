"""Leading and following, wired between the lease, the switches and the store.

When this instance is elected (enforcement.cluster.leadership), it claims every
switch as MASTER at its epoch (controller/osken/app.py), reloads its memory from
the store, and only then reconciles every switch as if it had just
connected: adopted, counted, never flushed. When it is deposed (lease
lost, or a switch or the store refused its epoch), it returns every switch
to SLAVE and serves reads only. The times are logged: they are the
failover time the operator (and bench/) reads.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Protocol

from controller.openflow.roles import Epochs
from enforcement.cluster.leadership import Transitions

if TYPE_CHECKING:
    from enforcement.cluster.leadership import Leadership
    from enforcement.lifecycle.service import EnforcementService

LOG = logging.getLogger(__name__)


def instance_name(given: str | None) -> str:
    return given or f"{socket.gethostname()}:{os.getpid()}"


class Switches(Protocol):
    """The switches as the OS-Ken app holds them (controller/osken/app.py)."""

    def newest_generation(self) -> int: ...
    def lead(self, epoch: int) -> float: ...
    def lead_on_at(self, epoch: int) -> None: ...
    def claimed_epoch(self) -> int: ...
    def prepare_all(self) -> None: ...
    def follow(self) -> None: ...
    def connected_switches(self) -> list[int]: ...


class Failover:
    """Built by the process entry (controller/main.py) once the app, the
    service and the leadership exist; it answers the leadership's
    transitions (Leadership.start) and the roles' questions about epochs
    (epochs())."""

    def __init__(self, switches: Switches, service: EnforcementService,
                 leadership: Leadership) -> None:
        self._switches = switches
        self._service = service
        self._leadership = leadership

    def transitions(self) -> Transitions:
        return Transitions(elected=self.elected, deposed=self.deposed)

    def epochs(self) -> Epochs:
        # known: the store's, read at each claim: a restarted follower knows
        # no epoch yet, and the switches refuse a SLAVE claim with a stale one.
        return Epochs(known=self._leadership.newest_epoch, raise_above=self.raise_to,
                      deposed=self._leadership.step_down)

    def raise_to(self, seen: int) -> int:
        """A switch has seen generation seen, newer than the epoch: the
        store is younger than the switches (fresh, or restored from a
        backup). Leads on above it, writes held meanwhile."""
        leadership = self._leadership
        with self._service.changes_held():
            old = leadership.epoch
            raised = leadership.raise_epoch(seen + 1)
            if raised:
                self._service.epoch_raised(old, raised)
                self._switches.lead_on_at(raised)
        if raised and raised != old:
            LOG.warning("a switch has seen generation %d, newer than the store's epoch %d "
                        "(a younger store): leading at epoch %d", seen, old, raised)
        return raised

    def elected(self, epoch: int) -> None:
        app, leadership = self._switches, self._leadership
        started = time.monotonic()
        seen = app.newest_generation()
        if seen >= epoch and not self.raise_to(seen):
            return  # lost meanwhile: the deposition follows
        claimed = app.lead(leadership.epoch)
        epoch = leadership.epoch  # raised again if a switch came meanwhile
        if not epoch or app.claimed_epoch() != epoch:
            return  # lost again while claiming: the deposition follows
        self._service.take_over(epoch)
        app.prepare_all()
        LOG.warning("took over at epoch %d: %d switch(es) claimed in %.3f s, "
                    "reconciled in %.3f s", epoch, len(app.connected_switches()), claimed,
                    time.monotonic() - started)

    def deposed(self, epoch: int, why: str) -> None:
        self._leadership.newest_epoch()
        self._switches.follow()
        LOG.warning("following since epoch %d ended (%s)", epoch, why)


def peer_credentials(args):
    """What a follower presents to the leader when it forwards a call:
    under mutual TLS its own certificate, checked by the leader like any
    client's; None in plaintext (loopback)."""
    if not args.tls:
        return None
    import grpc
    with open(args.peer_ca or args.tls_client_ca, "rb") as ca, \
            open(args.peer_key or args.tls_key, "rb") as key, \
            open(args.peer_cert or args.tls_cert, "rb") as cert:
        return grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read())


def wait_until_leading(service, timeout: float) -> bool:
    """An instance alone on its store leads at once; waiting for it keeps
    its first calls from waiting for its takeover."""
    deadline = time.monotonic() + timeout
    while not service.leading():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
