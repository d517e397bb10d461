"""Placing and reconciling: the switches made to hold what the ledger wants.

Pushes what a unit of work touched (one confirmed transaction per switch),
brings a (re)connected switch to the ledger's state, repairs drift, and
re-places enforcements when their subscriber moves or a path changes.
Talks to switches only through the Network protocol
(enforcement.lifecycle.network: implemented by the OS-Ken app, or by a
double in unit tests). Every entry point runs inside
the ledger's unit of work, on the leader only.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable

import tenacity

from enforcement.domain.desired import Change
from enforcement.domain.errors import EnforcementError, SwitchError, SwitchUnreachable
from enforcement.domain.model import Enforcement, HostView, Location, State
from enforcement.lifecycle.deciding import Decider, holds
from enforcement.lifecycle.ledger import LIVE, Ledger, switches
from enforcement.lifecycle.network import Meanwhile, Network

LOG = logging.getLogger(__name__)

# A moving subscriber's enforcements are re-placed this many at a time
# (Reconciler.host_moved): about what a batch of decisions holds the lock for.
FOLLOW_GROUP = 256

_RETRY = tenacity.retry(retry=tenacity.retry_if_exception_type(SwitchUnreachable),
                        stop=tenacity.stop_after_attempt(3),
                        wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.5),
                        before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
                        reraise=True)


# _RETRY for a call whose first attempt was made (and failed) outside it.
_RETRY_AFTER_FIRST = tenacity.retry(
    retry=tenacity.retry_if_exception_type(SwitchUnreachable),
    stop=tenacity.stop_after_attempt(2),
    wait=tenacity.wait_random_exponential(multiplier=0.1, max=0.5),
    before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING), reraise=True)


class Reconciler:
    def __init__(self, network: Network, ledger: Ledger, decider: Decider, *,
                 switch_timeout: float = 5.0):
        self._network = network
        self._ledger = ledger
        self._decider = decider
        self.switch_timeout = switch_timeout
        # Switches a push failed on since their last full comparison: only
        # there can what the switch confirmed and what the ledger wants
        # part, so only there does the drift audit compare them whole.
        self._suspect: set[int] = set()

    # ---- pushing -----------------------------------------------------------

    def push(self, dpids: Iterable[int] | None = None, best_effort: bool = False,
             meanwhile: Meanwhile | None = None) -> bool:
        """Brings what was touched on each connected switch (all, or those
        given) to the desired state, in one confirmed transaction per switch.
        A disconnected switch is left to its reconcile. best_effort: after a
        failure, put back what the others held, logging what cannot be.

        meanwhile: work that needs the switches' confirmation but not what
        they answer (a batch's bookkeeping: a decision waits about as long
        for the barrier as it spends on it), done once, while the first
        switch confirms (handed to every transaction: the first that waits
        does it), or before returning if none waited. An exception of it is
        raised before returning, once the answers are awaited and booked,
        not into the wait; a refusal is raised instead, whether or not the
        work ran (the caller undoes what it did). Returns whether every
        connected switch confirmed (False only after a best-effort failure)."""
        once = None if meanwhile is None else _Once(meanwhile)
        confirmed = True
        wanted = None if dpids is None else set(dpids)
        touched = self._ledger.work.touched
        for dpid in sorted(touched):
            if wanted is not None and dpid not in wanted:
                continue
            keys, meter_ids = touched.pop(dpid)
            if not self._network.is_connected(dpid):
                continue
            try:
                self._sync_part(dpid, *self._ledger.desired.part(dpid, keys, meter_ids),
                                meanwhile=once)
            except SwitchError as exc:
                self._suspect.add(dpid)
                if not best_effort:
                    raise
                confirmed = False
                LOG.error("switch %016x: could not restore its enforcements: %s", dpid, exc)
        if once is not None:
            once.settle()
        return confirmed

    def _sync_part(self, dpid: int, rules: dict, meters: dict,
                   meanwhile: Meanwhile | None = None) -> Change:
        # Tried once before the retrying path: tenacity's bookkeeping costs a
        # tenth of a decision's own work, and a first attempt seldom fails.
        try:
            return self._network.sync_part(dpid, rules, meters, self.switch_timeout,
                                           meanwhile=meanwhile)
        except SwitchUnreachable as exc:
            LOG.warning("switch %016x: %s; retrying", dpid, exc)
        time.sleep(random.uniform(0, 0.05))  # _RETRY's first wait
        return self._sync_part_again(dpid, rules, meters, meanwhile)

    @_RETRY_AFTER_FIRST
    def _sync_part_again(self, dpid: int, rules: dict, meters: dict,
                         meanwhile: Meanwhile | None) -> Change:
        return self._network.sync_part(dpid, rules, meters, self.switch_timeout,
                                       meanwhile=meanwhile)

    @_RETRY
    def _sync_full(self, dpid: int) -> Change:
        """The whole desired state of a switch against what it holds."""
        self._ledger.work.touched.pop(dpid, None)
        return self._network.sync(dpid, self._ledger.desired.state(dpid),
                                  self.switch_timeout)

    # ---- keeping switches true -------------------------------------------------

    def resync(self, dpid: int) -> None:
        """A switch (re)connected, holding what it still holds: bring it to
        the ledger's state and finish what was waiting for it."""
        with self._ledger.changing():
            started = time.monotonic()
            try:
                change = self._sync_full(dpid)
            except SwitchError as exc:
                LOG.error("switch %016x: could not restore enforcements: %s", dpid, exc)
                return
            # Operators (and bench/) read how long a reconnect took to reconcile.
            LOG.info("switch %016x reconciled in %.3f s: %d rule(s) re-added, %d removed, "
                     "%d meter(s) re-added", dpid, time.monotonic() - started,
                     len(change.rules_to_add), len(change.rules_to_delete),
                     len(change.meters_to_add))
            for record in self._touched(change):
                if record.state is State.ACTIVE:
                    self._ledger.event("reapplied", record, f"put back on switch {dpid:016x} "
                                       "after it reconnected")
            self.activate_pending()

    def host_moved(self, mac: str, between: Callable[[], None] = lambda: None) -> None:
        """A subscriber (by its MAC: an enforcement belongs to the
        subscriber, not to an address) was seen on another access port, or
        holds other addresses than its enforcements were planned for (a
        new lease, an address taken back): its live enforcements are
        planned again (same step, same cookie) at its port for the
        addresses it holds now, installed and the old rules removed, so the
        narrowest placement follows the subscriber and its allow-lists name
        only its own addresses. An address that moved to another subscriber
        takes nothing of this one's enforcements along.

        In groups of FOLLOW_GROUP, each pushed with one barrier per switch and
        committed, the lifecycle lock let go in between (and between() called
        there, which lets waiting decisions through): a subscriber with
        thousands of live enforcements holds up other decisions for one
        group at a time, not for all of them. Each is re-read under the
        lock, so one lifted meanwhile stays lifted."""
        with self._ledger.lock:
            ids = [r.id for r in self._ledger.live_of(mac)]
        for start in range(0, len(ids), FOLLOW_GROUP):
            if start:
                between()
            with self._ledger.changing():
                host = self._network.subscriber(mac)
                if host is None or host.mac != mac:
                    return
                self._follow(host, ids[start:start + FOLLOW_GROUP])

    def _follow(self, host: HostView, ids: list[str]) -> None:
        where = Location(host.dpid, host.port, host.mac)
        now = holds(host)
        replaced = []
        for record in (self._ledger.by_id.get(i) for i in ids):
            if record is None or record.state not in LIVE:
                continue
            moved = (record.location.dpid, record.location.port) != (where.dpid, where.port)
            new = [a for a in now if a not in record.addresses]
            gone = [a for a in record.addresses if a not in now]
            if not moved and not new and not gone:
                continue
            try:
                replanned = self._decider.replan(record, where, host)
            except EnforcementError as exc:
                LOG.error("enforcement %s cannot follow %s to %016x port %d: %s",
                          record.id, host.mac, where.dpid, where.port, exc,
                          extra={"enforcement_id": record.id,
                                 "case_id": record.decision.case_id})
                continue
            if moved:
                what = (f"followed {record.decision.subscriber.ip} ({host.mac}) from switch "
                        f"{record.location.dpid:016x} port {record.location.port} to switch "
                        f"{where.dpid:016x} port {where.port}")
            else:
                what = "planned again for the subscriber's addresses: " + "; ".join(
                    part for part in (
                        "now holds " + ", ".join(new) if new else "",
                        "no longer holds " + ", ".join(gone) if gone else "") if part)
            replaced.append((record, replanned, "moved" if moved else "re-planned", what))
        self._replace_all(replaced)
        for record, replanned, how, what in replaced:
            LOG.info("enforcement %s %s", record.id, what, extra={
                "enforcement_id": record.id, "case_id": record.decision.case_id})
            self._ledger.event("moved" if how == "moved" else "reapplied", replanned, what)

    def links_changed(self) -> None:
        """A link went down or came up: enforcements that span switches (a
        quarantine steers its subscriber's requests along a path to the walled
        garden) are planned again on the current topology; those whose rules
        changed are re-placed."""
        with self._ledger.changing():
            spanning = [r for r in self._ledger.by_id.values()
                        if r.state in LIVE and len(switches(r)) > 1]
            rerouted = []
            for record in spanning:
                try:
                    updated = self._decider.replan(record, record.location)
                except EnforcementError as exc:
                    LOG.warning("enforcement %s keeps its path for now: %s", record.id, exc,
                                extra={"enforcement_id": record.id,
                                       "case_id": record.decision.case_id})
                    continue
                if set(updated.rules) == set(record.rules):
                    continue
                rerouted.append((record, updated, "re-routed"))
            self._replace_all(rerouted)
            for record, updated, _ in rerouted:
                what = "re-routed after a topology change: switches " + ", ".join(
                    f"{d:016x}" for d in switches(updated))
                LOG.info("enforcement %s %s", record.id, what, extra={
                    "enforcement_id": record.id, "case_id": record.decision.case_id})
                self._ledger.event("reapplied", updated, what)

    def _replace_all(self, replaced: list) -> None:
        """Stores re-planned enforcements ((record, replacement, how, ...)
        each) and syncs the switches of their old and new rules, in one push.
        Caller is inside changing()."""
        for _, replacement, *_ in replaced:
            self._ledger.save(replacement)
        if not replaced:
            return
        try:
            self.push()
        except SwitchError as exc:
            for record, _, how, *_ in replaced:
                LOG.error("enforcement %s %s but not yet installed: %s", record.id, how, exc,
                          extra={"enforcement_id": record.id,
                                 "case_id": record.decision.case_id})

    def repair_drift(self) -> int:
        """Audits every connected switch (repair_switch) and activates what
        waited for one. Returns how many switches needed a repair."""
        with self._ledger.lock:
            dpids = self._ledger.desired.switches()
        repaired = sum(self.repair_switch(dpid) for dpid in dpids
                       if self._network.is_connected(dpid))
        with self._ledger.changing():
            self.activate_pending()
        return repaired

    def repair_switch(self, dpid: int) -> bool:
        """Audits one switch (Network.audit: flows deleted, added or altered
        by hand, repaired against what the switch confirmed holding),
        brings it to the ledger's state and reports the drift. The switch
        reads run outside the lifecycle lock, so decisions go on meanwhile.
        Returns whether it needed a repair."""
        try:
            audited = self._network.audit(dpid, self.switch_timeout)
            if audited is None:
                return False  # reconnecting: its reconcile is under way
            changes = [audited]
            with self._ledger.changing():
                # What the switch confirmed against what the ledger wants:
                # they part only when a push failed half-way, and the
                # comparison costs the whole switch's state under the
                # lifecycle lock (a pause for every decision at 100,000
                # live), so only then, or after drift was repaired.
                if dpid in self._suspect or not audited.empty:
                    self._suspect.discard(dpid)
                    changes.append(self._sync_full(dpid))
                self._report_drift(dpid, changes)
        except SwitchError as exc:
            # A switch going away mid-check is what reconnects are for.
            log = LOG.warning if isinstance(exc, SwitchUnreachable) else LOG.error
            log("switch %016x: drift check failed: %s", dpid, exc)
            return False
        return any(not c.empty for c in changes)

    def _report_drift(self, dpid: int, changes: list[Change]) -> None:
        added = sum(len(c.rules_to_add) for c in changes)
        removed = sum(len(c.rules_to_delete) for c in changes)
        if not (added or removed or any(not c.empty for c in changes)):
            return
        what = (f"switch {dpid:016x}: re-added {added} rule(s), "
                f"removed {removed} stray rule(s)")
        LOG.warning("drift repaired: %s", what)
        for change in changes:
            for record in self._touched(change):
                self._ledger.event("drift_repaired", record, what)

    def activate_pending(self) -> None:
        ledger = self._ledger
        for record in [r for r in ledger.by_id.values() if r.state is State.PENDING]:
            where = switches(record)
            if not all(self._network.is_connected(d) for d in where):
                continue
            ledger.touch(record)
            try:
                self.push(where)
            except SwitchError as exc:
                LOG.error("pending enforcement %s still pending: %s", record.id, exc,
                          extra={"enforcement_id": record.id,
                                 "case_id": record.decision.case_id})
                continue
            active = ledger.save(record.moved_to(State.ACTIVE, "confirmed by the switch",
                                                 ledger.clock()))
            ledger.event("applied", active, active.action.description)

    def _touched(self, change: Change) -> list[Enforcement]:
        cookies = {r.cookie for r in change.rules_to_add} | {
            r.cookie for r in change.rules_to_delete}
        if not cookies:
            return []
        return [r for r in self._ledger.by_id.values() if r.cookie in cookies]


class _Once:
    """Reconciler.push's meanwhile as handed to the switches: every
    transaction of the push calls it (a retried one again, the next switch's
    too), the first call does the work. Its error is kept for settle():
    raised into the transaction, it would abandon the wait for an answer
    the switch is sending anyway, and the push would not book it."""
    __slots__ = ("_work", "_ran", "_error")

    def __init__(self, work: Meanwhile):
        self._work = work
        self._ran = False
        self._error: BaseException | None = None

    def __call__(self) -> None:
        if self._ran:
            return
        self._ran = True
        try:
            self._work()
        except BaseException as exc:  # raised by settle(), after the answers
            self._error = exc

    def settle(self) -> None:
        """After the push: the work done now if no transaction waited, or
        its error raised."""
        if not self._ran:
            self._ran = True
            self._work()
        elif self._error is not None:
            raise self._error
