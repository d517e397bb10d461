"""Plain, typed data shared by validation, planning, the service and the API.

Nothing here talks to a switch or to gRPC: the API layer converts protobuf
messages into these types, and the controller compiles FlowRules into OpenFlow.
"""
from __future__ import annotations

import dataclasses
import enum
import ipaddress

from enforcement.domain.flows import FlowRule, MeterSpec

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """One step: what to do, with its parameters (unused ones stay empty).
    enforcement.domain.policy checks one, from the policy file or a request."""
    kind: ActionKind
    protocol: str = "any"
    ports: tuple[int, ...] = ()
    direction: str = "from_subscriber"
    to: tuple[Network, ...] = ()
    except_to: tuple[Network, ...] = ()
    rate: int = 0
    unit: str = "kbps"
    burst: int = 0
    portal: str = "portal"

    def describe(self, ip: str) -> str:
        what = self._traffic()
        if self.kind is ActionKind.BLOCK:
            side = {"from_subscriber": f"from {ip}", "to_subscriber": f"to {ip}",
                    "both": f"to and from {ip}"}[self.direction]
            text = f"drop {what} {side}"
            if self.to:
                text += " toward " + _addresses(self.to)
            if self.except_to:
                text += " except toward " + _addresses(self.except_to)
            return text
        if self.kind is ActionKind.RATE_LIMIT:
            unit = "kbit/s" if self.unit == "kbps" else "packets/s"
            text = f"limit {what} from {ip} to {self.rate} {unit} (burst {self.burst})"
            if self.to:
                text += " toward " + _addresses(self.to)
            return text
        if self.kind is ActionKind.QUARANTINE:
            return f"quarantine {ip}: only DNS and the {self.portal.replace('_', ' ')} answer"
        if self.kind is ActionKind.CUTOFF:
            return f"cut {ip} off: nothing in or out"
        return (f"only packets carrying {ip}'s own addresses (IPv4, IPv6) and MAC leave "
                "its port; no router advertisements or DHCPv6 server messages")

    def _traffic(self) -> str:
        if self.protocol == "any":
            return "all traffic"
        if self.ports:
            return f"{self.protocol.upper()} to port{'s' if len(self.ports) > 1 else ''} " + \
                "/".join(map(str, self.ports))
        return f"all {self.protocol.upper()}"


def _addresses(networks) -> str:
    return ", ".join(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
                     for n in networks)


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
    """Who a decision names: one of the subscriber's addresses (either
    family); the service finds the rest of its identity (its attachment and
    its other addresses) in the topology."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    mac: str | None = None  # lower-case colon form when given

    def __post_init__(self):
        if self.ip.version == 4 and not isinstance(self.ip, SubscriberAddress):
            object.__setattr__(self, "ip", SubscriberAddress(int(self.ip)))


class SubscriberAddress(ipaddress.IPv4Address):
    """An IPv4 address that renders its text once: a decision's address is
    written into its record, events, audit entries and answers."""
    __slots__ = ("_text",)
    _text: str

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
    # A prefix wider than the subscriber's /32, where the policy allows one
    # (IPv4 subscribers only).
    scope: ipaddress.IPv4Network | None = None
    # The action the request asked for instead of the policy's, already
    # checked against the policy.
    requested_action: ActionSpec | None = None
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
    # The subscriber's addresses it was planned for, both families (the one
    # the decision named among them).
    addresses: tuple[str, ...] = ()
    # The version of the policy it was planned with (enforcement.domain.policy):
    # a reload changes what new decisions get, never the rules a live
    # enforcement was confirmed with.
    policy_version: str = ""
    # The action that policy gave it: re-planned after a restart under a
    # changed ladder, an enforcement keeps the same action.
    spec: ActionSpec | None = None


# Its own fields are keyword-only: they follow the proposal's, some of
# which have defaults.
@dataclasses.dataclass(frozen=True, kw_only=True)
class Enforcement(Proposal):
    """A proposal carried out: the decision it answers, under an id of its
    own, and where it stands."""
    id: str
    decision: Decision
    state: State
    state_reason: str
    created_at: float
    updated_at: float
    expires_at: float | None = None

    @classmethod
    def carrying_out(cls, proposal: Proposal, **own) -> Enforcement:
        """An enforcement of proposal: own holds its own fields, and any of
        the proposal's it changes (the rules, when an expiry adds a backstop)."""
        return cls(**{**proposal.__dict__, **own})

    @property
    def serial(self) -> int:
        return self.cookie & ((1 << 48) - 1)

    def moved_to(self, state: State, reason: str, now: float) -> Enforcement:
        # What dataclasses.replace gives (Enforcement validates nothing on
        # construction), at a fifth of its cost: every decision makes two.
        moved = object.__new__(Enforcement)
        fields = moved.__dict__
        fields.update(self.__dict__)
        fields["state"], fields["state_reason"], fields["updated_at"] = state, reason, now
        return moved


