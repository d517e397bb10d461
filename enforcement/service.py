"""The enforcement lifecycle: decide, store, install, confirm, expire, lift,
and keep the switches true to the store.

Owns the set of enforcements (durable in the Store, mirrored in memory).
Talks to switches only through the Network protocol (implemented by the OS-Ken
app, or by a double in unit tests), and to clients only through the API
layer, which maps its errors to status codes.

States: PENDING (a switch is not connected) -> ACTIVE (barrier-confirmed) or
FAILED (the switch's error) -> LIFTED or EXPIRED. A PENDING enforcement is
applied as soon as its switches connect.

Speed: decisions that arrive together form one batch (group commit): each
switch gets the batch's flow changes and one barrier, the store one
transaction, and the answers go out once both confirmed. What a decision
changes is tracked per rule key (DesiredIndex), so its cost does not grow
with the number of live enforcements. A decision is written when the switch
confirmed it: if the controller dies in between, the rules it installed are
strays for the next reconcile to remove and the unanswered client retries
with the same request id.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import heapq
import ipaddress
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import tenacity

from enforcement import pipeline, planner, routing
from enforcement.alarms import PortAlarms
from enforcement.batching import GroupCommit
from enforcement.desired import Change, DesiredIndex, SwitchState
from enforcement.errors import (AlreadyExists, EnforcementError, FailedPrecondition,
                                InvalidArgument, NotFound, SwitchError, SwitchUnreachable)
from enforcement.model import (Action, ActionKind, Decision, Enforcement, Escalation,
                               Location, PortAlarm, Proposal, State, TopologyView)
from enforcement.policy import Policy
from enforcement.store import Event, Store

LOG = logging.getLogger(__name__)

_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}
# Flows of an expiring enforcement carry a hard timeout this much past the
# expiry, in case the controller is down when it comes: a backstop only.
EXPIRY_BACKSTOP_SECONDS = 30
MAX_HARD_TIMEOUT = 65535
LIVE = (State.ACTIVE, State.PENDING)


class Network(Protocol):
    def locate(self, ip: str) -> Location | None: ...
    def is_connected(self, dpid: int) -> bool: ...
    def sync(self, dpid: int, desired: SwitchState, timeout: float,
             verify: bool = False) -> Change: ...
    def sync_part(self, dpid: int, rules: dict, meters: dict, timeout: float) -> Change: ...
    def audit(self, dpid: int, timeout: float) -> Change | None: ...
    def topology(self) -> TopologyView: ...


class EnforcementService:
    def __init__(self, network: Network, policy: Policy, store: Store, *,
                 switch_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time, max_batch: int = 256):
        self._network = network
        self.policy = policy
        self._store = store
        self._switch_timeout = switch_timeout
        self._clock = clock
        # One lock for the whole lifecycle keeps apply/lift/expiry/repair of
        # the same switch from interleaving. Decisions hold it per batch
        # (group commit), not per call.
        self._lock = threading.RLock()
        self._new_event = threading.Condition()
        self._event_listeners: list[Callable[[str, Enforcement], None]] = []
        self._by_id: dict[str, Enforcement] = {}
        self._by_request: dict[str, str] = {}
        # (subscriber ip, violation) -> record ids, oldest first: the history
        # escalation reads without scanning every enforcement.
        self._history: dict[tuple, list[str]] = {}
        self._failed: dict[tuple, set[str]] = {}  # the FAILED ids of each history
        self._expiries: list[tuple[float, str]] = []  # heap of (expires_at, id)
        self._desired = DesiredIndex()
        self._live_by_ip: dict[str, set[str]] = {}  # subscriber address -> live ids
        self._work = _Work()
        self._depth = 0
        self._commits = GroupCommit(self._run_jobs, max_batch=max_batch)
        self._alarms = PortAlarms(store, clock, self._announce)
        for record in store.load_all():
            self._put(record)
        self._work = _Work()
        self._next_serial = 1 + max((r.serial for r in self._by_id.values()), default=0)
        live = sum(1 for r in self._by_id.values() if r.state in LIVE)
        LOG.info("store %s: %d enforcements, %d live", store.url, len(self._by_id), live)

    # ---- decisions -----------------------------------------------------------

    def plan(self, decision: Decision) -> Proposal:
        """Exactly what apply() would install now, touching no switch."""
        with self._lock:
            return self._propose(decision)

    def apply(self, decision: Decision, actor: str = "") -> Enforcement:
        """Plans, installs (confirmed by the switch's barrier), stores, then
        answers. Calls arriving together are batched (enforcement.batching):
        one push per switch and one commit for the batch."""
        return self._commits.submit(functools.partial(self._stage_apply, decision, actor))

    def lift(self, enforcement_id: str, reason: str, actor: str = "") -> Enforcement:
        return self._commits.submit(functools.partial(self._stage_lift, enforcement_id,
                                                      reason, actor))

    def apply_many(self, decisions: list[Decision], actor: str = "") -> list:
        """apply() of each, in as few batches as possible; outcomes in order,
        an EnforcementError instance for a refused decision."""
        return self._commits.submit_many([functools.partial(self._stage_apply, d, actor)
                                          for d in decisions])

    def lift_many(self, lifts: list[tuple[str, str]], actor: str = "") -> list:
        """lift() of each (id, reason); outcomes in order, errors as values."""
        return self._commits.submit_many([functools.partial(self._stage_lift, i, r, actor)
                                          for i, r in lifts])

    @property
    def batch_counts(self) -> tuple[int, int]:
        """(batches run, decisions in them), for the benchmark and metrics."""
        return self._commits.batches, self._commits.jobs

    def _run_jobs(self, stagers) -> list:
        """A group-commit batch: its jobs are stagers (see _run)."""
        with self._changing():
            return self._run(list(stagers))

    def expire_due(self) -> list[Enforcement]:
        """Ends every live enforcement whose time has come (also those that
        came while the controller was down), as one batch."""
        with self._changing():
            now = self._clock()
            due = []
            while self._expiries and self._expiries[0][0] <= now:
                at, record_id = heapq.heappop(self._expiries)
                record = self._by_id.get(record_id)
                if record is not None and record.state in LIVE and record.expires_at == at:
                    due.append(record)
            outcomes = self._run([functools.partial(
                self._stage_end, r.id, State.EXPIRED, "expired", "controller", "Expire")
                for r in due])
            ended = []
            for record, outcome in zip(due, outcomes):
                if isinstance(outcome, Exception):
                    LOG.error("enforcement %s did not expire yet: %s", record.id, outcome)
                    heapq.heappush(self._expiries, (record.expires_at, record.id))
                else:
                    ended.append(outcome)
            return ended

    # ---- batches -------------------------------------------------------------

    def _run(self, stagers: list) -> list:
        """Stages every call (memory and desired state change, nothing sent
        yet), pushes what they changed to each switch once, then finishes
        them (records, events, audit). If a switch refuses a batch of several,
        the batch is rolled back and every call run alone, so a refusal is
        pinned on the decision that caused it. Caller is inside _changing()."""
        outcomes: list = [None] * len(stagers)
        mark = self._work.mark()
        staged = []
        try:
            for i, stage in enumerate(stagers):
                try:
                    staged.append((i, stage()))
                except EnforcementError as exc:
                    outcomes[i] = exc
            self._push()
        except SwitchError as exc:
            if not staged:
                raise
            if len(staged) == 1:
                i, call = staged[0]
                outcomes[i] = call.failed(exc)
                return outcomes
            LOG.warning("a batch of %d decisions was refused (%s); running them one "
                        "by one", len(staged), exc)
            self._rollback(mark)
            self._push(best_effort=True)
            for i, _ in staged:
                outcomes[i] = self._run([stagers[i]])[0]
            return outcomes
        except Exception:
            # A bug, not a refusal: leave nothing half-staged behind.
            self._rollback(mark)
            self._push(best_effort=True)
            raise
        for i, call in staged:
            try:
                outcomes[i] = call.finish()
            except EnforcementError as exc:
                outcomes[i] = exc
        return outcomes

    def _stage_apply(self, decision: Decision, actor: str) -> "_Staged":
        existing = self._idempotent_replay(decision)
        if existing is not None:
            return _Staged(lambda: self._by_id[existing.id])
        proposal = self._propose(decision)
        now = self._clock()
        expires_at = _expiry(decision, now)
        record = Enforcement(
            id=f"enf-{uuid.uuid4().hex[:16]}", decision=decision,
            action=proposal.action, location=proposal.location,
            escalation=proposal.escalation, cookie=proposal.cookie,
            rules=_with_backstop(proposal.rules, expires_at, now),
            meters=proposal.meters, state=State.PENDING,
            state_reason="waiting for the switch", created_at=now,
            updated_at=now, expires_at=expires_at)
        self._next_serial += 1
        switches = _switches(record)
        offline = [d for d in switches if not self._network.is_connected(d)]
        if offline:
            record = self._save(record.moved_to(
                State.PENDING, "switch " + ", ".join(f"{d:016x}" for d in offline)
                + " not connected; applied when it connects", now))
            self._event("pending", record, record.state_reason)
            self._audit(actor, "Apply", "OK", record, "stored pending: "
                        + "; ".join(r.text() for r in record.rules))
            return _Staged(lambda: record)
        self._save(record)

        def finish():
            active = self._save(record.moved_to(State.ACTIVE, "confirmed by the switch",
                                                self._clock()))
            LOG.debug("enforcement %s active: %s on %016x port %d (%s)", active.id,
                      active.action.description, active.location.dpid,
                      active.location.port, active.escalation.reason)
            self._event("applied", active, active.action.description)
            self._audit(actor, "Apply", "OK", active,
                        "installed: " + "; ".join(r.text() for r in active.rules))
            return active

        def failed(exc):
            LOG.error("enforcement %s failed: %s", record.id, exc)
            failed = self._save(record.moved_to(State.FAILED, str(exc), self._clock()))
            self._push(best_effort=True)
            self._event("failed", failed, str(exc))
            self._audit(actor, "Apply", "FAILED", failed, str(exc))
            return failed
        return _Staged(finish, failed)

    def _stage_lift(self, enforcement_id: str, reason: str, actor: str) -> "_Staged":
        return self._stage_end(enforcement_id, State.LIFTED, reason or "lifted", actor, "Lift")

    def _stage_end(self, enforcement_id: str, state: State, reason: str, actor: str,
                   call: str) -> "_Staged":
        """Lifts or expires: every connected switch confirms the removal
        before the answer; a disconnected one is reconciled when it comes back."""
        record = self.get(enforcement_id)
        if record.state not in LIVE:
            return _Staged(lambda: record)
        ended = self._save(record.moved_to(state, reason, self._clock()))
        connected = [d for d in _switches(record) if self._network.is_connected(d)]

        def finish():
            later = set(_switches(record)) - set(connected)
            detail = reason + ("" if not later else "; removed from switch " + ", ".join(
                f"{d:016x}" for d in sorted(later)) + " when it reconnects")
            LOG.debug("enforcement %s %s: %s", record.id, state.value, detail)
            self._event(state.value, ended, detail)
            self._audit(actor, call, "OK", ended,
                        "removed: " + "; ".join(r.text() for r in record.rules))
            return ended

        def failed(exc):
            self._save(record)
            self._push(best_effort=True)
            self._audit(actor, call, "FAILED_PRECONDITION", record, str(exc))
            return FailedPrecondition(
                f"the switches did not confirm removing {record.id}: {exc}")
        return _Staged(finish, failed)

    # ---- reading -------------------------------------------------------------

    def get(self, enforcement_id: str) -> Enforcement:
        with self._lock:
            record = self._by_id.get(enforcement_id)
        if record is None:
            raise NotFound(f"no enforcement with id {enforcement_id!r}")
        return record

    def list(self, *, subscriber_ip: str = "", case_id: str = "",
             states: Iterable[State] = ()) -> list[Enforcement]:
        wanted = set(states)
        with self._lock:
            records = list(self._by_id.values())
        return [r for r in sorted(records, key=lambda r: (r.created_at, r.serial))
                if (not subscriber_ip or str(r.decision.subscriber.ip) == subscriber_ip)
                and (not case_id or r.decision.case_id == case_id)
                and (not wanted or r.state in wanted)]

    def topology(self) -> tuple[TopologyView, dict[str, list[str]]]:
        """The network, plus active enforcement ids per subscriber IP."""
        view = self._network.topology()
        per_ip: dict[str, list[str]] = {}
        for record in self.list(states=[State.ACTIVE]):
            per_ip.setdefault(str(record.decision.subscriber.ip), []).append(record.id)
        return view, per_ip

    def watch(self, *, after: int = 0, subscriber_ip: str = "", case_id: str = "",
              still_wanted: Callable[[], bool] = lambda: True,
              poll: float = 0.5) -> Iterator[Event]:
        """Events after a sequence number, then live ones as they happen."""
        last = after
        while still_wanted():
            events = self._store.events_after(last, subscriber_ip=subscriber_ip,
                                              case_id=case_id)
            for event in events:
                last = event.sequence
                yield event
            if not events:
                with self._new_event:
                    self._new_event.wait(poll)

    def report_port_alarm(self, alarm: PortAlarm) -> None:
        """From the controller, on any thread: a port over a budget becomes a
        stored port_over_budget event, announced like the others; no lifecycle
        lock, no switch (enforcement.alarms)."""
        self._alarms.report(alarm)

    def audit_log(self, **filters):
        return self._store.audit(**filters)

    def record_refusal(self, actor: str, call: str, case_id: str, enforcement_id: str,
                       outcome: str, message: str) -> None:
        """A refused call changes nothing, but who asked for what stays on record."""
        self._store.append_audit(at=self._clock(), actor=actor or "unknown", call=call,
                                 outcome=outcome, enforcement_id=enforcement_id,
                                 case_id=case_id, clause="", detail=message)

    # ---- keeping switches true -------------------------------------------------

    def resync(self, dpid: int) -> None:
        """A switch (re)connected, holding what it still holds: bring it to
        the store's state and finish what was waiting for it."""
        with self._changing():
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
                    self._event("reapplied", record, f"put back on switch {dpid:016x} "
                                "after it reconnected")
            self._activate_pending()

    def host_moved(self, ip: str) -> None:
        """A subscriber's host was seen on another access port: its live
        enforcements are planned again at the new port (same step, same
        cookie), installed there and removed from the old place, so the
        narrowest placement follows the subscriber."""
        with self._changing():
            where = self._network.locate(ip)
            if where is None:
                return
            live = sorted((self._by_id[i] for i in self._live_by_ip.get(ip, ())),
                          key=lambda r: (r.created_at, r.id))
            stale = [r for r in live
                     if (r.location.dpid, r.location.port) != (where.dpid, where.port)]
            for record in stale:
                try:
                    moved = self._replan(record, where)
                except EnforcementError as exc:
                    LOG.error("enforcement %s cannot follow %s to %016x port %d: %s",
                              record.id, ip, where.dpid, where.port, exc)
                    continue
                self._replace(record, moved, "moved")
                what = (f"followed {ip} from switch {record.location.dpid:016x} port "
                        f"{record.location.port} to switch {where.dpid:016x} port {where.port}")
                LOG.info("enforcement %s %s", record.id, what)
                self._event("moved", moved, what)

    def is_enforced(self, ip: str) -> bool:
        """Whether any enforcement on ip is live. Lock-free (one dict read),
        so the OpenFlow event thread may ask it."""
        return ip in self._live_by_ip

    def _replace(self, record, replacement, how: str) -> None:
        """Stores a re-planned enforcement and syncs the switches of both its
        old and new rules. Caller is inside _changing()."""
        self._save(replacement)
        try:
            self._push()
        except SwitchError as exc:
            LOG.error("enforcement %s %s but not yet installed: %s", record.id, how, exc)

    def links_changed(self) -> None:
        """A link went down or came up: enforcements that span switches (a
        quarantine steers its subscriber's requests along a path to the walled
        garden) are planned again on the current topology; those whose rules
        changed are re-placed."""
        with self._changing():
            spanning = [r for r in self._by_id.values()
                        if r.state in LIVE and len(_switches(r)) > 1]
            for record in spanning:
                try:
                    updated = self._replan(record, record.location)
                except EnforcementError as exc:
                    LOG.warning("enforcement %s keeps its path for now: %s", record.id, exc)
                    continue
                if set(updated.rules) == set(record.rules):
                    continue
                self._replace(record, updated, "re-routed")
                what = "re-routed after a topology change: switches " + ", ".join(
                    f"{d:016x}" for d in _switches(updated))
                LOG.info("enforcement %s %s", record.id, what)
                self._event("reapplied", updated, what)

    def _replan(self, record: Enforcement, where: Location) -> Enforcement:
        decision = record.decision
        spec = (decision.requested_action
                or self.policy.rung(decision.violation).ladder[record.escalation.step - 1])
        ip = decision.subscriber.ip
        target = planner.Target(where, ip, decision.scope or ipaddress.IPv4Network(ip))
        context = planner.Context(self.policy.assets, self.policy.quarantine_vlan,
                                  self._walled_garden_routes(spec, where))
        planned = planner.plan(spec, target, context, record.cookie, meter_id=record.serial)
        now = self._clock()
        return dataclasses.replace(
            record, location=where, rules=_with_backstop(planned.rules, record.expires_at, now),
            meters=planned.meters, updated_at=now)

    def repair_drift(self) -> int:
        """Audits every connected switch (Network.audit: flows deleted, added
        or altered by hand, repaired against what the switch confirmed
        holding) and brings each to the store's state. The switch reads run
        outside the lifecycle lock, so decisions go on meanwhile. Returns how
        many switches needed a repair."""
        repaired = 0
        with self._lock:
            dpids = self._desired.switches()
        for dpid in dpids:
            if not self._network.is_connected(dpid):
                continue
            try:
                audited = self._network.audit(dpid, self._switch_timeout)
                if audited is None:
                    continue  # reconnecting: its reconcile is under way
                changes = [audited]
                with self._changing():
                    # What the switch confirmed against what the store wants
                    # (they part only when a push failed half-way).
                    changes.append(self._sync_full(dpid))
                    self._report_drift(dpid, changes)
            except SwitchError as exc:
                # A switch going away mid-check is what reconnects are for.
                log = LOG.warning if isinstance(exc, SwitchUnreachable) else LOG.error
                log("switch %016x: drift check failed: %s", dpid, exc)
                continue
            repaired += any(not c.empty for c in changes)
        with self._changing():
            self._activate_pending()
        return repaired

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
                self._event("drift_repaired", record, what)

    def _activate_pending(self) -> None:
        for record in [r for r in self._by_id.values() if r.state is State.PENDING]:
            switches = _switches(record)
            if not all(self._network.is_connected(d) for d in switches):
                continue
            self._touch(record)
            try:
                self._push(switches)
            except SwitchError as exc:
                LOG.error("pending enforcement %s still pending: %s", record.id, exc)
                continue
            active = self._save(record.moved_to(State.ACTIVE, "confirmed by the switch",
                                                self._clock()))
            self._event("applied", active, active.action.description)

    def _touched(self, change: Change) -> list[Enforcement]:
        cookies = {r.cookie for r in change.rules_to_add} | {
            r.cookie for r in change.rules_to_delete}
        if not cookies:
            return []
        return [r for r in self._by_id.values() if r.cookie in cookies]

    # ---- pushing to switches ------------------------------------------------------

    def _touch(self, record: Enforcement) -> None:
        """Marks an enforcement's rules and meters as to be compared with the
        switches at the next push."""
        for rule in record.rules:
            self._work.touched.setdefault(rule.dpid, (set(), set()))[0].add(rule.key)
        for meter in record.meters:
            self._work.touched.setdefault(meter.dpid, (set(), set()))[1].add(meter.meter_id)

    def _push(self, dpids: Iterable[int] | None = None, best_effort: bool = False) -> None:
        """Brings what was touched on each connected switch (all, or those
        given) to the desired state, in one confirmed transaction per switch.
        A disconnected switch is left to its reconcile. best_effort: after a
        failure, put back what the others held, logging what cannot be."""
        wanted = None if dpids is None else set(dpids)
        for dpid in sorted(self._work.touched):
            if wanted is not None and dpid not in wanted:
                continue
            keys, meter_ids = self._work.touched.pop(dpid)
            if not self._network.is_connected(dpid):
                continue
            try:
                self._sync_part(dpid, *self._desired.part(dpid, keys, meter_ids))
            except SwitchError as exc:
                if not best_effort:
                    raise
                LOG.error("switch %016x: could not restore its enforcements: %s", dpid, exc)

    @tenacity.retry(retry=tenacity.retry_if_exception_type(SwitchUnreachable),
                    stop=tenacity.stop_after_attempt(3),
                    wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.5),
                    before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
                    reraise=True)
    def _sync_part(self, dpid: int, rules: dict, meters: dict) -> Change:
        return self._network.sync_part(dpid, rules, meters, self._switch_timeout)

    @tenacity.retry(retry=tenacity.retry_if_exception_type(SwitchUnreachable),
                    stop=tenacity.stop_after_attempt(3),
                    wait=tenacity.wait_random_exponential(multiplier=0.05, max=0.5),
                    before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
                    reraise=True)
    def _sync_full(self, dpid: int) -> Change:
        """The whole desired state of a switch against what it holds."""
        self._work.touched.pop(dpid, None)
        return self._network.sync(dpid, self._desired.state(dpid), self._switch_timeout)

    # ---- planning --------------------------------------------------------------

    def _propose(self, decision: Decision) -> Proposal:
        self._guard(decision)
        where = self._locate(decision)
        escalation, spec = self._escalate(decision)
        ip = decision.subscriber.ip
        target = planner.Target(where, ip, decision.scope or ipaddress.IPv4Network(ip))
        context = planner.Context(self.policy.assets, self.policy.quarantine_vlan,
                                  self._walled_garden_routes(spec, where))
        cookie = pipeline.enforcement_cookie(self._next_serial)
        planned = planner.plan(spec, target, context, cookie, meter_id=self._next_serial)
        action = Action(spec.kind, spec.describe(str(decision.scope or ip)))
        return Proposal(action, where, escalation, cookie, planned.rules, planned.meters)

    def _walled_garden_routes(self, spec, where: Location) -> dict:
        if spec.kind is not ActionKind.QUARANTINE:
            return {}
        view = self._network.topology()
        servers = [*self.policy.assets.dns, *self.policy.assets.named(spec.portal)]
        routes = {}
        for server in servers:
            address = str(server.network_address)
            try:
                routes[address] = routing.route(view, where.dpid, address)
            except routing.NoRoute as exc:
                raise FailedPrecondition(
                    f"cannot quarantine: walled-garden server {exc}; nothing was changed"
                ) from None
        return routes

    def _guard(self, decision: Decision) -> None:
        """Protected assets can never be enforced against, and a scope wider
        than one subscriber needs the policy's leave."""
        scope = decision.scope or ipaddress.IPv4Network(decision.subscriber.ip)
        limits = self.policy.limits
        if scope.prefixlen < 32 and not limits.allow_wider_scope:
            raise FailedPrecondition(
                f"scope {scope} is wider than one subscriber and the policy does not "
                "allow wider scopes (limits.allow_wider_scope); nothing was changed")
        if scope.prefixlen < limits.max_scope_prefix_length:
            raise FailedPrecondition(
                f"scope {scope} is wider than the policy allows "
                f"(/{limits.max_scope_prefix_length} at most); nothing was changed")
        if decision.until is not None and decision.until <= self._clock():
            raise InvalidArgument("expires_at is in the past")
        clash = self._protected_overlap(scope)
        if clash is not None:
            network, name = clash
            raise FailedPrecondition(
                f"{scope} covers {network}, a protected asset "
                f"(assets.{name} in the policy); nothing was changed")

    @functools.lru_cache(maxsize=65536)
    def _protected_overlap(self, scope):
        """The first protected asset a scope overlaps, and its list's name
        (the policy is fixed for the service's life, so scopes are cached)."""
        assets = self.policy.assets
        for name in ("dns", "portal", "billing_portal", "mail_servers", "smarthosts",
                     "protected"):
            for network in getattr(assets, name):
                if scope.overlaps(network):
                    return network, name
        return None

    def _escalate(self, decision: Decision):
        rung = self.policy.rung(decision.violation)
        since = self._clock() - self.policy.window_seconds
        ids = self._history.get(_history_key(decision), [])
        # History is in creation order: the window is a tail of it.
        first = bisect.bisect_left(ids, since, key=lambda i: self._by_id[i].created_at)
        failed = self._failed.get(_history_key(decision), set())
        within = len(ids) - first
        if failed:
            within -= sum(1 for i in failed if self._by_id[i].created_at >= since)
        recent = []
        at = len(ids)
        while at > first and len(recent) < 3:
            at -= 1
            if ids[at] not in failed:
                recent.append(ids[at])
        count = within + 1
        step = min(count, len(rung.ladder))
        days = self.policy.window_seconds // 86400
        reason = (f"{_ORDINAL.get(count, f'{count}th')} {decision.violation.value} violation "
                  f"by {decision.subscriber.ip} within {days} days")
        if within:
            # The most recent few: the list must not grow with the history.
            shown = ", ".join(reversed(recent))
            reason += (f" (earlier: {shown})" if within <= 3
                       else f" (earlier: {shown} and {within - 3} more)")
        reason += f": step {step} of {len(rung.ladder)}"
        spec = rung.ladder[step - 1]
        if decision.requested_action is not None:
            spec = decision.requested_action
            reason += "; the request chose its own action within the policy's bounds"
        next_spec = rung.ladder[min(step, len(rung.ladder) - 1)]
        escalation = Escalation(step, len(rung.ladder), reason, rung.clause,
                                next_spec.describe(str(decision.subscriber.ip)))
        return escalation, spec

    def _idempotent_replay(self, decision: Decision) -> Enforcement | None:
        known = self._by_request.get(decision.request_id)
        if known is None:
            return None
        record = self._by_id[known]
        if record.decision != decision:
            raise AlreadyExists(
                f"request_id {decision.request_id!r} was already used for a "
                f"different decision ({record.id}); use a new request_id")
        return record

    def _locate(self, decision: Decision) -> Location:
        ip = str(decision.subscriber.ip)
        where = self._network.locate(ip)
        if where is None:
            raise NotFound(
                f"subscriber {ip} has not been seen on any switch; it must send "
                "traffic (even one ARP) before it can be located")
        if decision.subscriber.mac and decision.subscriber.mac != where.mac:
            raise FailedPrecondition(
                f"subscriber {ip} was seen with MAC {where.mac}, not "
                f"{decision.subscriber.mac}; check the case or leave mac empty")
        return where

    # ---- records, events, audit ----------------------------------------------------

    @contextlib.contextmanager
    def _changing(self):
        """The lifecycle lock, and one unit of work: whatever changes inside
        is written in one transaction when the outermost block ends, and only
        then announced to watchers and listeners."""
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._flush()

    def _flush(self) -> None:
        work, self._work = self._work, _Work()
        if not (work.records or work.events or work.audits):
            return
        latest = {r.id: r for r in work.records}
        self._store.write(latest.values(), work.events, work.audits)
        self._announce(work.events)

    def _announce(self, events: list) -> None:
        """Wakes Watch streams and tells the listeners about stored events."""
        if events:
            with self._new_event:
                self._new_event.notify_all()
        for _, kind, record, _ in events:
            for listener in self._event_listeners:
                try:
                    listener(kind, record)
                except Exception:  # an observer must never break the lifecycle
                    LOG.exception("event listener failed")

    def _save(self, record: Enforcement) -> Enforcement:
        """Takes a record's new version into memory and the desired state now,
        into the store at the end of the unit of work."""
        self._put(record)
        self._work.records.append(record)
        return record

    def _put(self, record: Enforcement) -> None:
        old = self._by_id.get(record.id)
        self._by_id[record.id] = record
        self._by_request[record.decision.request_id] = record.id
        if old is None:
            self._history.setdefault(_history_key(record.decision), []).append(record.id)
            if record.expires_at is not None:
                heapq.heappush(self._expiries, (record.expires_at, record.id))
        if record.state is State.FAILED:
            self._failed.setdefault(_history_key(record.decision), set()).add(record.id)
        self._work.journal.append((record.id, old))
        self._index(old, record)

    def _index(self, old: Enforcement | None, new: Enforcement | None) -> None:
        was_live = old is not None and old.state in LIVE
        live = new is not None and new.state in LIVE
        if was_live and live and old.rules == new.rules and old.meters == new.meters:
            return
        if was_live:
            self._desired.remove(_order(old), old.rules, old.meters)
            self._touch(old)
            ip = str(old.decision.subscriber.ip)
            ids = self._live_by_ip[ip]
            ids.discard(old.id)
            if not ids:
                del self._live_by_ip[ip]
        if live:
            self._desired.add(_order(new), new.rules, new.meters)
            self._touch(new)
            self._live_by_ip.setdefault(str(new.decision.subscriber.ip), set()).add(new.id)

    def _rollback(self, mark: tuple[int, int, int, int]) -> None:
        """Undoes every record change since mark (memory and desired state),
        and forgets the writes; what the switches must now hold is touched."""
        journal, records, events, audits = mark
        undo = self._work.journal[journal:]
        del self._work.journal[journal:], self._work.records[records:]
        del self._work.events[events:], self._work.audits[audits:]
        for record_id, old in reversed(undo):
            current = self._by_id[record_id]
            self._index(current, old)
            if old is None or old.state is not State.FAILED:
                self._failed.get(_history_key(current.decision), set()).discard(record_id)
            if old is not None:
                self._by_id[record_id] = old
                continue
            del self._by_id[record_id]
            self._by_request.pop(current.decision.request_id, None)
            history = self._history.get(_history_key(current.decision), [])
            if record_id in history:
                history.remove(record_id)

    def _event(self, kind: str, record: Enforcement, detail: str) -> None:
        self._work.events.append((self._clock(), kind, record, detail))

    def add_event_listener(self, listener: Callable[[str, object], None]) -> None:
        """listener(kind, record) after every event is stored (metrics); the
        record is a PortAlarm for port_over_budget, on the reporting thread."""
        self._event_listeners.append(listener)

    def live_summary(self):
        """Counts for the metrics: live enforcements by action, and the rules
        and meters the controller keeps per switch for them."""
        from enforcement.metrics import LiveSummary
        by_action: dict[str, int] = {}
        rules: dict[int, int] = {}
        meters: dict[int, int] = {}
        with self._lock:
            for record in self._by_id.values():
                if record.state in LIVE:
                    kind = record.action.kind.value
                    by_action[kind] = by_action.get(kind, 0) + 1
            for dpid in self._desired.switches():
                rules[dpid], meters[dpid] = self._desired.counts(dpid)
        return LiveSummary(by_action, rules, meters)

    def _audit(self, actor: str, call: str, outcome: str, record: Enforcement,
               detail: str) -> None:
        self._work.audits.append(dict(
            at=self._clock(), actor=actor or "unknown", call=call, outcome=outcome,
            enforcement_id=record.id, case_id=record.decision.case_id,
            clause=record.escalation.clause, detail=detail))


