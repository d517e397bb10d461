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

LOG = logging.getLogger(__name__)


def instance_name(given: str | None) -> str:
    return given or f"{socket.gethostname()}:{os.getpid()}"


def wire(app, service, leadership) -> None:
    def raise_to(seen: int) -> int:
        """A switch has seen generation seen, newer than the epoch: the
        store is younger than the switches (fresh, or restored from a
        backup). Leads on above it, writes held meanwhile."""
        with service.ledger.lock:
            old = leadership.epoch
            raised = leadership.raise_epoch(seen + 1)
            if raised:
                service.epoch_raised(old, raised)
                app.roles.epoch = raised
        if raised and raised != old:
            LOG.warning("a switch has seen generation %d, newer than the store's epoch %d "
                        "(a younger store): leading at epoch %d", seen, old, raised)
        return raised

    def elected(epoch: int) -> None:
        started = time.monotonic()
        seen = app.newest_generation()
        if seen >= epoch and not raise_to(seen):
            return  # lost meanwhile: the deposition follows
        claimed = app.lead(leadership.epoch)
        epoch = leadership.epoch  # raised again if a switch came meanwhile
        if not epoch or app.roles.epoch != epoch:
            return  # lost again while claiming: the deposition follows
        service.take_over(epoch)
        app.prepare_all()
        LOG.warning("took over at epoch %d: %d switch(es) claimed in %.3f s, "
                    "reconciled in %.3f s", epoch, len(app.connected_switches()), claimed,
                    time.monotonic() - started)

    def deposed(epoch: int, why: str) -> None:
        leadership.newest_epoch()
        app.follow()
        LOG.warning("following since epoch %d ended (%s)", epoch, why)

    leadership.on_elected = elected
    leadership.on_deposed = deposed
    app.roles.on_deposed = leadership.step_down
    app.roles.raise_epoch = raise_to
    # The store's, read at each claim: a restarted follower knows no epoch
    # yet, and the switches refuse a SLAVE claim with a stale one.
    app.roles.known_epoch = leadership.newest_epoch
    # Switches that connected before this wiring claimed with no epoch.
    app.follow()


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
