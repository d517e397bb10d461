import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Violation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIOLATION_UNSPECIFIED: _ClassVar[Violation]
    VIOLATION_SPAM: _ClassVar[Violation]
    VIOLATION_OPEN_RELAY: _ClassVar[Violation]
    VIOLATION_MAIL_POLLING: _ClassVar[Violation]
    VIOLATION_SPOOFING: _ClassVar[Violation]
    VIOLATION_DENIAL_OF_SERVICE: _ClassVar[Violation]
    VIOLATION_PING_FLOOD: _ClassVar[Violation]
    VIOLATION_PORT_SCAN: _ClassVar[Violation]
    VIOLATION_MALWARE: _ClassVar[Violation]
    VIOLATION_PHISHING: _ClassVar[Violation]
    VIOLATION_MINING: _ClassVar[Violation]
    VIOLATION_NON_PAYMENT: _ClassVar[Violation]
    VIOLATION_ILLEGAL_USE: _ClassVar[Violation]
    VIOLATION_ROKSO_LISTED: _ClassVar[Violation]

class ActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_KIND_UNSPECIFIED: _ClassVar[ActionKind]
    ACTION_KIND_BLOCK: _ClassVar[ActionKind]
    ACTION_KIND_RATE_LIMIT: _ClassVar[ActionKind]
    ACTION_KIND_QUARANTINE: _ClassVar[ActionKind]
    ACTION_KIND_CUTOFF: _ClassVar[ActionKind]
    ACTION_KIND_ANTI_SPOOFING: _ClassVar[ActionKind]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_PENDING: _ClassVar[State]
    STATE_ACTIVE: _ClassVar[State]
    STATE_FAILED: _ClassVar[State]
    STATE_LIFTED: _ClassVar[State]
    STATE_EXPIRED: _ClassVar[State]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_FROM_SUBSCRIBER: _ClassVar[Direction]
    DIRECTION_TO_SUBSCRIBER: _ClassVar[Direction]
    DIRECTION_BOTH: _ClassVar[Direction]

class RateUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RATE_UNIT_UNSPECIFIED: _ClassVar[RateUnit]
    RATE_UNIT_KBPS: _ClassVar[RateUnit]
    RATE_UNIT_PKTPS: _ClassVar[RateUnit]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_PENDING: _ClassVar[EventKind]
    EVENT_KIND_APPLIED: _ClassVar[EventKind]
    EVENT_KIND_FAILED: _ClassVar[EventKind]
    EVENT_KIND_LIFTED: _ClassVar[EventKind]
    EVENT_KIND_EXPIRED: _ClassVar[EventKind]
    EVENT_KIND_REAPPLIED: _ClassVar[EventKind]
    EVENT_KIND_DRIFT_REPAIRED: _ClassVar[EventKind]
    EVENT_KIND_MOVED: _ClassVar[EventKind]
    EVENT_KIND_PORT_OVER_BUDGET: _ClassVar[EventKind]
    EVENT_KIND_POLICY_RELOADED: _ClassVar[EventKind]
    EVENT_KIND_RELOAD_REFUSED: _ClassVar[EventKind]
    EVENT_KIND_IDENTITY_REFUSED: _ClassVar[EventKind]
    EVENT_KIND_PROOF_FAILED: _ClassVar[EventKind]
    EVENT_KIND_PROOF_RESTORED: _ClassVar[EventKind]

class ProofState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROOF_STATE_UNSPECIFIED: _ClassVar[ProofState]
    PROOF_STATE_PROVEN: _ClassVar[ProofState]
    PROOF_STATE_FAILED: _ClassVar[ProofState]
    PROOF_STATE_UNPROVABLE: _ClassVar[ProofState]
