"""Who may call what, and how much: roles given to client-certificate
identities, and per-client limits. Pure: loading and checking only.

The file (TOML, `--access FILE`):

    [roles]                      # optional; these are the defaults
    case_system = ["Apply", "Lift", "ApplyBatch", "LiftBatch", "Get", "List", "Plan",
                   "Watch"]
    engineer = ["Get", "List", "Plan", "Watch", "GetTopology", "ListAudit"]

    [limits]                     # optional; per client, these are the defaults
    requests_per_second = 5000
    burst = 5000
    max_in_flight = 64
    max_watch_streams = 8

    [clients.case-system]        # the certificate's common name
    role = "case_system"
    requests_per_second = 3000   # any limit may be set per client

    [clients.alice]
    role = "engineer"
"""
from __future__ import annotations

import dataclasses
import pathlib
import threading
import time
from typing import Any

from enforcement.domain import tomlfile
from enforcement.v1 import enforcement_pb2 as pb

CALLS = frozenset(pb.DESCRIPTOR.services_by_name["EnforcementService"].methods_by_name)
# Calls that change the network; every one of them is audited, refusals too.
CHANGING = frozenset({"Apply", "Lift", "ApplyBatch", "LiftBatch"})
# Calls that carry many decisions: each counts against the client's rate.
BATCHES = frozenset({"ApplyBatch", "LiftBatch"})

DEFAULT_ROLES = {
    "case_system": frozenset({"Apply", "Lift", "ApplyBatch", "LiftBatch", "Get", "List",
                              "Plan", "Watch"}),
    "engineer": frozenset({"Get", "List", "Plan", "Watch", "GetTopology", "ListAudit"}),
}


