"""Enforcement state on the switches: pushed, confirmed, read back, audited.

Owns what each switch confirmed holding of enforcement flows and meters
(the service's desired state lives in enforcement.lifecycle.ledger): computes the
difference to push, undoes a refused change so nothing is half-installed,
re-adds a reconnected switch's flows in place when a count shows nothing
else is there, and audits switches a part at a time. The flood set follows
what a change opens or closes at egress (controller/openflow/fabric.py) before the
call that pushed it returns.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from controller.openflow import compiler
from enforcement.domain import pipeline
from enforcement.domain.desired import (
    Change,
    SwitchState,
    apply_change,
    audit_parts,
    diff,
    diff_part,
    without_in_flight,
)
from enforcement.domain.errors import SwitchError

LOG = logging.getLogger(__name__)

# An audit reads at most about this many flows of a switch (see audit()).
AUDIT_FLOWS = 8192
# ... asking for about this many at a time: the switch answers a connection's
# requests in order, so a decision's barrier waits behind one such read at
# most, never behind the whole dump (parsed in this process: tens of ms per
# thousand flows).
AUDIT_CHUNK = 1024
_NO_CHANGE = Change((), (), (), (), ())


class SwitchSync:
    def __init__(self, transact: Callable, fabric):
        self._transact = transact
        self.fabric = fabric
        self._lock = threading.Lock()
        # What each switch confirmed holding of enforcement flows and meters.
        self._actual: dict[int, SwitchState] = {}
        self._sync_locks: dict[int, threading.Lock] = {}
        # Switches prepared but whose enforcement flows were only counted,
        # not read: dpid -> how many they hold.
        self._unread: dict[int, int] = {}
        self._audit_turns: dict[int, int] = {}
        # Changes sent to each switch so far: an audit's count of flows means
        # something only if none was sent while it counted (see audit()).
        self._pushes: dict[int, int] = {}

    def prepare(self, dpid: int, timeout: float, adopt: Callable[[list], None]) -> None:
        """A switch (re)connected, or this instance took over: only its
        meters and the number of its enforcement flows are read here
        (adopt(meters) hands the meters to the data plane, under the
        switch's lock); sync() decides whether the flows must be read."""
        with self.sync_lock(dpid):
            request = compiler.meter_config_request()
            replies = self._transact(dpid, [request], timeout)
            held = [compiler.meter_from_stats(dpid, st)
                    for st in replies.get(request.xid, [])]
            adopt(held)
            self._actual[dpid] = SwitchState({}, enforcement_meters(held))
            self._unread[dpid] = self.flow_count(dpid, timeout)

    def distrust_all(self) -> None:
        """This instance just took the lead: what it believed the switches
        held dates from before (another leader changed them since). Each is
        read before the next change is computed against it (held count -1:
        unknown), until its reconcile counts it afresh."""
        for dpid in list(self._actual):
            with self.sync_lock(dpid):
                self._unread[dpid] = -1

    def forget(self, dpid: int) -> None:
        self._actual.pop(dpid, None)
        self._unread.pop(dpid, None)

    def sync(self, dpid: int, desired: SwitchState, timeout: float,
             verify: bool = False):
        """Makes the switch hold exactly `desired` of enforcement state,
        sending only the difference to what it holds: what it confirmed
        before, or (verify=True) what it reports now, which catches drift.
        On a refusal the part already applied is undone, so nothing is
        half-installed. Returns the change pushed."""
        with self.sync_lock(dpid):
            held = self._unread.pop(dpid, None)
            if held is not None and not verify and held == len(desired.rules) > 0:
                change = self._reinstall(dpid, desired, timeout)
                if change is not None:
                    self.fabric.set_closing(dpid, replace=desired.rules.values())
                    return change
                verify = True  # it holds flows we do not want: read them
            elif held:
                verify = True
            if verify:
                self.fabric.audit(dpid)
            actual = (self.read_state(dpid, timeout) if verify
                      else self._actual.get(dpid, SwitchState.empty()))
            change = diff(actual, desired)
            if not change.empty:
                self._push(dpid, change, timeout, closing=False)
            self._actual[dpid] = SwitchState(dict(desired.rules), dict(desired.meters))
            self.fabric.set_closing(dpid, replace=desired.rules.values())
            return change

    def _reinstall(self, dpid: int, desired: SwitchState, timeout: float):
        """A reconnected switch holds as many enforcement flows as it should.
        Instead of reading them all (parsing 100,000 flow stats costs seconds),
        every wanted flow is added again (OFPFC_ADD replaces an identical flow
        in place; an altered one is put right) and the flows
        counted again: the same number means nothing else is there, so the
        switch holds exactly what it should. Returns the (empty) change, or
        None if other flows remain and must be read."""
        actual = self._actual.get(dpid, SwitchState.empty())
        meters = diff(SwitchState({}, actual.meters), SwitchState({}, desired.meters))
        count = compiler.flow_count_request(pipeline.NS_ENFORCE)
        self._pushes[dpid] = self._pushes.get(dpid, 0) + 1
        replies = self._transact(dpid, [*compiler.change_messages(dataclasses.replace(
            meters, rules_to_add=tuple(desired.rules.values()))), count], timeout)
        after = sum(r.flow_count for r in replies.get(count.xid, []))
        self._actual[dpid] = SwitchState(dict(desired.rules), dict(desired.meters))
        if after != len(desired.rules):
            LOG.info("switch %016x holds %d enforcement flow(s) beyond the %d wanted; "
                     "reading them", dpid, after - len(desired.rules), len(desired.rules))
            return None
        LOG.info("switch %016x: its %d enforcement flow(s) re-installed in place and "
                 "counted", dpid, after)
        return dataclasses.replace(meters, rules_to_add=())

    def flow_count(self, dpid: int, timeout: float) -> int:
        """How many enforcement flows the switch holds (one aggregate request)."""
        request = compiler.flow_count_request(pipeline.NS_ENFORCE)
        replies = self._transact(dpid, [request], timeout).get(request.xid, [])
        return sum(r.flow_count for r in replies)

    def audit(self, dpid: int, timeout: float):
        """Checks a switch against what it confirmed holding, and repairs what
        differs (flows deleted, added or altered by hand, meters too).

        Every audit counts the enforcement flows (one aggregate request): a
        count that differs means flows were deleted or added, and every flow
        is read. Otherwise one part of them is read, by cookie: all of them up
        to AUDIT_FLOWS flows, else a rotating 1/2^k of them, so that a switch
        holding 100,000 flows is never parsed whole every few seconds (an
        altered flow is then found within 2^k audits). The reading runs
        beside decisions; only the comparison and the repair hold the
        switch's lock, so redundant repairs are possible, wrong ones are not:
        a re-add of what is wanted, a delete of what is not, both idempotent.
        Returns the change pushed, or None for a switch not reconciled yet."""
        with self.sync_lock(dpid):
            if dpid in self._unread or dpid not in self._actual:
                return None  # not reconciled yet: its reconnect does that
            wanted, pushes = len(self._actual[dpid].rules), self._pushes.get(dpid, 0)
        self.fabric.audit(dpid)
        held = self.flow_count(dpid, timeout)
        with self.sync_lock(dpid):
            actual = self._actual.get(dpid)
            if actual is None:
                return _NO_CHANGE
            if self._pushes.get(dpid, 0) != pushes:
                # Decisions changed the switch meanwhile: the count says
                # nothing, even back at as many flows (an apply and a lift
                # between the two reads, counted in between, looked like two
                # strays, and every flow was read: seconds at 100,000 live,
                # with every barrier behind the dump). The rotating part read
                # below still finds deleted or altered flows, a few audits later.
                held = wanted
            parts = audit_parts(wanted, held, AUDIT_FLOWS)
            turn = self._audit_turns.get(dpid, 0)
            self._audit_turns[dpid] = turn + 1
            part = turn % parts
            # What the switch held, by what it confirmed, when the read began.
            before = SwitchState(
                {k: r for k, r in actual.rules.items() if r.cookie % parts == part},
                dict(actual.meters))
        meters = compiler.meter_config_request()
        replies = self._transact(dpid, [meters], timeout)
        seen = SwitchState(
            SwitchState.of(self._read_part(dpid, part, parts, len(before.rules), timeout),
                           ()).rules,
            enforcement_meters(compiler.meter_from_stats(dpid, st)
                                for st in replies.get(meters.xid, [])))
        with self.sync_lock(dpid):
            actual = self._actual.get(dpid)
            if actual is None:
                return _NO_CHANGE
            expected = SwitchState(
                {k: r for k, r in actual.rules.items() if r.cookie % parts == part},
                actual.meters)
            # The read ran beside decisions: a flow it saw as the switch held
            # it before or after them is no drift; only one that matches
            # neither was changed by someone else.
            change = without_in_flight(diff(seen, expected), seen, before)
            self._push(dpid, change, timeout)
            return change

    def sync_part(self, dpid: int, rules: dict, meters: dict, timeout: float,
                  meanwhile: Callable[[], None] | None = None):
        """sync() for some rule keys and meter ids only (what a batch of
        decisions touched): compared with what the switch confirmed before,
        the difference pushed in one transaction, undone if refused.
        meanwhile goes to each transaction of this call (the lifecycle's
        work while the switch confirms: see Sessions.transact)."""
        with self.sync_lock(dpid):
            if self._unread.pop(dpid, None):
                # Reconnected and not reconciled yet: what it holds must be
                # known before a change can be computed against it.
                self._actual[dpid] = self.read_state(dpid, timeout, meanwhile)
                self.fabric.set_closing(dpid, replace=self._actual[dpid].rules.values())
            actual = self._actual.setdefault(dpid, SwitchState.empty())
            change = diff_part(actual, rules, meters)
            self._push(dpid, change, timeout, meanwhile=meanwhile)
            apply_change(actual, change)
            return change

    def _push(self, dpid: int, change, timeout: float, closing: bool = True,
              meanwhile: Callable[[], None] | None = None) -> None:
        """Sends a change in one confirmed transaction; if the switch refuses
        any of it, what was applied is undone and the refusal raised. Then
        (closing) the flood set follows what the change opened or closed
        at egress, before the caller answers."""
        if change.empty:
            return
        self._pushes[dpid] = self._pushes.get(dpid, 0) + 1  # callers hold its sync lock
        try:
            self._transact(dpid, compiler.change_messages(change), timeout,
                           meanwhile=meanwhile)
        except SwitchError:
            self._undo(dpid, change, timeout, meanwhile)
            raise
        if closing:
            self.fabric.set_closing(dpid, added=change.rules_to_add,
                                    deleted=change.rules_to_delete)

    def _read_part(self, dpid: int, part: int, parts: int, expected: int,
                   timeout: float) -> list:
        """The enforcement flows whose cookie is part modulo parts, read in
        chunks of about AUDIT_CHUNK flows (by cookie again), one after the
        other (expected: how many there should be)."""
        chunks = 1
        while expected > chunks * AUDIT_CHUNK:
            chunks *= 2
        rules = []
        for chunk in range(chunks):
            request = compiler.flow_stats_request(pipeline.NS_ENFORCE, part + chunk * parts,
                                                  parts * chunks)
            replies = self._transact(dpid, [request], timeout)
            rules += [compiler.rule_from_stats(dpid, st) for st in replies.get(request.xid, [])]
        return rules

    def read_state(self, dpid: int, timeout: float,
                   meanwhile: Callable[[], None] | None = None) -> SwitchState:
        """The enforcement flows (by cookie namespace) and the meters the
        switch holds right now."""
        flows, meters = compiler.flow_stats_request(pipeline.NS_ENFORCE), \
            compiler.meter_config_request()
        replies = self._transact(dpid, [flows, meters], timeout, meanwhile=meanwhile)
        return SwitchState(
            SwitchState.of([compiler.rule_from_stats(dpid, st)
                            for st in replies.get(flows.xid, [])], ()).rules,
            enforcement_meters(compiler.meter_from_stats(dpid, st)
                                for st in replies.get(meters.xid, [])))

    def flow_counters(self, dpid: int, cookie: int, timeout: float = 2.0) -> dict:
        """Packets and bytes that hit an enforcement's flows on a switch: the
        drop rules count what was dropped, the meter rules what was metered.
        (A flow two enforcements share carries the older one's cookie.)"""
        request = compiler.cookie_stats_request(cookie)
        stats = self._transact(dpid, [request], timeout).get(request.xid, [])
        return {"flows": len(stats), "packets": sum(st.packet_count for st in stats),
                "bytes": sum(st.byte_count for st in stats)}

    def _undo(self, dpid: int, change, timeout: float,
              meanwhile: Callable[[], None] | None = None) -> None:
        # Deleting what may not exist is no error in OpenFlow; re-adding what
        # was deleted replaces it. Meters are removed only once nothing uses them.
        undo = [*map(compiler.flow_delete, change.rules_to_add),
                *map(compiler.flow_add, change.rules_to_delete),
                *map(compiler.meter_delete, change.meters_to_add)]
        try:
            self._transact(dpid, undo, timeout, meanwhile=meanwhile)
        except SwitchError as exc:
            LOG.error("switch %016x: undoing a refused change failed too (%s); "
                      "it will be rebuilt when it reconnects", dpid, exc)

    def sync_lock(self, dpid: int) -> threading.Lock:
        with self._lock:
            return self._sync_locks.setdefault(dpid, threading.Lock())


def enforcement_meters(meters) -> dict:
    """The enforcement meters among a switch's (the data plane's own per-port
    meters are controller/openflow/fabric.py's)."""
    return {m.meter_id: m for m in meters if pipeline.is_enforcement_meter(m.meter_id)}
