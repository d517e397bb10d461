"""OpenFlow 1.3 roles on the switches: the leader MASTER at its epoch, the
others SLAVE.

Every instance connects to every switch. The leader claims each one as
MASTER with its epoch as generation_id, which demotes any older master to
SLAVE; the switch then refuses the old master's changes (OFPBRC_IS_SLAVE)
and its old claim (OFPRRFC_STALE), and either refusal proves that another
instance leads (Epochs.deposed). A follower claims SLAVE at the newest
generation known, the store's or the switch's own: a SLAVE claim demotes
nobody, and a stale one would be refused and leave the connection EQUAL.

A switch may have seen a newer generation than the store's epoch, when the
store is younger than the switches (a fresh database, or one restored from
a backup): the leader then leads on above it (Epochs.raise_above) instead of being
refused for good.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from controller.openflow import compiler
from enforcement.domain.errors import SwitchError

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Epochs:
    """What the roles ask of the leadership (enforcement.cluster.leadership,
    by way of controller/process/ha.py). The defaults are a follower's that
    knows no epoch yet, which is what the switches that connect before the
    leadership exists are claimed with."""
    # The newest epoch in the store.
    known: Callable[[], int] = lambda: 0
    # Leading on above a generation a switch has seen: the new epoch, or 0.
    raise_above: Callable[[int], int] = lambda seen: 0
    # The proof that another instance leads.
    deposed: Callable[[str], None] = lambda why: None


class Roles:
    def __init__(self, transact: Callable, timeout: Callable[[], float]):
        self._transact = transact
        self._timeout = timeout
        self.leading = False
        self.epoch = 0
        self._epochs = Epochs()

    def connect(self, epochs: Epochs) -> None:
        """The leadership, once it exists (it is built after OS-Ken, which
        builds the app that holds these roles): see controller/main.py."""
        self._epochs = epochs

    def claim(self, dpid: int, retry: bool = True) -> bool:
        """This connection's role on a switch, as this instance stands now."""
        master = self.leading
        try:
            seen = self.generation(dpid)
            if not master:
                epoch = max(self._epochs.known(), seen)
            elif seen > self.epoch:  # equal: its own claim, from before a reconnection
                epoch = self._epochs.raise_above(seen)
                if not epoch:
                    return False
            else:
                epoch = self.epoch
            self._transact(dpid, [compiler.async_config(),
                                  compiler.role_request(master, epoch)], self._timeout())
            return True
        except SwitchError as exc:
            if "STALE" in str(exc) and not master and retry:
                # The leader claimed a newer generation between our read
                # and our claim: read again.
                return self.claim(dpid, retry=False)
            if "STALE" in str(exc) and master:
                self.fenced(dpid)
            LOG.warning("switch %016x: role %s not taken: %s", dpid,
                        "master" if master else "slave", exc)
            return False

    def generation(self, dpid: int) -> int:
        """The newest generation id the switch has seen (0: none)."""
        request = compiler.role_query()
        replies = self._transact(dpid, [request], self._timeout())
        return max((compiler.generation_of(r) for r in replies.get(request.xid, [])),
                   default=0)

    def fenced(self, dpid: int) -> None:
        """A switch refused this instance as its master."""
        if self.leading:
            self._epochs.deposed(f"switch {dpid:016x} answers another controller as master")