VIOLATION_UNSPECIFIED: Violation
VIOLATION_SPAM: Violation
VIOLATION_OPEN_RELAY: Violation
VIOLATION_MAIL_POLLING: Violation
VIOLATION_SPOOFING: Violation
VIOLATION_DENIAL_OF_SERVICE: Violation
VIOLATION_PING_FLOOD: Violation
VIOLATION_PORT_SCAN: Violation
VIOLATION_MALWARE: Violation
VIOLATION_PHISHING: Violation
VIOLATION_MINING: Violation
VIOLATION_NON_PAYMENT: Violation
VIOLATION_ILLEGAL_USE: Violation
VIOLATION_ROKSO_LISTED: Violation
ACTION_KIND_UNSPECIFIED: ActionKind
ACTION_KIND_BLOCK: ActionKind
ACTION_KIND_RATE_LIMIT: ActionKind
ACTION_KIND_QUARANTINE: ActionKind
ACTION_KIND_CUTOFF: ActionKind
ACTION_KIND_ANTI_SPOOFING: ActionKind
STATE_UNSPECIFIED: State
STATE_PENDING: State
STATE_ACTIVE: State
STATE_FAILED: State
STATE_LIFTED: State
STATE_EXPIRED: State
DIRECTION_UNSPECIFIED: Direction
DIRECTION_FROM_SUBSCRIBER: Direction
DIRECTION_TO_SUBSCRIBER: Direction
DIRECTION_BOTH: Direction
RATE_UNIT_UNSPECIFIED: RateUnit
RATE_UNIT_KBPS: RateUnit
RATE_UNIT_PKTPS: RateUnit
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_PENDING: EventKind
EVENT_KIND_APPLIED: EventKind
EVENT_KIND_FAILED: EventKind
EVENT_KIND_LIFTED: EventKind
EVENT_KIND_EXPIRED: EventKind
EVENT_KIND_REAPPLIED: EventKind
EVENT_KIND_DRIFT_REPAIRED: EventKind
EVENT_KIND_MOVED: EventKind
EVENT_KIND_PORT_OVER_BUDGET: EventKind
EVENT_KIND_POLICY_RELOADED: EventKind
EVENT_KIND_RELOAD_REFUSED: EventKind
EVENT_KIND_IDENTITY_REFUSED: EventKind
EVENT_KIND_PROOF_FAILED: EventKind
EVENT_KIND_PROOF_RESTORED: EventKind
PROOF_STATE_UNSPECIFIED: ProofState
PROOF_STATE_PROVEN: ProofState
PROOF_STATE_FAILED: ProofState
PROOF_STATE_UNPROVABLE: ProofState

class Subscriber(_message.Message):
    __slots__ = ("ip", "mac", "addresses", "account")
    IP_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ip: str
    mac: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    account: str
    def __init__(self, ip: _Optional[str] = ..., mac: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., account: _Optional[str] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("request_id", "case_id", "subscriber", "violation", "reason", "action", "scope", "duration", "expires_at", "wait_for_proof")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_PROOF_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    case_id: str
    subscriber: Subscriber
    violation: Violation
    reason: str
    action: ActionRequest
    scope: str
    duration: _duration_pb2.Duration
    expires_at: _timestamp_pb2.Timestamp
    wait_for_proof: bool
    def __init__(self, request_id: _Optional[str] = ..., case_id: _Optional[str] = ..., subscriber: _Optional[_Union[Subscriber, _Mapping]] = ..., violation: _Optional[_Union[Violation, str]] = ..., reason: _Optional[str] = ..., action: _Optional[_Union[ActionRequest, _Mapping]] = ..., scope: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wait_for_proof: _Optional[bool] = ...) -> None: ...

class ActionRequest(_message.Message):
    __slots__ = ("kind", "protocol", "ports", "direction", "to", "except_to", "rate", "unit", "burst", "portal")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    EXCEPT_TO_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    PORTAL_FIELD_NUMBER: _ClassVar[int]
    kind: ActionKind
    protocol: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    direction: Direction
    to: _containers.RepeatedScalarFieldContainer[str]
    except_to: _containers.RepeatedScalarFieldContainer[str]
    rate: int
    unit: RateUnit
    burst: int
    portal: str
    def __init__(self, kind: _Optional[_Union[ActionKind, str]] = ..., protocol: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., direction: _Optional[_Union[Direction, str]] = ..., to: _Optional[_Iterable[str]] = ..., except_to: _Optional[_Iterable[str]] = ..., rate: _Optional[int] = ..., unit: _Optional[_Union[RateUnit, str]] = ..., burst: _Optional[int] = ..., portal: _Optional[str] = ...) -> None: ...

class LiftRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ApplyBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ApplyRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ApplyRequest, _Mapping]]] = ...) -> None: ...

class LiftBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[LiftRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[LiftRequest, _Mapping]]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("enforcement", "code", "message")
    ENFORCEMENT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    enforcement: Enforcement
    code: int
    message: str
    def __init__(self, enforcement: _Optional[_Union[Enforcement, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("subscriber_ip", "case_id", "states", "page_size", "page_token")
    SUBSCRIBER_IP_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscriber_ip: str
    case_id: str
    states: _containers.RepeatedScalarFieldContainer[State]
    page_size: int
    page_token: str
    def __init__(self, subscriber_ip: _Optional[str] = ..., case_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[State, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("enforcements", "next_page_token")
    ENFORCEMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    enforcements: _containers.RepeatedCompositeFieldContainer[Enforcement]
    next_page_token: str
    def __init__(self, enforcements: _Optional[_Iterable[_Union[Enforcement, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("subscriber_ip", "case_id", "after_sequence")
    SUBSCRIBER_IP_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    subscriber_ip: str
    case_id: str
    after_sequence: int
    def __init__(self, subscriber_ip: _Optional[str] = ..., case_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "kind", "enforcement_id", "case_id", "subscriber_ip", "state", "at", "detail", "datapath_id", "port", "budget", "rate", "limit", "identity", "claimant_mac", "claimed", "owner")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_IP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CLAIMANT_MAC_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: EventKind
    enforcement_id: str
    case_id: str
    subscriber_ip: str
    state: State
    at: _timestamp_pb2.Timestamp
    detail: str
    datapath_id: int
    port: int
    budget: str
    rate: float
    limit: float
    identity: str
    claimant_mac: str
    claimed: str
    owner: str
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., enforcement_id: _Optional[str] = ..., case_id: _Optional[str] = ..., subscriber_ip: _Optional[str] = ..., state: _Optional[_Union[State, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ..., datapath_id: _Optional[int] = ..., port: _Optional[int] = ..., budget: _Optional[str] = ..., rate: _Optional[float] = ..., limit: _Optional[float] = ..., identity: _Optional[str] = ..., claimant_mac: _Optional[str] = ..., claimed: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("enforcement_id", "case_id", "limit")
    ENFORCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    enforcement_id: str
    case_id: str
    limit: int
    def __init__(self, enforcement_id: _Optional[str] = ..., case_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("sequence", "at", "actor", "call", "outcome", "enforcement_id", "case_id", "clause", "detail")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    at: _timestamp_pb2.Timestamp
    actor: str
    call: str
    outcome: str
    enforcement_id: str
    case_id: str
    clause: str
    detail: str
    def __init__(self, sequence: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., call: _Optional[str] = ..., outcome: _Optional[str] = ..., enforcement_id: _Optional[str] = ..., case_id: _Optional[str] = ..., clause: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("kind", "description")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    kind: ActionKind
    description: str
    def __init__(self, kind: _Optional[_Union[ActionKind, str]] = ..., description: _Optional[str] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("datapath_id", "port", "mac")
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    datapath_id: int
    port: int
    mac: str
    def __init__(self, datapath_id: _Optional[int] = ..., port: _Optional[int] = ..., mac: _Optional[str] = ...) -> None: ...

class MatchField(_message.Message):
    __slots__ = ("field", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("datapath_id", "table_id", "priority", "cookie", "match", "actions", "text")
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    TABLE_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    datapath_id: int
    table_id: int
    priority: int
    cookie: int
    match: _containers.RepeatedCompositeFieldContainer[MatchField]
    actions: _containers.RepeatedScalarFieldContainer[str]
    text: str
    def __init__(self, datapath_id: _Optional[int] = ..., table_id: _Optional[int] = ..., priority: _Optional[int] = ..., cookie: _Optional[int] = ..., match: _Optional[_Iterable[_Union[MatchField, _Mapping]]] = ..., actions: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ...) -> None: ...

class Enforcement(_message.Message):
    __slots__ = ("id", "request_id", "case_id", "subscriber", "violation", "reason", "action", "state", "state_reason", "location", "rules", "created_at", "updated_at", "escalation", "meters", "expires_at", "policy_version", "proof")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_FIELD_NUMBER: _ClassVar[int]
    METERS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    id: str
    request_id: str
    case_id: str
    subscriber: Subscriber
    violation: Violation
    reason: str
    action: Action
    state: State
    state_reason: str
    location: Location
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    escalation: Escalation
    meters: _containers.RepeatedCompositeFieldContainer[Meter]
    expires_at: _timestamp_pb2.Timestamp
    policy_version: str
    proof: Proof
    def __init__(self, id: _Optional[str] = ..., request_id: _Optional[str] = ..., case_id: _Optional[str] = ..., subscriber: _Optional[_Union[Subscriber, _Mapping]] = ..., violation: _Optional[_Union[Violation, str]] = ..., reason: _Optional[str] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., state: _Optional[_Union[State, str]] = ..., state_reason: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., escalation: _Optional[_Union[Escalation, _Mapping]] = ..., meters: _Optional[_Iterable[_Union[Meter, _Mapping]]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy_version: _Optional[str] = ..., proof: _Optional[_Union[Proof, _Mapping]] = ...) -> None: ...

class Proof(_message.Message):
    __slots__ = ("state", "at", "reason", "shadowing_rules", "probes")
    STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SHADOWING_RULES_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    state: ProofState
    at: _timestamp_pb2.Timestamp
    reason: str
    shadowing_rules: _containers.RepeatedScalarFieldContainer[str]
    probes: int
    def __init__(self, state: _Optional[_Union[ProofState, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., shadowing_rules: _Optional[_Iterable[str]] = ..., probes: _Optional[int] = ...) -> None: ...

class Escalation(_message.Message):
    __slots__ = ("step", "of_steps", "reason", "clause", "next_action")
    STEP_FIELD_NUMBER: _ClassVar[int]
    OF_STEPS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLAUSE_FIELD_NUMBER: _ClassVar[int]
    NEXT_ACTION_FIELD_NUMBER: _ClassVar[int]
    step: int
    of_steps: int
    reason: str
    clause: str
    next_action: str
    def __init__(self, step: _Optional[int] = ..., of_steps: _Optional[int] = ..., reason: _Optional[str] = ..., clause: _Optional[str] = ..., next_action: _Optional[str] = ...) -> None: ...

class Meter(_message.Message):
    __slots__ = ("datapath_id", "meter_id", "unit", "rate", "burst", "text")
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    METER_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    datapath_id: int
    meter_id: int
    unit: str
    rate: int
    burst: int
    text: str
    def __init__(self, datapath_id: _Optional[int] = ..., meter_id: _Optional[int] = ..., unit: _Optional[str] = ..., rate: _Optional[int] = ..., burst: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("action", "location", "escalation", "rules", "meters")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ESCALATION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    METERS_FIELD_NUMBER: _ClassVar[int]
    action: Action
    location: Location
    escalation: Escalation
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    meters: _containers.RepeatedCompositeFieldContainer[Meter]
    def __init__(self, action: _Optional[_Union[Action, _Mapping]] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., escalation: _Optional[_Union[Escalation, _Mapping]] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., meters: _Optional[_Iterable[_Union[Meter, _Mapping]]] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Port(_message.Message):
    __slots__ = ("number", "name")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    number: int
    name: str
    def __init__(self, number: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Switch(_message.Message):
    __slots__ = ("datapath_id", "ports")
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    datapath_id: int
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    def __init__(self, datapath_id: _Optional[int] = ..., ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ...) -> None: ...

class Link(_message.Message):
    __slots__ = ("src_datapath_id", "src_port", "dst_datapath_id", "dst_port")
    SRC_DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_PORT_FIELD_NUMBER: _ClassVar[int]
    DST_DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    DST_PORT_FIELD_NUMBER: _ClassVar[int]
    src_datapath_id: int
    src_port: int
    dst_datapath_id: int
    dst_port: int
    def __init__(self, src_datapath_id: _Optional[int] = ..., src_port: _Optional[int] = ..., dst_datapath_id: _Optional[int] = ..., dst_port: _Optional[int] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("mac", "ip", "datapath_id", "port", "enforcement_ids", "account", "pinned", "ipv6")
    MAC_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    DATAPATH_ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ENFORCEMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    mac: str
    ip: str
    datapath_id: int
    port: int
    enforcement_ids: _containers.RepeatedScalarFieldContainer[str]
    account: str
    pinned: bool
    ipv6: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mac: _Optional[str] = ..., ip: _Optional[str] = ..., datapath_id: _Optional[int] = ..., port: _Optional[int] = ..., enforcement_ids: _Optional[_Iterable[str]] = ..., account: _Optional[str] = ..., pinned: _Optional[bool] = ..., ipv6: _Optional[_Iterable[str]] = ...) -> None: ...

class Topology(_message.Message):
    __slots__ = ("switches", "links", "hosts", "policy_version")
    SWITCHES_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    switches: _containers.RepeatedCompositeFieldContainer[Switch]
    links: _containers.RepeatedCompositeFieldContainer[Link]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    policy_version: str
    def __init__(self, switches: _Optional[_Iterable[_Union[Switch, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[Link, _Mapping]]] = ..., hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., policy_version: _Optional[str] = ...) -> None: ...
