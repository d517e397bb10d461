"""The enforcement lifecycle: decide, install, confirm, lift.

Owns the set of enforcements. Talks to switches only through the Network
protocol (implemented by the OS-Ken app, or by a fake in unit tests), and to
clients only through the API layer, which maps its errors to status codes.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

from enforcement import pipeline, planner, routing
from enforcement.desired import SwitchState
from enforcement.errors import (AlreadyExists, FailedPrecondition, NotFound,
                                SwitchError)
from enforcement.model import (Action, ActionKind, Decision, Enforcement, Escalation,
                               Location, Proposal, State, TopologyView)
from enforcement.policy import Policy

LOG = logging.getLogger(__name__)

_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


class Network(Protocol):
    def locate(self, ip: str) -> Location | None: ...
    def is_connected(self, dpid: int) -> bool: ...
    def sync(self, dpid: int, desired: SwitchState, timeout: float) -> None: ...
    def topology(self) -> TopologyView: ...


class EnforcementService:
    def __init__(self, network: Network, policy: Policy, *,
                 switch_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self._network = network
        self.policy = policy
        self._switch_timeout = switch_timeout
        self._clock = clock
        # One lock for the whole lifecycle keeps apply/lift of the same
        # subscriber from interleaving on the switch; switch round trips are
        # milliseconds, so serialising them is acceptable for now.
        self._lock = threading.RLock()
        self._by_id: dict[str, Enforcement] = {}
        self._by_request: dict[str, str] = {}
        self._next_serial = 1

    def plan(self, decision: Decision) -> Proposal:
        """Exactly what apply() would install now, touching no switch."""
        with self._lock:
            return self._propose(decision)

    def apply(self, decision: Decision) -> Enforcement:
        with self._lock:
            existing = self._idempotent_replay(decision)
            if existing is not None:
                return existing
            proposal = self._propose(decision)
            self._next_serial += 1
            now = self._clock()
            record = Enforcement(
                id=f"enf-{uuid.uuid4().hex[:16]}", decision=decision,
                action=proposal.action, location=proposal.location,
                escalation=proposal.escalation, cookie=proposal.cookie,
                rules=proposal.rules, meters=proposal.meters,
                state=State.PENDING, state_reason="waiting for the switch",
                created_at=now, updated_at=now)
            self._save(record)
            try:
                self._sync_switches(_switches(record))
            except SwitchError as exc:
                LOG.error("enforcement %s failed: %s", record.id, exc)
                failed = self._save(record.moved_to(State.FAILED, str(exc), self._clock()))
                self._sync_switches(_switches(record), best_effort=True)
                return failed
            LOG.info("enforcement %s active: %s on %016x port %d (%s)", record.id,
                     record.action.description, record.location.dpid,
                     record.location.port, record.escalation.reason)
            return self._save(record.moved_to(
                State.ACTIVE, "confirmed by the switch", self._clock()))

    def lift(self, enforcement_id: str, reason: str) -> Enforcement:
        with self._lock:
            record = self.get(enforcement_id)
            if record.state is not State.ACTIVE:
                return record
            for dpid in _switches(record):
                if not self._network.is_connected(dpid):
                    raise FailedPrecondition(
                        f"switch {dpid:016x} holding rules of {record.id} "
                        "is not connected; try again when it is")
            lifted = record.moved_to(State.LIFTED, reason or "lifted", self._clock())
            self._save(lifted)
            try:
                self._sync_switches(_switches(record))
            except SwitchError as exc:
                self._save(record)
                self._sync_switches(_switches(record), best_effort=True)
                raise FailedPrecondition(
                    f"the switches did not confirm removing {record.id}: {exc}"
                ) from exc
            LOG.info("enforcement %s lifted: %s", record.id, reason)
            return lifted

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
        return [r for r in sorted(records, key=lambda r: r.created_at)
                if (not subscriber_ip or str(r.decision.subscriber.ip) == subscriber_ip)
                and (not case_id or r.decision.case_id == case_id)
                and (not wanted or r.state in wanted)]

    def resync(self, dpid: int) -> None:
        """Puts back what must be enforced on a switch that (re)connected."""
        with self._lock:
            try:
                self._sync(dpid)
            except SwitchError as exc:
                LOG.error("switch %016x: could not restore enforcements: %s", dpid, exc)

    def _desired(self, dpid: int) -> SwitchState:
        """All enforcement state a switch must hold: every active enforcement,
        and the pending one being applied, oldest first."""
        live = sorted((r for r in self._by_id.values()
                       if r.state in (State.ACTIVE, State.PENDING)),
                      key=lambda r: r.created_at)
        return SwitchState.of([rule for r in live for rule in r.rules if rule.dpid == dpid],
                              [m for r in live for m in r.meters if m.dpid == dpid])

    def _sync(self, dpid: int) -> None:
        self._network.sync(dpid, self._desired(dpid), self._switch_timeout)

    def _sync_switches(self, dpids: list[int], best_effort: bool = False) -> None:
        """Brings each switch to its desired state. best_effort: after a
        failure, put back what the others held, logging what cannot be."""
        for dpid in dpids:
            try:
                self._sync(dpid)
            except SwitchError as exc:
                if not best_effort:
                    raise
                LOG.error("switch %016x: could not restore its enforcements: %s", dpid, exc)

    def topology(self) -> tuple[TopologyView, dict[str, list[str]]]:
        """The network, plus active enforcement ids per subscriber IP."""
        view = self._network.topology()
        per_ip: dict[str, list[str]] = {}
        for record in self.list(states=[State.ACTIVE]):
            per_ip.setdefault(str(record.decision.subscriber.ip), []).append(record.id)
        return view, per_ip

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
        for dpid in sorted({r.dpid for r in planned.rules} - {where.dpid}):
            if not self._network.is_connected(dpid):
                raise FailedPrecondition(
                    f"switch {dpid:016x} on the path to the walled garden is not "
                    "connected; nothing was changed")
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
        assets = self.policy.assets
        for name in ("dns", "portal", "billing_portal", "mail_servers", "smarthosts",
                     "protected"):
            for network in getattr(assets, name):
                if scope.overlaps(network):
                    raise FailedPrecondition(
                        f"{scope} covers {network}, a protected asset "
                        f"(assets.{name} in the policy); nothing was changed")

    def _escalate(self, decision: Decision):
        rung = self.policy.rung(decision.violation)
        since = self._clock() - self.policy.window_seconds
        earlier = [r for r in self._by_id.values()
                   if r.decision.subscriber.ip == decision.subscriber.ip
                   and r.decision.violation is decision.violation
                   and r.state is not State.FAILED and r.created_at >= since]
        count = len(earlier) + 1
        step = min(count, len(rung.ladder))
        days = self.policy.window_seconds // 86400
        reason = (f"{_ORDINAL.get(count, f'{count}th')} {decision.violation.value} violation "
                  f"by {decision.subscriber.ip} within {days} days")
        if earlier:
            reason += " (earlier: " + ", ".join(r.id for r in sorted(
                earlier, key=lambda r: r.created_at)) + ")"
        reason += f": step {step} of {len(rung.ladder)}"
        spec = rung.ladder[step - 1]
        if decision.requested_action is not None:
            spec = decision.requested_action
            reason += "; the request chose its own action within the policy's bounds"
        next_spec = rung.ladder[min(step, len(rung.ladder) - 1)]
        escalation = Escalation(step, len(rung.ladder), reason, rung.clause,
                                next_spec.describe(str(decision.subscriber.ip)))
        return escalation, spec

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
        if not self._network.is_connected(where.dpid):
            raise FailedPrecondition(
                f"subscriber {ip} is attached to switch {where.dpid:016x}, "
                "which is not connected to the controller")
        return where

    def _save(self, record: Enforcement) -> Enforcement:
        self._by_id[record.id] = record
        self._by_request[record.decision.request_id] = record.id
        return record


def _switches(record: Enforcement) -> list[int]:
    """Every switch an enforcement has state on, access switch first."""
    others = {r.dpid for r in record.rules} | {m.dpid for m in record.meters}
    return [record.location.dpid, *sorted(others - {record.location.dpid})]
