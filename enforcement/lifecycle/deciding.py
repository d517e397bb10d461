"""Deciding: what a decision means here and now, before anything is touched.

Turns a Decision into a Proposal: the guardrails (protected assets, scope),
where the subscriber is, which step of its violation's ladder this is (the
history in the ledger), and the narrowest rules for that step
(enforcement.domain.planner). Re-planning an enforcement for a new place or path
uses the same steps. Reads the ledger and the network; changes nothing.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import math
from collections.abc import Callable

from enforcement.domain import pipeline, planner, routing
from enforcement.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from enforcement.domain.model import (
    Action,
    ActionKind,
    Decision,
    Enforcement,
    Escalation,
    HostView,
    Location,
    Proposal,
)
from enforcement.domain.policy import Policy
from enforcement.lifecycle.ledger import Ledger, history_key, order
from enforcement.lifecycle.network import Network

_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}
# Flows of an expiring enforcement carry a hard timeout this much past the
# expiry, in case the controller is down when it comes: a backstop only.
EXPIRY_BACKSTOP_SECONDS = 30
MAX_HARD_TIMEOUT = 65535


class Decider:
    def __init__(self, policy: Policy, network: Network, ledger: Ledger,
                 clock: Callable[[], float]):
        self.policy = policy
        # Every version this process ran, so that re-planning a live
        # enforcement (a move, a new path) keeps the policy it was confirmed
        # with after a reload. A handful of small objects per process life.
        self._policies = {policy.version: policy}
        self._network = network
        self._ledger = ledger
        self._clock = clock

    def use(self, policy: Policy) -> None:
        """New decisions follow policy from now on. Caller holds the
        ledger's lock, so no decision is planned half with each."""
        self.policy = policy
        self._policies.setdefault(policy.version, policy)
        self._protected_address.cache_clear()
        self._protected_overlap.cache_clear()

    def policy_of(self, record: Enforcement) -> Policy:
        """The policy a record was planned with, when this process knows it;
        otherwise (planned before a restart under a policy since replaced)
        the current one."""
        return self._policies.get(record.policy_version, self.policy)

    def propose(self, decision: Decision) -> Proposal:
        self.guard(decision)
        where = self._locate(decision)
        addresses = self._identity(decision)
        self._guard_identity(addresses)
        escalation, spec = self._escalate(decision, addresses)
        target = _target(decision, where, addresses)
        context = planner.Context(self.policy.assets, self.policy.quarantine_vlan,
                                  self._walled_garden_routes(spec, where))
        serial = self._ledger.next_serial
        cookie = pipeline.enforcement_cookie(serial)
        planned = planner.plan(spec, target, context, cookie, meter_id=serial)
        action = Action(spec.kind, spec.describe(str(decision.scope or decision.subscriber.ip)))
        return Proposal(action, where, escalation, cookie, planned.rules, planned.meters,
                        addresses, self.policy.version, spec)

    def replan(self, record: Enforcement, where: Location,
               host: HostView | None = None) -> Enforcement:
        """The same enforcement (step, cookie, meter) planned at another
        place or on the current paths, for the addresses its subscriber
        holds now: host, the subscriber as the topology knows it by its MAC
        (looked up when not given). Never by the address the decision named:
        that address may be someone else's by now (a lease handed on)."""
        decision = record.decision
        policy = self.policy_of(record)
        ladder = policy.rung(decision.violation).ladder
        spec = (record.spec or decision.requested_action
                or ladder[min(record.escalation.step, len(ladder)) - 1])
        if host is None:
            host = self._network.subscriber(record.location.mac)
        addresses = holds(host) if host is not None else record.addresses
        target = _target(decision, where, addresses, named_first=False)
        context = planner.Context(policy.assets, policy.quarantine_vlan,
                                  self._walled_garden_routes(spec, where, policy))
        planned = planner.plan(spec, target, context, record.cookie, meter_id=record.serial)
        now = self._clock()
        return dataclasses.replace(
            record, location=where, rules=with_backstop(planned.rules, record.expires_at, now),
            meters=planned.meters, updated_at=now, addresses=addresses)

    def _identity(self, decision: Decision) -> tuple[str, ...]:
        """Every address of the subscriber a decision names, both families:
        the one named first, then its IPv4 address, then its IPv6 addresses
        and prefixes as the topology (learning, inventory) knows them."""
        named = str(decision.subscriber.ip)
        host = self._network.host(named)
        known = (host.ip, *host.ipv6) if host is not None else ()
        return tuple(dict.fromkeys(a for a in (named, *known) if a))

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

    def _walled_garden_routes(self, spec, where: Location, policy: Policy | None = None
                              ) -> dict:
        if spec.kind is not ActionKind.QUARANTINE:
            return {}
        assets = (policy or self.policy).assets
        view = self._network.topology()
        servers = [*assets.dns, *assets.listed(spec.portal)]
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
        scope = decision.scope or _host_network(decision.subscriber.ip)
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
        _refuse_protected(self._protected_overlap(scope), f"{scope} covers")

    def _guard_identity(self, addresses: tuple[str, ...]) -> None:
        """A subscriber any of whose addresses is a protected asset is one:
        naming it by its other family changes nothing."""
        for address in addresses:
            _refuse_protected(self._protected_address(address),
                              f"the subscriber's address {address} is")

    # The cache holds the service alive; there is one per process, for its life
    # (use() empties it).
    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def _protected_address(self, address: str):
        """_protected_overlap of one address's text (parsing it costs more
        than the rest of a decision's guard)."""
        return self._protected_overlap(ipaddress.ip_network(address))

    @functools.lru_cache(maxsize=65536)  # noqa: B019
    def _protected_overlap(self, scope):
        """The first protected asset a scope overlaps, and its list's name
        (cached until the policy changes: use())."""
        assets = self.policy.assets
        for name in ("dns", "portal", "billing_portal", "mail_servers", "smarthosts",
                     "protected"):
            for network in getattr(assets, name):
                if scope.overlaps(network):
                    return network, name
        return None

    def _escalate(self, decision: Decision, addresses: tuple[str, ...] = ()):
        rung = self.policy.rung(decision.violation)
        since = self._clock() - self.policy.window_seconds
        by_id = self._ledger.by_id
        # The history is the subscriber's, whichever of its addresses each
        # earlier decision named: a repeat over the other family climbs the
        # same ladder.
        keys = [history_key(decision, a) for a in addresses or (str(decision.subscriber.ip),)]
        histories = [h for k in keys if (h := self._ledger.history.get(k))]
        ids = histories[0] if len(histories) == 1 else sorted(
            (i for h in histories for i in h), key=lambda i: order(by_id[i]))
        # History is in creation order: the window is a tail of it.
        first = bisect.bisect_left(ids, since, key=lambda i: by_id[i].created_at)
        failed = set().union(*(self._ledger.failed.get(k, ()) for k in keys))
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