@dataclasses.dataclass(frozen=True)
class HostView:
    mac: str
    ip: str | None
    dpid: int
    port: int
    account: str = ""   # from the inventory, when it names this subscriber
    pinned: bool = False
    # Its IPv6 addresses (link-local included) learned from neighbour
    # discovery or given by the inventory, and the inventory's prefixes.
    ipv6: tuple[str, ...] = ()


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


# The event kind of a PortAlarm.
PORT_OVER_BUDGET = "port_over_budget"
# The event kind of an IdentityEvent.
IDENTITY_REFUSED = "identity_refused"
# The controller's own events, no record named: a reload of its files.
POLICY_RELOADED = "policy_reloaded"
RELOAD_REFUSED = "reload_refused"

# The control-plane budgets a switch meters, or the controller counts, per
# access port, and the unit each one's rate and limit are in.
BUDGET_UNITS = {
    "learn": "packets/s",          # copies sent to the controller for learning
    "storm": "packets/s",          # broadcast and unknown-unicast flooding
    "learning_ban": "new MACs/s",  # MAC churn that got learning banned
    "max_hosts": "hosts",          # hosts beyond the port's maximum
}


@dataclasses.dataclass(frozen=True)
class PortAlarm:
    """An access port went over one of its control-plane budgets.

    Raised by the controller, not by a decision: the controller only meters
    and reports, the case system decides what to do about it.

    rate_pps is what was measured, in the budget's unit (BUDGET_UNITS):
    offered packets per second for "learn" and "storm", new MACs per second
    for "learning_ban", the number of hosts for "max_hosts". limit is the
    configured limit in that same unit.
    """
    dpid: int
    port: int
    budget: str
    rate_pps: float
    limit: float
    subscriber_ip: str | None = None  # the port's subscriber, when known
    detail: str = ""                  # human text; a default one when empty

    def __post_init__(self):
        # A bad alarm is the controller's bug: refuse it here rather than
        # store something Watch cannot describe.
        _check_report(self, "budget", self.budget, BUDGET_UNITS)

    @property
    def unit(self) -> str:
        return BUDGET_UNITS[self.budget]

    def text(self) -> str:
        """The detail given, or a sentence saying what went over what."""
        if self.detail:
            return self.detail
        who = f" ({self.subscriber_ip})" if self.subscriber_ip else ""
        return (f"switch {self.dpid:016x} port {self.port}{who} over its {self.budget} "
                f"budget: {self.rate_pps:g} {self.unit}, limit {self.limit:g}")


# What a subscriber claimed that the controller refused (IdentityEvent.kind),
# and what each means.
IDENTITY_KINDS = {
    # an ARP or neighbour advertisement claiming an address another
    # subscriber holds (by DHCP binding or first come, first served)
    "address_claim": "claimed an address another subscriber holds",
    # a MAC known at a live access port, seen at another port
    "mac_claim": "sent with a MAC that belongs to a subscriber on another port",
    # an LLDP frame that failed authentication (or came from an access port)
    "lldp_forged": "sent an LLDP frame that failed authentication",
    # a DHCP server reply from a port not declared trusted
    "dhcp_untrusted": "answered as a DHCP server from an untrusted port",
}


@dataclasses.dataclass(frozen=True)
class IdentityEvent:
    """A subscriber tried to rewrite who is where, and the controller
    refused: the switch dropped it (or the controller ignored it) and
    nothing moved. Raised by the controller, not by a decision; like a
    PortAlarm, what to do about the claimant is the case system's decision.

    dpid, port: where the claim came from; mac: the claimant's source MAC;
    claimed: what it claimed (an address, a MAC, "switch X port Y");
    owner: whose it is ("MAC at switch X port Y"), empty when nobody's;
    subscriber_ip: the claimant port's subscriber, when known.
    """
    kind: str
    dpid: int
    port: int
    mac: str
    claimed: str
    owner: str = ""
    subscriber_ip: str | None = None
    detail: str = ""

    def __post_init__(self):
        _check_report(self, "identity event", self.kind, IDENTITY_KINDS)

    def text(self) -> str:
        if self.detail:
            return self.detail
        owner = f" (held by {self.owner})" if self.owner else ""
        return (f"switch {self.dpid:016x} port {self.port}: {self.mac} "
                f"{IDENTITY_KINDS[self.kind]}: {self.claimed}{owner}; refused")


def _check_report(report, what: str, kind: str, kinds) -> None:
    """A controller's report (PortAlarm, IdentityEvent) that Watch can
    describe: a known kind, a real switch port, the subscriber's address as
    Watch filters compare it (validation.parse_filter_ip). A bad one is the
    controller's bug: refused here rather than stored."""
    if kind not in kinds:
        raise ValueError(f"unknown {what} {kind!r}; one of " + ", ".join(kinds))
    if not (0 <= report.dpid < 1 << 64 and 0 <= report.port < 1 << 32):
        raise ValueError(f"no such switch port: dpid {report.dpid}, port {report.port}")
    if report.subscriber_ip:
        object.__setattr__(report, "subscriber_ip",
                           str(ipaddress.ip_address(report.subscriber_ip)))
