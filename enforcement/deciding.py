"""Deciding: what a decision means here and now, before anything is touched.

Turns a Decision into a Proposal: the guardrails (protected assets, scope),
where the subscriber is, which step of its violation's ladder this is (the
history in the ledger), and the narrowest rules for that step
(enforcement.planner). Re-planning an enforcement for a new place or path
uses the same steps. Reads the ledger and the network; changes nothing.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import math
from collections.abc import Callable

from enforcement import pipeline, planner, routing
from enforcement.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from enforcement.ledger import Ledger, history_key
from enforcement.model import (
    Action,
    ActionKind,
    Decision,
    Enforcement,
    Escalation,
    Location,
    Proposal,
)
from enforcement.policy import Policy

_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}
# Flows of an expiring enforcement carry a hard timeout this much past the
# expiry, in case the controller is down when it comes: a backstop only.
EXPIRY_BACKSTOP_SECONDS = 30
MAX_HARD_TIMEOUT = 65535


class Decider:
    def __init__(self, policy: Policy, network, ledger: Ledger, clock: Callable[[], float]):
        self.policy = policy
        self._network = network
        self._ledger = ledger
        self._clock = clock

    def propose(self, decision: Decision) -> Proposal:
        self.guard(decision)
        where = self._locate(decision)
        escalation, spec = self._escalate(decision)
        ip = decision.subscriber.ip
        target = planner.Target(where, ip, decision.scope or ipaddress.IPv4Network(ip))
        context = planner.Context(self.policy.assets, self.policy.quarantine_vlan,
                                  self._walled_garden_routes(spec, where))
        serial = self._ledger.next_serial
        cookie = pipeline.enforcement_cookie(serial)
        planned = planner.plan(spec, target, context, cookie, meter_id=serial)
        action = Action(spec.kind, spec.describe(str(decision.scope or ip)))
        return Proposal(action, where, escalation, cookie, planned.rules, planned.meters)

    def replan(self, record: Enforcement, where: Location) -> Enforcement:
        """The same enforcement (step, cookie, meter) planned at another
        place or on the current paths."""
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
            record, location=where, rules=with_backstop(planned.rules, record.expires_at, now),
            meters=planned.meters, updated_at=now)

    def replay(self, decision: Decision) -> Enforcement | None:
        """The enforcement a repeated request id already made, if any."""
        known = self._ledger.by_request.get(decision.request_id)
        if known is None:
            return None
        record = self._ledger.by_id[known]
        if record.decision != decision:
            raise AlreadyExists(
                f"request_id {decision.request_id!r} was already used for a "
                f"different decision ({record.id}); use a new request_id")
        return record

    def _walled_garden_routes(self, spec, where: Location) -> dict:
        if spec.kind is not ActionKind.QUARANTINE:
            return {}
        view = self._network.topology()
        servers = [*self.policy.assets.dns, *self.policy.assets.listed(spec.portal)]
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

    def guard(self, decision: Decision) -> None:
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

    # The cache holds the service alive; there is one per process, for its life.
    @functools.lru_cache(maxsize=65536)  # noqa: B019
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
        by_id = self._ledger.by_id
        ids = self._ledger.history.get(history_key(decision), [])
        # History is in creation order: the window is a tail of it.
        first = bisect.bisect_left(ids, since, key=lambda i: by_id[i].created_at)
        failed = self._ledger.failed.get(history_key(decision), set())
        within = len(ids) - first
        if failed:
            within -= sum(1 for i in failed if by_id[i].created_at >= since)
        recent: list[str] = []
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


def expiry(decision: Decision, now: float) -> float | None:
    if decision.duration is not None:
        return now + decision.duration
    return decision.until


def with_backstop(rules, expires_at: float | None, now: float):
    if expires_at is None:
        return rules
    timeout = min(MAX_HARD_TIMEOUT,
                  math.ceil(expires_at - now) + EXPIRY_BACKSTOP_SECONDS)
    return tuple(dataclasses.replace(r, hard_timeout=timeout) for r in rules)
