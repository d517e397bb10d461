"""Plain, typed data shared by validation, planning, the service and the API.

Nothing here talks to a switch or to gRPC: the API layer converts protobuf
messages into these types, and the controller compiles FlowRules into OpenFlow.
"""
from __future__ import annotations

import dataclasses
import enum
import ipaddress

from enforcement.flows import FlowRule, MeterSpec


class Violation(enum.Enum):
    SPAM = "spam"
    OPEN_RELAY = "open_relay"
    MAIL_POLLING = "mail_polling"
    SPOOFING = "spoofing"
    DENIAL_OF_SERVICE = "denial_of_service"
    PING_FLOOD = "ping_flood"
    PORT_SCAN = "port_scan"
    MALWARE = "malware"
    PHISHING = "phishing"
    MINING = "mining"
    NON_PAYMENT = "non_payment"
    ILLEGAL_USE = "illegal_use"
    ROKSO_LISTED = "rokso_listed"


class ActionKind(enum.Enum):
    BLOCK = "block"
    RATE_LIMIT = "rate_limit"
    QUARANTINE = "quarantine"
    CUTOFF = "cutoff"
    ANTI_SPOOFING = "anti_spoofing"


class State(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    LIFTED = "lifted"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in (State.FAILED, State.LIFTED, State.EXPIRED)


@dataclasses.dataclass(frozen=True)
class Subscriber:
    ip: ipaddress.IPv4Address
    mac: str | None = None  # lower-case colon form when given

    def __post_init__(self):
        if not isinstance(self.ip, SubscriberAddress):
            object.__setattr__(self, "ip", SubscriberAddress(int(self.ip)))


class SubscriberAddress(ipaddress.IPv4Address):
    """An IPv4 address that renders its text once: a decision's address is
    written into its record, events, audit entries and answers."""
    __slots__ = ("_text",)

    def __str__(self) -> str:
        try:
            return self._text
        except AttributeError:
            self._text = text = super().__str__()
            return text


@dataclasses.dataclass(frozen=True)
class Decision:
    """A validated Apply request."""
    request_id: str
    case_id: str
    subscriber: Subscriber
    violation: Violation
    reason: str
    # A prefix wider than the subscriber's /32, where the policy allows one.
    scope: ipaddress.IPv4Network | None = None
    # The action the request asked for instead of the policy's (an
    # enforcement.policy.ActionSpec, already checked against the policy).
    requested_action: object | None = None
    # How long it lasts (seconds), or when it ends (epoch seconds); at most one.
    duration: float | None = None
    until: float | None = None


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a subscriber is attached: its access switch and port."""
    dpid: int
    port: int
    mac: str


@dataclasses.dataclass(frozen=True)
class Action:
    kind: ActionKind
    description: str


@dataclasses.dataclass(frozen=True)
class Escalation:
    step: int  # 1-based position on the violation's ladder
    of_steps: int
    reason: str
    clause: str
    next_action: str  # what a repeat would get


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What Apply would do: the outcome of planning, before any switch."""
    action: Action
    location: Location
    escalation: Escalation
    cookie: int
    rules: tuple[FlowRule, ...]
    meters: tuple[MeterSpec, ...]


@dataclasses.dataclass(frozen=True)
class Enforcement:
    id: str
    decision: Decision
    action: Action
    location: Location
    escalation: Escalation
    cookie: int
    rules: tuple[FlowRule, ...]
    meters: tuple[MeterSpec, ...]
    state: State
    state_reason: str
    created_at: float
    updated_at: float
    expires_at: float | None = None

    @property
    def serial(self) -> int:
        return self.cookie & ((1 << 48) - 1)

    def moved_to(self, state: State, reason: str, now: float) -> "Enforcement":
        return dataclasses.replace(
            self, state=state, state_reason=reason, updated_at=now)


@dataclasses.dataclass(frozen=True)
class HostView:
    mac: str
    ip: str | None
    dpid: int
    port: int
    account: str = ""   # from the inventory, when it names this subscriber
    pinned: bool = False


@dataclasses.dataclass(frozen=True)
class LinkView:
    src_dpid: int
    src_port: int
    dst_dpid: int
    dst_port: int


@dataclasses.dataclass(frozen=True)
class SwitchView:
    dpid: int
    ports: tuple[tuple[int, str], ...]  # (number, name)


@dataclasses.dataclass(frozen=True)
class TopologyView:
    switches: tuple[SwitchView, ...]
    links: tuple[LinkView, ...]
    hosts: tuple[HostView, ...]