@dataclasses.dataclass
class _Work:
    """What a unit of work changed, waiting for its one commit."""
    records: list = dataclasses.field(default_factory=list)
    events: list = dataclasses.field(default_factory=list)  # (at, kind, record, detail)
    audits: list = dataclasses.field(default_factory=list)
    journal: list = dataclasses.field(default_factory=list)  # (id, previous version)
    touched: dict = dataclasses.field(default_factory=dict)  # dpid -> (keys, meter ids)

    def mark(self) -> tuple[int, int, int, int]:
        return len(self.journal), len(self.records), len(self.events), len(self.audits)


@dataclasses.dataclass
class _Staged:
    """A staged call: finish() once the switches confirmed it; failed(exc)
    when they refused it (returns the outcome: a record or an error)."""
    finish: Callable[[], object]
    failed: Callable[[Exception], object] = lambda exc: exc


def _order(record: Enforcement) -> tuple[float, int]:
    return (record.created_at, record.serial)


def _history_key(decision: Decision) -> tuple:
    return (str(decision.subscriber.ip), decision.violation)


def _switches(record: Enforcement) -> list[int]:
    """Every switch an enforcement has state on, access switch first."""
    others = {r.dpid for r in record.rules} | {m.dpid for m in record.meters}
    return [record.location.dpid, *sorted(others - {record.location.dpid})]


