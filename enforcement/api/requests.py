"""Each incoming request turned into the checked arguments of one domain
call, or the error that says what to fix.

Everything a client can get wrong in a request is checked here, in the order
the answers have always been given: a request with several faults is
answered with the first one (tests/unit/test_requests.py pins each message).
The protobuf is unpacked here and its wire-level bounds (page sizes, batch
sizes, list lengths, timestamps) are this module's; the domain's own rules
(addresses, identifiers, reasons, an action within the policy's bounds) are
enforcement.domain.validation's and policy.action_spec's, called from here.
What needs the service's state is the service's to refuse: the subscriber
an account names (looked up through the callable a decision is given), an
expiry already past at decision time, protected assets, scopes the policy
does not allow.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from enforcement.api.convert import enum_from_proto
from enforcement.domain import errors, policy, validation
from enforcement.domain.model import ActionKind, ActionSpec, Decision, State, Violation
from enforcement.v1 import enforcement_pb2 as pb

# The API's own limits. A page or a batch past these costs the server more
# than any client needs; a list past these in an action is no real action.
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_BATCH = 256
MAX_DURATION_SECONDS = 10 * 365 * 86400
MAX_DESTINATIONS = 16
MAX_REQUESTED_PORTS = 64
MAX_ACCOUNT_LENGTH = 128
MAX_ACTION_WORD = 32  # action.protocol and action.portal name one of a few words
# 10000-01-01T00:00:00Z: google.protobuf.Timestamp's range ends there.
_TIMESTAMP_END = 253402300800
# Longer tokens were never given; int() of a huge digit string is slow.
_MAX_TOKEN_DIGITS = 12


@dataclasses.dataclass(frozen=True)
class Page:
    """A checked List: which enforcements, and which page of them."""
    subscriber_ip: str
    case_id: str
    states: list[State]
    start: int
    size: int

    def next_token(self, more: bool) -> str:
        return str(self.start + self.size) if more else ""


@dataclasses.dataclass(frozen=True)
class Watch:
    """A checked Watch: events after a sequence, filtered."""
    after: int
    subscriber_ip: str
    case_id: str


@dataclasses.dataclass(frozen=True)
class AuditQuery:
    enforcement_id: str
    case_id: str
    limit: int


def decision(request: pb.ApplyRequest, rules: policy.Policy,
             account_address: Callable[[str], str]) -> Decision:
    """An Apply (or Plan) request as a Decision. account_address is the
    service's lookup of the address an inventory account names (NotFound
    when none does)."""
    duration = until = None
    if request.HasField("duration") and request.HasField("expires_at"):
        raise errors.InvalidArgument("give duration or expires_at, not both")
    if request.HasField("duration"):
        duration = request.duration.ToNanoseconds() / 1e9
        if not 0 < duration <= MAX_DURATION_SECONDS:
            raise errors.InvalidArgument(
                f"duration must be positive and at most {MAX_DURATION_SECONDS} s")
    if request.HasField("expires_at"):
        stamp = request.expires_at
        if not 0 <= stamp.nanos < 10**9 or not 0 < stamp.seconds < _TIMESTAMP_END:
            raise errors.InvalidArgument("expires_at is not a valid timestamp")
        until = stamp.ToNanoseconds() / 1e9
        if until - time.time() > MAX_DURATION_SECONDS:
            raise errors.InvalidArgument(
                f"expires_at is more than {MAX_DURATION_SECONDS} s from now")
    ip = request.subscriber.ip
    if request.subscriber.account:
        if ip:
            raise errors.InvalidArgument(
                "give subscriber.ip or subscriber.account, not both")
        ip = account_address(validation.bounded(request.subscriber.account,
                                                "subscriber.account", MAX_ACCOUNT_LENGTH))
    return validation.validate_apply(
        request_id=request.request_id, case_id=request.case_id,
        ip=ip, mac=request.subscriber.mac,
        violation=enum_from_proto(Violation, "Violation", request.violation),
        reason=request.reason, scope=request.scope,
        requested_action=(requested_action(request.action, rules)
                          if request.HasField("action") else None),
        duration=duration, until=until)


def lift(request: pb.LiftRequest) -> tuple[str, str]:
    """A Lift request as (enforcement id, reason)."""
    return validation.validate_id("id", request.id), validation.parse_reason(request.reason)


def enforcement_id(request: pb.GetRequest) -> str:
    return validation.validate_id("id", request.id)


def page(request: pb.ListRequest) -> Page:
    states = [enum_from_proto(State, "State", s) for s in request.states]
    if None in states:
        raise errors.InvalidArgument("states holds STATE_UNSPECIFIED or an unknown value")
    size = request.page_size or DEFAULT_PAGE
    if size > MAX_PAGE:
        raise errors.InvalidArgument(f"page_size is at most {MAX_PAGE}")
    token = request.page_token or "0"
    if len(token) > _MAX_TOKEN_DIGITS or not token.isascii() or not token.isdigit():
        raise errors.InvalidArgument("page_token is not one this server gave")
    subscriber_ip, case_id = _filters(request)
    return Page(subscriber_ip, case_id, states, int(token), size)


def watch(request: pb.WatchRequest) -> Watch:
    return Watch(request.after_sequence, *_filters(request))


def audit_query(request: pb.ListAuditRequest) -> AuditQuery:
    limit = request.limit or DEFAULT_PAGE
    if limit > MAX_PAGE:
        raise errors.InvalidArgument(f"limit is at most {MAX_PAGE}")
    return AuditQuery(
        enforcement_id=validation.bounded(request.enforcement_id, "enforcement_id",
                                          validation.MAX_ID_LENGTH),
        case_id=validation.bounded(request.case_id, "case_id", validation.MAX_ID_LENGTH),
        limit=limit)


def batch(request, check: Callable) -> list:
    """Each item of an ApplyBatch or LiftBatch checked with check: its checked
    call, or the refusal that is its outcome. A batch empty or too big is
    refused whole."""
    if not request.requests:
        raise errors.InvalidArgument("requests is empty")
    if len(request.requests) > MAX_BATCH:
        raise errors.InvalidArgument(
            f"requests holds {len(request.requests)} decisions; at most {MAX_BATCH} per call")
    checked: list = []
    for item in request.requests:
        try:
            checked.append(check(item))
        except errors.EnforcementError as exc:
            checked.append(exc)
    return checked


def _filters(request) -> tuple[str, str]:
    """The subscriber/case filters of List and Watch, checked like Apply's fields."""
    return (validation.parse_filter_ip(request.subscriber_ip, "subscriber_ip"),
            validation.bounded(request.case_id, "case_id", validation.MAX_ID_LENGTH))


