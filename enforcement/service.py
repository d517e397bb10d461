"""The enforcement lifecycle: decide, install, confirm, lift.

Owns the set of enforcements. Talks to switches only through the Network
protocol (implemented by the OS-Ken app, or by a fake in unit tests), and to
clients only through the API layer, which maps its errors to status codes.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from enforcement import pipeline, planner
from enforcement.errors import (AlreadyExists, FailedPrecondition, NotFound,
                                SwitchError)
from enforcement.flows import FlowRule
from enforcement.model import (Decision, Enforcement, Location, State,
                               TopologyView)

LOG = logging.getLogger(__name__)


class Network(Protocol):
    def locate(self, ip: str) -> Location | None: ...
    def is_connected(self, dpid: int) -> bool: ...
    def install(self, rules: Sequence[FlowRule], timeout: float) -> None: ...
    def remove(self, rules: Sequence[FlowRule], timeout: float) -> None: ...
    def topology(self) -> TopologyView: ...


class EnforcementService:
    def __init__(self, network: Network, *, switch_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self._network = network
        self._switch_timeout = switch_timeout
        self._clock = clock
        # One lock for the whole lifecycle keeps apply/lift of the same
        # subscriber from interleaving on the switch; switch round trips are
        # milliseconds, so serialising them is acceptable for now.
        self._lock = threading.RLock()
        self._by_id: dict[str, Enforcement] = {}
        self._by_request: dict[str, str] = {}
        self._next_serial = 1

    def apply(self, decision: Decision) -> Enforcement:
        with self._lock:
            existing = self._idempotent_replay(decision)
            if existing is not None:
                return existing
            self._refuse_duplicate(decision)
            where = self._locate(decision)
            cookie = pipeline.enforcement_cookie(self._next_serial)
            action, rules = planner.plan(decision, where, cookie)
            self._next_serial += 1
            now = self._clock()
            record = Enforcement(
                id=f"enf-{uuid.uuid4().hex[:16]}", decision=decision,
                action=action, location=where, cookie=cookie, rules=rules,
                state=State.PENDING, state_reason="waiting for the switch",
                created_at=now, updated_at=now)
            self._save(record)
            try:
                self._network.install(rules, self._switch_timeout)
            except SwitchError as exc:
                LOG.error("enforcement %s failed: %s", record.id, exc)
                self._roll_back(record)
                return self._save(record.moved_to(
                    State.FAILED, str(exc), self._clock()))
            LOG.info("enforcement %s active: %s on %016x port %d", record.id,
                     action.description, where.dpid, where.port)
            return self._save(record.moved_to(
                State.ACTIVE, "confirmed by the switch", self._clock()))

    def lift(self, enforcement_id: str, reason: str) -> Enforcement:
        with self._lock:
            record = self.get(enforcement_id)
            if record.state is not State.ACTIVE:
                return record
            if not self._network.is_connected(record.location.dpid):
                raise FailedPrecondition(
                    f"switch {record.location.dpid:016x} holding {record.id} "
                    "is not connected; try again when it is")
            try:
                self._network.remove(record.rules, self._switch_timeout)
            except SwitchError as exc:
                raise FailedPrecondition(
                    f"the switch did not confirm removing {record.id}: {exc}"
                ) from exc
            LOG.info("enforcement %s lifted: %s", record.id, reason)
            return self._save(record.moved_to(
                State.LIFTED, reason or "lifted", self._clock()))

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

    def active_rules(self, dpid: int) -> list[FlowRule]:
        """Rules that must be on a switch, for re-installing after it connects."""
        with self._lock:
            return [rule for r in self._by_id.values()
                    if r.state is State.ACTIVE
                    for rule in r.rules if rule.dpid == dpid]

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

    def _refuse_duplicate(self, decision: Decision) -> None:
        for record in self._by_id.values():
            if (record.state in (State.PENDING, State.ACTIVE)
                    and record.decision.subscriber.ip == decision.subscriber.ip
                    and record.decision.violation is decision.violation):
                raise AlreadyExists(
                    f"subscriber {decision.subscriber.ip} already has "
                    f"{record.state.value} enforcement {record.id} for "
                    f"{decision.violation.name}; lift it before applying again")

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

    def _roll_back(self, record: Enforcement) -> None:
        try:
            self._network.remove(record.rules, self._switch_timeout)
        except SwitchError as exc:
            LOG.error("could not roll back %s: %s", record.id, exc)

    def _save(self, record: Enforcement) -> Enforcement:
        self._by_id[record.id] = record
        self._by_request[record.decision.request_id] = record.id
        return record
