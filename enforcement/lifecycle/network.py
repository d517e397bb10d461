"""The switch port: everything the lifecycle asks of the network side.

The lifecycle (enforcement.lifecycle.service, deciding, reconcile) talks to
hosts and switches only through this protocol. The OpenFlow side implements
it (controller/osken/app.py's EnforcementApp, over controller/openflow's
switchsync and sessions), test doubles do too; the lifecycle never imports
the OpenFlow side, and the OpenFlow side never imports the lifecycle.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from enforcement.domain.desired import Change, SwitchState
from enforcement.domain.flows import FlowRule
from enforcement.domain.model import HostView, Location, TopologyView
from enforcement.domain.probes import Proof, Subject

# Work handed down to a switch transaction, done after it sent its change
# and before it waits for the answer (see Network.sync_part).
Meanwhile = Callable[[], None]


class Network(Protocol):
    # ---- where subscribers and servers are ----------------------------------

    def locate(self, ip: str) -> Location | None: ...
    def host(self, ip: str) -> HostView | None: ...
    def subscriber(self, mac: str) -> HostView | None: ...
    def topology(self) -> TopologyView: ...

    # ---- the switches --------------------------------------------------------

    def is_connected(self, dpid: int) -> bool: ...

    def sync(self, dpid: int, desired: SwitchState, timeout: float,
             verify: bool = False) -> Change:
        """The switch made to hold exactly `desired` of enforcement state,
        confirmed; raises SwitchError if it refuses or does not answer."""
        ...

    def sync_part(self, dpid: int, rules: dict, meters: dict, timeout: float,
                  meanwhile: Meanwhile | None = None) -> Change:
        """sync() for some rule keys and meter ids only. meanwhile, if
        given, is called by every confirmed transaction this call makes,
        right after sending and before waiting for the answer, on the
        calling thread; not at all if nothing was sent. It may thus be
        called more than once, so the caller passes one that does its work
        once and raises nothing (enforcement.lifecycle.reconcile.Reconciler.push)."""
        ...

    def prove_many(self, dpid: int, items: list[tuple[str, tuple[FlowRule, ...], Subject]]
                   ) -> dict[str, Proof]:
        """Probes enforcements' rules on a switch in its data plane, in one
        batch (enforcement/domain/probes.py): (key, rules, subject) in, a
        proof by key out; raises SwitchError when it cannot."""
        ...

    def audit(self, dpid: int, timeout: float) -> Change | None:
        """What differs from what the switch confirmed holding, repaired;
        None for a switch not reconciled yet."""
        ...