_DIRECTIONS = {pb.DIRECTION_FROM_SUBSCRIBER: "from_subscriber",
               pb.DIRECTION_TO_SUBSCRIBER: "to_subscriber", pb.DIRECTION_BOTH: "both"}
_UNITS = {pb.RATE_UNIT_KBPS: "kbps", pb.RATE_UNIT_PKTPS: "pktps"}


_ACTION_CACHE: dict[tuple[bytes, int], tuple[policy.Policy, ActionSpec]] = {}


def requested_action(message: pb.ActionRequest, rules: policy.Policy) -> ActionSpec:
    """The request's own action, checked against the policy's bounds. A case
    system sends the same few actions over and over: each distinct one is
    checked once (per policy), its spec reused (specs are immutable)."""
    key = (message.SerializeToString(deterministic=True), id(rules))
    cached = _ACTION_CACHE.get(key)
    if cached is None:
        spec = _requested_action(message, rules)
        if len(_ACTION_CACHE) > 1024:
            _ACTION_CACHE.clear()
        _ACTION_CACHE[key] = (rules, spec)
        return spec
    return cached[1]


def _requested_action(message: pb.ActionRequest, rules: policy.Policy) -> ActionSpec:
    kind = enum_from_proto(ActionKind, "ActionKind", message.kind)
    if kind is None:
        raise errors.InvalidArgument("action.kind is required when action is given")
    # Bounds first, so that no huge list is walked or echoed back.
    if len(message.ports) > MAX_REQUESTED_PORTS:
        raise errors.InvalidArgument(
            f"action.ports lists {len(message.ports)} ports; at most {MAX_REQUESTED_PORTS}")
    for name in ("to", "except_to"):
        values = getattr(message, name)
        if len(values) > MAX_DESTINATIONS:
            raise errors.InvalidArgument(
                f"action.{name} lists {len(values)} entries; at most {MAX_DESTINATIONS}")
        for value in values:
            if value not in policy.ASSET_LISTS:
                validation.parse_prefix(value, f"action.{name} entry")
    for name in ("protocol", "portal"):
        validation.bounded(getattr(message, name), f"action.{name}", MAX_ACTION_WORD)
    step: dict = {"action": kind.value}
    for name, value in (("protocol", message.protocol), ("ports", list(message.ports)),
                        ("direction", _DIRECTIONS.get(message.direction)),
                        ("to", list(message.to)), ("except_to", list(message.except_to)),
                        ("rate", message.rate), ("unit", _UNITS.get(message.unit)),
                        ("burst", message.burst), ("portal", message.portal)):
        if value:
            step[name] = value
    if message.direction and message.direction not in _DIRECTIONS:
        raise errors.InvalidArgument("action.direction is not a known Direction")
    if message.unit and message.unit not in _UNITS:
        raise errors.InvalidArgument("action.unit is not a known RateUnit")
    try:
        return policy.action_spec(step, "action", rules.assets, rules.limits,
                                  source="request")
    except policy.PolicyError as exc:
        raise errors.InvalidArgument(str(exc)) from None
