"""The enforcement lifecycle: decide, store, install, confirm, expire, lift.

The face the API and the controller call. The parts, each with one owner:
enforcement.lifecycle.ledger (the records in memory and their unit of work),
enforcement.lifecycle.deciding (what a decision means: guardrails, place, step, rules),
enforcement.lifecycle.reconcile (the switches made to hold what the ledger wants),
enforcement.lifecycle.alarms (port alarms), enforcement.lifecycle.identity (refused identity
claims), enforcement.lifecycle.maintenance (the schedule).

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
with the same request id. What needs only the confirmation, not its
content (the records' new versions, events, audit entries, their encoding
for the store), is prepared while the barrier travels (handed down the push
as its `meanwhile`: enforcement.lifecycle.reconcile.Reconciler.push) and
thrown away if the switch refuses.

Several instances (enforcement.cluster.leadership): only the leader changes
anything; a follower's changing calls are refused here with NotLeader (the
API forwards them to the leader first), its reads are served from its
memory brought up to the store's revision.
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from enforcement.domain.errors import (
    EnforcementError,
    FailedPrecondition,
    NotFound,
    NotLeader,
    SwitchError,
)
from enforcement.domain.model import (
    POLICY_RELOADED,
    RELOAD_REFUSED,
    Decision,
    Enforcement,
    IdentityEvent,
    PortAlarm,
    Proposal,
    State,
    TopologyView,
)
from enforcement.domain.policy import Policy
from enforcement.lifecycle.alarms import PortAlarms
from enforcement.lifecycle.batching import GroupCommit
from enforcement.lifecycle.deciding import Decider, expiry, with_backstop
from enforcement.lifecycle.eventfeed import EventFeed
from enforcement.lifecycle.identity import IdentityReports
from enforcement.lifecycle.ledger import LIVE, Ledger, switches
from enforcement.lifecycle.network import Network
from enforcement.lifecycle.reconcile import Reconciler
from enforcement.store.database import Event, Store

if TYPE_CHECKING:
    from enforcement.lifecycle.proving import Proofs

LOG = logging.getLogger(__name__)



class EnforcementService:
    def __init__(self, network: Network, policy: Policy, store: Store, *,
                 switch_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time, max_batch: int = 256,
                 leadership=None):
        """leadership: an enforcement.cluster.leadership.Leadership when several
        instances share the store; None for an instance alone on it."""
        self._network = network
        self.policy = policy
        self._store = store
        self._clock = clock
        self._leadership = leadership
        self._ready_epoch = 0
        # One reader of new events for every Watch stream.
        self._events = EventFeed(store)
        self._event_listeners: list[Callable[[str, object], None]] = []
        self.ledger = Ledger(store, clock, fence=self._fence,
                             on_deposed=self._deposed_by_store,
                             # Late-bound: the reconciler is built on the ledger.
                             restore=lambda: self.reconciler.push(best_effort=True))
        self.ledger.listeners.append(self._announce)
        # enforcement.lifecycle.proving.Proofs, where the network can probe.
        self.proofs: Proofs | None = None
        self.decider = Decider(policy, network, self.ledger, clock)
        self.reconciler = Reconciler(network, self.ledger, self.decider,
                                     switch_timeout=switch_timeout)
        self._commits = GroupCommit(self._run_jobs, max_batch=max_batch)
        self._alarms = PortAlarms(store, clock, self._announce, fence=self._fence)
        self.identity_reports = IdentityReports(store, clock, self._announce,
                                                fence=self._fence)
        live = sum(1 for r in self.ledger.by_id.values() if r.state in LIVE)
        LOG.info("store %s: %d enforcements, %d live", store.printable_url,
                 len(self.ledger.by_id), live)

    # ---- leading -------------------------------------------------------------

    def leading(self) -> bool:
        """Whether this instance may change things now: it leads, and its
        takeover at this epoch is done (switches claimed, memory reloaded)."""
        if self._leadership is None:
            return True
        return self._leadership.leading() and self._leadership.epoch == self._ready_epoch

    def leadership_state(self) -> tuple[bool, int]:
        """(leading, newest epoch known), for the metrics."""
        if self._leadership is None:
            return True, 0
        return self.leading(), self._leadership.known_epoch

    def _fence(self):
        if self._leadership is None or self._leadership.solo:
            return None
        fence = self._leadership.fence()
        if fence[1] != self._ready_epoch:
            raise NotLeader("this instance is still taking over")
        return fence

    def _deposed_by_store(self, why: str) -> None:
        if self._leadership is not None:
            self._leadership.step_down(f"the store refused a write: {why}")

    def take_over(self, epoch: int) -> None:
        """This instance was elected at epoch and holds the switches: its
        memory becomes the store's, in full (the previous leader may have
        written until its last moment), and it may change things."""
        with self.ledger.lock:
            self.ledger.load()
            self._ready_epoch = epoch
        LOG.info("took over %d enforcement(s) from the store at epoch %d",
                 len(self.ledger.by_id), epoch)

    @contextlib.contextmanager
    def changes_held(self) -> Iterator[None]:
        """No apply, lift, expiry or repair runs inside (the lifecycle
        lock): the epoch is raised in here (controller/process/ha.py), so
        that no write goes out between the old epoch and the new."""
        with self.ledger.lock:
            yield

    def epoch_raised(self, old: int, new: int) -> None:
        """The lead goes on at a higher epoch (controller/process/ha.py): still
        ready, if it was. Caller is inside changes_held()."""
        if self._ready_epoch == old:
            self._ready_epoch = new

    def _follow(self) -> None:
        """Before a read on a follower: its memory brought to the store's."""
        if not self.leading():
            self.ledger.catch_up()

    # ---- decisions -----------------------------------------------------------

    def plan(self, decision: Decision) -> Proposal:
        """Exactly what apply() would install now, touching no switch."""
        self._follow()
        with self.ledger.lock:
            return self.decider.propose(decision)

    def apply(self, decision: Decision, actor: str = "") -> Enforcement:
        """Plans, installs (confirmed by the switch's barrier), stores, then
        answers. Calls arriving together are batched (enforcement.lifecycle.batching):
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
        with self.ledger.changing():
            return self._run(list(stagers))

    def expire_due(self) -> list[Enforcement]:
        """Ends every live enforcement whose time has come (also those that
        came while the controller was down), as one batch."""
        with self.ledger.changing():
            due = self.ledger.due(self._clock())
            outcomes = self._run([functools.partial(
                self._stage_end, r.id, State.EXPIRED, "expired", "controller", "Expire")
                for r in due])
            ended = []
            for record, outcome in zip(due, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    LOG.error("enforcement %s did not expire yet: %s", record.id, outcome,
                              extra={"enforcement_id": record.id,
                                     "case_id": record.decision.case_id})
                    self.ledger.reschedule(record)
                else:
                    ended.append(outcome)
            return ended

    # ---- batches -------------------------------------------------------------

    def _run(self, stagers: list) -> list:
        """Stages every call (memory and desired state change, nothing sent
        yet), pushes what they changed to each switch once, and finishes
        them (records, events, audit) while the switches confirm: undone if
        one refuses, written when the unit of work ends, after every
        confirmation. If a switch refuses a batch of several,
        the batch is rolled back and every call run alone, so a refusal is
        pinned on the decision that caused it. Caller is inside changing()."""
        outcomes: list = [None] * len(stagers)
        mark = confirming = self.ledger.mark()
        staged: list[tuple[int, _Staged]] = []
        push = self.reconciler.push

        def finish() -> None:
            for i, call in staged:
                try:
                    outcomes[i] = call.finish()
                except EnforcementError as exc:
                    outcomes[i] = exc
            self.ledger.encode()
        try:
            for i, stage in enumerate(stagers):
                try:
                    staged.append((i, stage()))
                except EnforcementError as exc:
                    outcomes[i] = exc
            confirming = self.ledger.mark()
            # What follows a confirmation is done while the switch confirms
            # (by the first transaction that waits); undone below if it refuses.
            push(meanwhile=finish)
        except SwitchError as exc:
            if not staged:
                raise
            self.ledger.rollback(confirming)
            if not self.leading():
                # Refused because another instance leads now (the switch
                # said so): nothing of this batch is ours to finish.
                self.ledger.rollback(mark)
                raise NotLeader(f"lost the lead while pushing: {exc}") from None
            if len(staged) == 1:
                i, call = staged[0]
                outcomes[i] = call.failed(exc)
                return outcomes
            LOG.warning("a batch of %d decisions was refused (%s); running them one "
                        "by one", len(staged), exc)
            self.ledger.rollback(mark)
            push(best_effort=True)
            for i, _ in staged:
                outcomes[i] = self._run([stagers[i]])[0]
            return outcomes
        except Exception:
            # A bug, not a refusal: leave nothing half-staged behind.
            self.ledger.rollback(mark)
            push(best_effort=True)
            raise
        return outcomes

    def _stage_apply(self, decision: Decision, actor: str) -> _Staged:
        ledger = self.ledger
        existing = self.decider.replay(decision)
        if existing is not None:
            return _Staged(lambda: ledger.by_id[existing.id])
        proposal = self.decider.propose(decision)
        now = self._clock()
        expires_at = expiry(decision, now)
        record = Enforcement.carrying_out(
            proposal,
            # 64 random bits (uuid4's first 16 hex digits had 60), a fifth of its cost.
            id=f"enf-{os.urandom(8).hex()}", decision=decision,
            rules=with_backstop(proposal.rules, expires_at, now), state=State.PENDING,
            state_reason="waiting for the switch", created_at=now,
            updated_at=now, expires_at=expires_at)
        ledger.next_serial += 1
        offline = [d for d in switches(record) if not self._network.is_connected(d)]
        if offline:
            record = ledger.save(record.moved_to(
                State.PENDING, "switch " + ", ".join(f"{d:016x}" for d in offline)
                + " not connected; applied when it connects", now))
            ledger.event("pending", record, record.state_reason)
            ledger.audit(actor, "Apply", "OK", record, "stored pending: "
                         + "; ".join(r.text() for r in record.rules))
            return _Staged(lambda: record)
        ledger.save(record)

        def finish():
            active = ledger.save(record.moved_to(State.ACTIVE, "confirmed by the switch",
                                                 self._clock()))
            LOG.debug("enforcement %s active: %s on %016x port %d (%s)", active.id,
                      active.action.description, active.location.dpid,
                      active.location.port, active.escalation.reason,
                      extra={"enforcement_id": active.id, "case_id": active.decision.case_id})
            ledger.event("applied", active, active.action.description)
            ledger.audit(actor, "Apply", "OK", active,
                         "installed: " + "; ".join(r.text() for r in active.rules))
            return active

        def failed(exc):
            LOG.error("enforcement %s failed: %s", record.id, exc, extra={
                "enforcement_id": record.id, "case_id": record.decision.case_id})
            failed = ledger.save(record.moved_to(State.FAILED, str(exc), self._clock()))
            self.reconciler.push(best_effort=True)
            ledger.event("failed", failed, str(exc))
            ledger.audit(actor, "Apply", "FAILED", failed, str(exc))
            return failed
        return _Staged(finish, failed)

    def _stage_lift(self, enforcement_id: str, reason: str, actor: str) -> _Staged:
        return self._stage_end(enforcement_id, State.LIFTED, reason or "lifted", actor, "Lift")

    def _stage_end(self, enforcement_id: str, state: State, reason: str, actor: str,
                   call: str) -> _Staged:
        """Lifts or expires: every connected switch confirms the removal
        before the answer; a disconnected one is reconciled when it comes back."""
        ledger = self.ledger
        record = self.get(enforcement_id)
        if record.state not in LIVE:
            return _Staged(lambda: record)
        ended = ledger.save(record.moved_to(state, reason, self._clock()))
        connected = [d for d in switches(record) if self._network.is_connected(d)]

        def finish():
            later = set(switches(record)) - set(connected)
            detail = reason + ("" if not later else "; removed from switch " + ", ".join(
                f"{d:016x}" for d in sorted(later)) + " when it reconnects")
            LOG.debug("enforcement %s %s: %s", record.id, state.value, detail, extra={
                "enforcement_id": record.id, "case_id": record.decision.case_id})
            ledger.event(state.value, ended, detail)
            ledger.audit(actor, call, "OK", ended,
                         "removed: " + "; ".join(r.text() for r in record.rules))
            return ended

        def failed(exc):
            ledger.save(record)
            self.reconciler.push(best_effort=True)
            ledger.audit(actor, call, "FAILED_PRECONDITION", record, str(exc))
            return FailedPrecondition(
                f"the switches did not confirm removing {record.id}: {exc}")
        return _Staged(finish, failed)

    # ---- reading -------------------------------------------------------------

    def get(self, enforcement_id: str) -> Enforcement:
        with self.ledger.lock:
            record = self.ledger.by_id.get(enforcement_id)
            if record is None and not self.leading():
                self.ledger.catch_up()
                record = self.ledger.by_id.get(enforcement_id)
        if record is None:
            raise NotFound(f"no enforcement with id {enforcement_id!r}")
        return record

    def list(self, *, subscriber_ip: str = "", case_id: str = "",
             states: Iterable[State] = ()) -> list[Enforcement]:
        return self.page(subscriber_ip=subscriber_ip, case_id=case_id, states=states)[0]

    def page(self, *, subscriber_ip: str = "", case_id: str = "",
             states: Iterable[State] = (), start: int = 0,
             size: int | None = None) -> tuple[builtins.list[Enforcement], bool]:
        """Enforcements in creation order, filtered, from the start-th match
        on: at most size of them, and whether more follow. Walks the ledger's
        creation order and stops at the page's end, so a small page costs the
        same with ten enforcements or a hundred thousand."""
        wanted = set(states)
        self._follow()
        found: list[Enforcement] = []
        skip = start
        # Only live ones wanted: their own order, not every record's.
        walked = (self.ledger.live_ordered if wanted and wanted <= set(LIVE)
                  else self.ledger.ordered)
        with self.ledger.lock:
            by_id = self.ledger.by_id
            for _, record_id in walked:
                r = by_id[record_id]
                if ((subscriber_ip and str(r.decision.subscriber.ip) != subscriber_ip
                     and subscriber_ip not in r.addresses)
                        or (case_id and r.decision.case_id != case_id)
                        or (wanted and r.state not in wanted)):
                    continue
                if skip:
                    skip -= 1
                    continue
                if size is not None and len(found) == size:
                    return found, True
                found.append(r)
        return found, False

    def topology(self) -> tuple[TopologyView, dict[str, builtins.list[str]]]:
        """The network, plus active enforcement ids per subscriber address
        (each of its addresses, both families), from the live index."""
        view = self._network.topology()
        self._follow()
        per_ip: dict[str, list[str]] = {}
        with self.ledger.lock:
            by_id = self.ledger.by_id
            live = [by_id[i] for _, i in self.ledger.live_ordered]
        for record in live:
            if record.state is not State.ACTIVE:
                continue
            for address in dict.fromkeys((str(record.decision.subscriber.ip),
                                          *record.addresses)):
                per_ip.setdefault(address, []).append(record.id)
        return view, per_ip

    def watch(self, *, after: int = 0, subscriber_ip: str = "", case_id: str = "",
              still_wanted: Callable[[], bool] = lambda: True,
              poll: float = 0.25) -> Iterator[Event]:
        """Events after a sequence number, then live ones as they happen. The
        store numbers them, so the sequence is the same on every instance;
        a follower, which hears of no commit, finds them by polling.
        subscriber_ip matches the subscriber's events under any of its
        addresses, both families, as the topology knows them at each poll."""
        def addresses() -> str | list[str]:
            if subscriber_ip and (host := self._network.host(subscriber_ip)) is not None:
                return [subscriber_ip, *(a for a in (host.ip, *host.ipv6) if a and "/" not in a)]
            return subscriber_ip
        return self._events.stream(after, addresses, case_id, still_wanted, poll)

    def report_port_alarm(self, alarm: PortAlarm) -> None:
        """From the controller, on any thread: a port over a budget becomes a
        stored port_over_budget event, announced like the others; no lifecycle
        lock, no switch (enforcement.lifecycle.alarms). Only the leader reports: the
        followers see the same ports."""
        if self.leading():
            self._alarms.report(alarm)

    def report_identity_event(self, event: IdentityEvent) -> None:
        """From the controller, on any thread: a refused claim on who is
        where becomes an identity_refused event, throttled per claim, stored
        by a writer of its own (enforcement.lifecycle.identity): returns at once, no
        lifecycle lock, no switch, no database. Only the leader reports."""
        if self.leading():
            self.identity_reports.report(event)

    def add_identity_listener(self, listener: Callable[[IdentityEvent], None]) -> None:
        """listener(event) on every refused claim reported, before the
        throttle (the metrics count them all), on the reporting thread."""
        self.identity_reports.listeners.append(listener)

    def use_policy(self, policy: Policy, actor: str, detail: str) -> None:
        """New decisions follow policy from now on (a reload); live
        enforcements keep their rules and the version they were planned
        with. Between two batches: the lifecycle lock is taken."""
        with self.ledger.lock:
            self.decider.use(policy)
            self.policy = policy
        self._record_reload(POLICY_RELOADED, actor, "OK", detail)

    def reload_refused(self, actor: str, detail: str) -> None:
        self._record_reload(RELOAD_REFUSED, actor, "REFUSED", detail)

    def _record_reload(self, kind: str, actor: str, outcome: str, detail: str) -> None:
        """A reload on record: an event for Watch and an audit entry,
        written by the leader (a follower's reload is in its log and its
        answers' policy_version: the store is the leader's to write)."""
        if not self.leading():
            return
        at = self._clock()
        events = [(at, kind, None, detail)]
        self._store.write((), events, [dict(
            at=at, actor=actor, call="Reload", outcome=outcome, enforcement_id="",
            case_id="", clause="", detail=detail)], fence=self._fence())
        self._announce(events)

    def audit_log(self, **filters):
        return self._store.audit(**filters)

    def record_refusal(self, actor: str, call: str, case_id: str, enforcement_id: str,
                       outcome: str, message: str) -> None:
        """A refused call changes nothing, but who asked for what stays on
        record; where the store will not take even that (it may be what
        refused the call), the log has it and the refusal still stands."""
        try:
            self._store.append_audit(at=self._clock(), actor=actor or "unknown", call=call,
                                     outcome=outcome, enforcement_id=enforcement_id,
                                     case_id=case_id, clause="", detail=message)
        except Exception as exc:
            # No traceback: the store being away is what this path is for,
            # and the lines a traceback takes hide what the store said.
            LOG.error("could not audit a refused %s by %s: %s (the store: %s: %s)", call,
                      actor, message, exc.__class__.__name__,
                      str(exc).splitlines()[0][:200] if str(exc) else "")

    def account_address(self, account: str) -> str:
        """The address a decision names for an inventory account: its
        pinned IPv4 address."""
        for host in self._network.topology().hosts:
            if host.pinned and host.account == account and host.ip:
                return host.ip
        raise NotFound(f"no subscriber account {account!r} in the inventory (--inventory)")

    def is_enforced(self, mac: str) -> bool:
        """Whether the subscriber with this MAC has a live enforcement.
        Lock-free (one dict read), so the OpenFlow event thread may ask it."""
        return mac in self.ledger.live_by_mac

    # ---- keeping switches true (enforcement.lifecycle.reconcile), on the leader only ------

    def resync(self, dpid: int) -> None:
        if self.leading():
            self.reconciler.resync(dpid)

    def host_moved(self, macs: str | tuple[str, ...]) -> None:
        """Subscribers (by MAC) seen at another port or holding other
        addresses: their enforcements follow them."""
        if self.leading():
            for mac in (macs,) if isinstance(macs, str) else macs:
                self.reconciler.host_moved(mac, between=self._decisions_first)

    def _decisions_first(self) -> None:
        """Between two groups of a long re-placement: decisions queued
        meanwhile go first (a lock has no queue: the re-placement would
        otherwise take it back before a woken decision runs), for 50 ms at
        most, so that a steady stream of them cannot stall it."""
        deadline = time.monotonic() + 0.05
        while self._commits.busy and time.monotonic() < deadline:
            time.sleep(0.0005)

    def links_changed(self) -> None:
        if self.leading():
            self.reconciler.links_changed()

    def repair_drift(self) -> int:
        return self.reconciler.repair_drift() if self.leading() else 0

    # ---- events --------------------------------------------------------------

    def _announce(self, events: builtins.list) -> None:
        """Wakes Watch streams and tells the listeners about stored events."""
        if events:
            self._events.committed()
        for _, kind, record, _ in events:
            for listener in self._event_listeners:
                try:
                    listener(kind, record)
                except Exception:  # an observer must never break the lifecycle
                    LOG.exception("event listener failed")

    def add_event_listener(self, listener: Callable[[str, object], None]) -> None:
        """listener(kind, record) after every event is stored (metrics); the
        record is a PortAlarm for port_over_budget, on the reporting thread,
        an IdentityEvent for identity_refused, on the identity writer's."""
        self._event_listeners.append(listener)

    def live_summary(self):
        """Counts for the metrics: live enforcements by action, and the rules
        and meters the controller keeps per switch for them."""
        from enforcement.lifecycle.metrics import LiveSummary
        rules: dict[int, int] = {}
        meters: dict[int, int] = {}
        self._follow()
        with self.ledger.lock:
            # Counts kept as records change: a scrape costs the same at
            # 100,000 live enforcements as at one (per switch, not per record).
            by_action = {kind: count for kind, count in self.ledger.live_by_action.items()
                         if count}
            desired = self.ledger.desired
            for dpid in desired.switches():
                rules[dpid], meters[dpid] = desired.counts(dpid)
        return LiveSummary(by_action, rules, meters)


class _Staged:
    """A staged call: finish() once the switches confirmed it; failed(exc)
    when they refused it (returns the outcome: a record or an error)."""
    __slots__ = ("finish", "failed")

    def __init__(self, finish: Callable[[], object],
                 failed: Callable[[Exception], object] = lambda exc: exc):
        self.finish = finish
        self.failed = failed