class AccessError(ValueError):
    """The access file is wrong; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Limits:
    requests_per_second: float = 5000.0
    burst: int = 5000
    max_in_flight: int = 64
    max_watch_streams: int = 8


@dataclasses.dataclass(frozen=True)
class Client:
    name: str
    role: str
    limits: Limits


@dataclasses.dataclass(frozen=True)
class Access:
    roles: dict[str, frozenset[str]]
    clients: dict[str, Client]
    limits: Limits

    def role_of(self, name: str) -> str | None:
        client = self.clients.get(name)
        return client.role if client else None

    def limits_of(self, name: str) -> Limits:
        client = self.clients.get(name)
        return client.limits if client else self.limits

    def refusal(self, name: str, call: str) -> str | None:
        """Why `name` may not make `call`, or None when it may."""
        client = self.clients.get(name)
        if client is None:
            return (f"client certificate {name!r} is not given a role; add "
                    f"[clients.{name}] with a role to the access file")
        allowed = self.roles[client.role]
        if call not in allowed:
            return (f"{name!r} has role {client.role}, which may not call {call} "
                    f"(it may call: {', '.join(sorted(allowed))})")
        return None


DEFAULT = Access(roles=dict(DEFAULT_ROLES), clients={}, limits=Limits())


def _limits(table: dict, where: str, base: Limits) -> Limits:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Limits):
        if field.name not in table:
            continue
        value = table[field.name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise AccessError(f"{where}.{field.name} must be a positive number")
        if field.name != "requests_per_second" and not isinstance(value, int):
            raise AccessError(f"{where}.{field.name} must be a whole number")
        values[field.name] = value
    return dataclasses.replace(base, **values)


def parse(data: dict) -> Access:
    unknown = set(data) - {"roles", "limits", "clients"}
    if unknown:
        raise AccessError(f"unknown section(s) {sorted(unknown)}; "
                          "expected roles, limits, clients")
    roles = dict(DEFAULT_ROLES)
    for role, calls in data.get("roles", {}).items():
        if not isinstance(calls, list) or not all(isinstance(c, str) for c in calls):
            raise AccessError(f"roles.{role} must be a list of call names")
        bad = sorted(set(calls) - CALLS)
        if bad:
            raise AccessError(f"roles.{role} names unknown call(s) {bad}; "
                              f"known: {sorted(CALLS)}")
        roles[role] = frozenset(calls)
    limit_table = data.get("limits", {})
    unknown = set(limit_table) - {f.name for f in dataclasses.fields(Limits)}
    if unknown:
        raise AccessError(f"limits has unknown field(s) {sorted(unknown)}")
    limits = _limits(limit_table, "limits", Limits())
    clients = {}
    for name, table in data.get("clients", {}).items():
        where = f"clients.{name}"
        if not isinstance(table, dict):
            raise AccessError(f"{where} must be a table with a role")
        unknown = set(table) - {"role"} - {f.name for f in dataclasses.fields(Limits)}
        if unknown:
            raise AccessError(f"{where} has unknown field(s) {sorted(unknown)}")
        role = table.get("role")
        if role not in roles:
            raise AccessError(f"{where}.role must be one of {sorted(roles)}, not {role!r}")
        clients[name] = Client(name, role, _limits(table, where, limits))
    return Access(roles=roles, clients=clients, limits=limits)


def load(path: str | pathlib.Path | None) -> Access:
    if path is None:
        return DEFAULT
    return tomlfile.read(path, AccessError, parse)


class TokenBucket:
    """requests_per_second refilled continuously, at most burst saved up."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    @property
    def last_used(self) -> float:
        return self._last

    @property
    def refill_seconds(self) -> float:
        return self._burst / self._rate

    def full_again(self, now: float) -> bool:
        """Whether it has refilled since last used: forgetting it loses nothing."""
        return now - self._last >= self.refill_seconds

    def follows(self, rate: float, burst: int) -> bool:
        return (self._rate, self._burst) == (rate, burst)

    def retuned(self, rate: float, burst: int) -> TokenBucket:
        """The same bucket under new limits (a reloaded access file): what
        was spent stays spent, so a reload is no way to a fresh burst."""
        bucket = TokenBucket(rate, burst, self._clock)
        bucket._tokens = min(float(burst), self._tokens)
        bucket._last = self._last
        return bucket

    def take(self, count: int = 1) -> float:
        """0 when `count` tokens were taken, else the seconds until they are
        due (a count above the burst is never due: it is refused outright)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= count:
            self._tokens -= count
            return 0.0
        return (count - self._tokens) / self._rate


class ClientLimiter:
    """Per-client rate and concurrency, so one client cannot take the whole
    worker pool or the switches' attention from the others."""

    PRUNE_ABOVE = 4096

    def __init__(self, clock=time.monotonic, max_streams: int = 64):
        """max_streams: Watch streams at once over all clients. Each holds a
        worker thread for as long as it lasts; capped below the worker pool,
        the rest stays for the decisions, however many clients open streams."""
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[tuple[str, bool], int] = {}
        self._max_streams = max_streams
        self._streams = 0

    def _prune(self) -> None:
        """Clients keyed by connection come and go: forget the idle ones
        (a bucket idle long enough to be full again holds no state)."""
        now = self._clock()
        for key, bucket in list(self._buckets.items()):
            busy = (key, False) in self._in_flight or (key, True) in self._in_flight
            if not busy and bucket.full_again(now):
                del self._buckets[key]

    def acquire(self, key: str, limits: Limits, streaming: bool,
                cost: int = 1) -> str | None:
        """None when the call may go ahead (release() it afterwards), else why
        not. cost: how many requests the call carries (a batch)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None and len(self._buckets) >= self.PRUNE_ABOVE:
                self._prune()
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(
                    limits.requests_per_second, limits.burst, self._clock)
            elif not bucket.follows(limits.requests_per_second, limits.burst):
                bucket = self._buckets[key] = bucket.retuned(
                    limits.requests_per_second, limits.burst)
            if cost > limits.burst:
                return (f"client {key!r} sent {cost} requests in one call; its burst "
                        f"allows {limits.burst}")
            wait = bucket.take(cost)
            if wait:
                return (f"client {key!r} is over its limit of "
                        f"{limits.requests_per_second:g} requests/s; retry in "
                        f"{max(wait * 1000, 1):.0f} ms")
            cap = limits.max_watch_streams if streaming else limits.max_in_flight
            slot = (key, streaming)
            if self._in_flight.get(slot, 0) >= cap:
                what = "Watch streams" if streaming else "calls in flight"
                return f"client {key!r} already has {cap} {what}, its limit"
            if streaming and self._streams >= self._max_streams:
                return (f"the server already serves {self._max_streams} Watch streams, "
                        "its limit over all clients; retry later")
            self._in_flight[slot] = self._in_flight.get(slot, 0) + 1
            if streaming:
                self._streams += 1
            return None

    def release(self, key: str, streaming: bool) -> None:
        with self._lock:
            if streaming:
                self._streams -= 1
            slot = (key, streaming)
            self._in_flight[slot] -= 1
            if not self._in_flight[slot]:
                del self._in_flight[slot]