def _expiry(decision: Decision, now: float) -> float | None:
    if decision.duration is not None:
        return now + decision.duration
    return decision.until


def _with_backstop(rules, expires_at: float | None, now: float):
    if expires_at is None:
        return rules
    timeout = min(MAX_HARD_TIMEOUT,
                  math.ceil(expires_at - now) + EXPIRY_BACKSTOP_SECONDS)
    return tuple(dataclasses.replace(r, hard_timeout=timeout) for r in rules)


class Maintenance:
    """The controller-side schedule: expiry and the periodic drift audit,
    on one thread that stops when asked (OS-Ken's hub cannot kill threads)."""

    def __init__(self, service: EnforcementService, *, audit_interval: float = 10.0,
                 tick: float = 0.25):
        self._service = service
        self._audit_interval = audit_interval
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        next_audit = time.monotonic() + self._audit_interval
        next_report, reported = time.monotonic() + 10, self._service.batch_counts
        while not self._stop.wait(self._tick):
            try:
                if time.monotonic() >= next_report:
                    batches, decisions = self._service.batch_counts
                    if batches > reported[0]:
                        # How well group commit is sharing the work.
                        LOG.info("%d decision(s) in %d batch(es) in the last 10 s",
                                 decisions - reported[1], batches - reported[0])
                    next_report, reported = time.monotonic() + 10, (batches, decisions)
                self._service.expire_due()
                if self._audit_interval > 0 and time.monotonic() >= next_audit:
                    next_audit = time.monotonic() + self._audit_interval
                    self._service.repair_drift()
            except Exception:  # keep the schedule alive; the log has it
                LOG.exception("maintenance round failed")