def _refuse_protected(clash, what: str) -> None:
    """FailedPrecondition naming the protected asset a check found, if any."""
    if clash is not None:
        network, name = clash
        raise FailedPrecondition(f"{what} {network}, a protected asset "
                                 f"(assets.{name} in the policy); nothing was changed")


def holds(host: HostView) -> tuple[str, ...]:
    """The addresses a subscriber holds now, both families, IPv4 first."""
    return tuple(dict.fromkeys(a for a in (host.ip, *host.ipv6) if a))


def _target(decision: Decision, where: Location, addresses: tuple[str, ...],
            named_first: bool = True) -> planner.Target:
    """The planner's view of the subscriber: its IPv4 address (the named
    one when deciding, the one it holds when re-planning; the named one
    always under a wider scope, which the request gave around it), the
    scope around it, and its IPv6 addresses and prefixes, with the
    link-local address its MAC gives it (a host has it before it is ever
    seen using it)."""
    named = decision.subscriber.ip
    ipv4 = named if named.version == 4 and (named_first or decision.scope) else next(
        (ipaddress.IPv4Address(a) for a in addresses if ":" not in a), None)
    ipv6 = _ipv6_networks(tuple(a for a in addresses if ":" in a), where.mac)
    scope = decision.scope or (_host_network(ipv4) if ipv4 is not None else None)
    return planner.Target(where, ipv4, scope, ipv6)


@functools.lru_cache(maxsize=65536)
def _host_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """The /32 (/128) of an address: built for every decision's guard and plan,
    the same few thousand subscribers over and over."""
    return ipaddress.ip_network(address)


@functools.lru_cache(maxsize=65536)
def _ipv6_networks(addresses: tuple[str, ...], mac: str) -> tuple[ipaddress.IPv6Network, ...]:
    """A subscriber's IPv6 addresses and prefixes, then its link-local one:
    the same few per subscriber, decision after decision, and parsing IPv6
    text costs more than the rest of planning (immutable, so shared)."""
    return tuple(dict.fromkeys((*(ipaddress.IPv6Network(a) for a in addresses),
                                ipaddress.IPv6Network(eui64_link_local(mac)))))


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """fe80:: with the modified EUI-64 interface id of a MAC (RFC 4291)."""
    octets = bytearray.fromhex(mac.replace(":", ""))
    octets[0] ^= 0x02
    interface = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + interface)


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
