"""Every check of an incoming request, pinned word for word with its status
code over a real socket: clients and case systems match on these texts, so a
refactoring must leave each one (and which one wins when a request has
several faults) exactly as it was."""
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from enforcement.domain import policy
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from tests.doubles import DualStackNetwork, served

INVALID = grpc.StatusCode.INVALID_ARGUMENT
TEN_YEARS = 10 * 365 * 86400


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    # The dual-stack double pins 10.0.0.1 to inventory account ACME-1.
    service = EnforcementService(DualStackNetwork(), policy.load(), Store(
        f"sqlite:///{tmp_path_factory.mktemp('requests')}/state.db"))
    with served(service) as stub:
        yield stub


def refusal(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def apply(**changes):
    """A valid Apply request with some fields changed (duration, expires_at
    and action given as messages; subscriber as a dict)."""
    request = pb.ApplyRequest(request_id="q-1", case_id="C-1",
                              violation=pb.VIOLATION_SPAM, reason="bulk mail")
    subscriber = changes.pop("subscriber", {"ip": "10.0.0.1"})
    request.subscriber.CopyFrom(pb.Subscriber(**subscriber))
    for name in ("duration", "expires_at", "action"):
        if name in changes:
            getattr(request, name).CopyFrom(changes.pop(name))
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def action(**fields):
    return pb.ActionRequest(**fields)


def seconds(n, nanos=0):
    return duration_pb2.Duration(seconds=n, nanos=nanos)


def stamp(n, nanos=0):
    return timestamp_pb2.Timestamp(seconds=n, nanos=nanos)


APPLY_REFUSALS = [
    (apply(duration=seconds(60), expires_at=stamp(4_000_000_000)), INVALID,
     "give duration or expires_at, not both"),
    (apply(duration=seconds(0)), INVALID,
     f"duration must be positive and at most {TEN_YEARS} s"),
    (apply(duration=seconds(-5)), INVALID,
     f"duration must be positive and at most {TEN_YEARS} s"),
    (apply(duration=seconds(TEN_YEARS + 1)), INVALID,
     f"duration must be positive and at most {TEN_YEARS} s"),
    (apply(expires_at=stamp(0)), INVALID, "expires_at is not a valid timestamp"),
    (apply(expires_at=stamp(253402300800)), INVALID, "expires_at is not a valid timestamp"),
    (apply(expires_at=stamp(4_000_000_000, nanos=-1)), INVALID,
     "expires_at is not a valid timestamp"),
    (apply(expires_at=stamp(253402300799)), INVALID,
     f"expires_at is more than {TEN_YEARS} s from now"),
    (apply(expires_at=stamp(1)), INVALID, "expires_at is in the past"),
    (apply(subscriber={"ip": "10.0.0.1", "account": "ACME-1"}), INVALID,
     "give subscriber.ip or subscriber.account, not both"),
    (apply(subscriber={"account": "A" * 129}), INVALID,
     "subscriber.account is 129 characters long; at most 128 are allowed"),
    (apply(subscriber={"account": "NOBODY"}), grpc.StatusCode.NOT_FOUND,
     "no subscriber account 'NOBODY' in the inventory (--inventory)"),
    (apply(action=action()), INVALID, "action.kind is required when action is given"),
    (apply(action=action(kind=pb.ACTION_KIND_BLOCK, protocol="tcp",
                         ports=list(range(1, 66)))), INVALID,
     "action.ports lists 65 ports; at most 64"),
    (apply(action=action(kind=pb.ACTION_KIND_BLOCK, to=["dns"] * 17)), INVALID,
     "action.to lists 17 entries; at most 16"),
    (apply(action=action(kind=pb.ACTION_KIND_BLOCK, except_to=["dns"] * 17)), INVALID,
     "action.except_to lists 17 entries; at most 16"),
    (apply(action=action(kind=pb.ACTION_KIND_BLOCK, to=["nowhere"])), INVALID,
     ("action.to entry 'nowhere' is not an IP address; "
     "give a dotted-quad IPv4 address such as 10.0.0.1")),
    (apply(action=action(kind=pb.ACTION_KIND_BLOCK, protocol="t" * 33)), INVALID,
     "action.protocol is 33 characters long; at most 32 are allowed"),
    (apply(action=action(kind=pb.ACTION_KIND_QUARANTINE, portal="p" * 33)), INVALID,
     "action.portal is 33 characters long; at most 32 are allowed"),
    (apply(action=action(kind=pb.ACTION_KIND_BLOCK, protocol="tcp", ports=[25],
                         direction=99)), INVALID,
     "action.direction is not a known Direction"),
    (apply(action=action(kind=pb.ACTION_KIND_RATE_LIMIT, rate=512, unit=99)), INVALID,
     "action.unit is not a known RateUnit"),
    (apply(action=action(kind=pb.ACTION_KIND_RATE_LIMIT, rate=1,
                         unit=pb.RATE_UNIT_KBPS)), INVALID,
     "request: action.rate is 1; it must be between 8 and 10000000"),
    (apply(action=action(kind=pb.ACTION_KIND_CUTOFF, ports=[25])), INVALID,
     "request: action.ports is not a known field; expected one of action"),
    (apply(violation=pb.VIOLATION_UNSPECIFIED), INVALID,
     ("violation is required: set one of the VIOLATION_* values other than "
     "VIOLATION_UNSPECIFIED")),
    (apply(violation=999), INVALID,
     ("violation is required: set one of the VIOLATION_* values other than "
     "VIOLATION_UNSPECIFIED")),
    (apply(reason="bell\x07"), INVALID,
     "reason holds control characters; only printable text, tabs and newlines are allowed"),
    (apply(reason="x" * 2049), INVALID,
     "reason is 2049 characters long; at most 2048 are allowed"),
    (apply(subscriber={"ip": ""}), INVALID, "subscriber.ip is required"),
    (apply(subscriber={"ip": "10.0.0.256"}), INVALID,
     ("subscriber.ip '10.0.0.256' is not an IPv4 address (Octet 256 (> 255) not permitted "
     "in '10.0.0.256'); give a dotted-quad IPv4 address such as 10.0.0.1")),
    (apply(request_id=""), INVALID, "request_id is required"),
    (apply(request_id="a b"), INVALID,
     "request_id may hold only printable ASCII without spaces"),
    (apply(case_id="C" * 129), INVALID,
     "case_id is 129 characters long; at most 128 are allowed"),
    (apply(subscriber={"ip": "10.0.0.1", "mac": "01:00:00:00:00:01"}), INVALID,
     "subscriber.mac 01:00:00:00:00:01 is a group address"),
    (apply(scope="10.9.0.0/16"), INVALID,
     "scope 10.9.0.0/16 does not contain subscriber.ip 10.0.0.1"),
    # Several faults: the first check in the order above answers.
    (apply(duration=seconds(-5), violation=pb.VIOLATION_UNSPECIFIED, request_id=""),
     INVALID, f"duration must be positive and at most {TEN_YEARS} s"),
    (apply(subscriber={"account": "NOBODY"}, action=action()), grpc.StatusCode.NOT_FOUND,
     "no subscriber account 'NOBODY' in the inventory (--inventory)"),
    (apply(action=action(), violation=pb.VIOLATION_UNSPECIFIED), INVALID,
     "action.kind is required when action is given"),
    (apply(violation=pb.VIOLATION_UNSPECIFIED, reason="\x07", request_id=""), INVALID,
     ("violation is required: set one of the VIOLATION_* values other than "
     "VIOLATION_UNSPECIFIED")),
    (apply(reason="\x07", subscriber={"ip": "nowhere"}), INVALID,
     "reason holds control characters; only printable text, tabs and newlines are allowed"),
    (apply(subscriber={"ip": "nowhere"}, request_id=""), INVALID,
     ("subscriber.ip 'nowhere' is not an IP address; "
     "give a dotted-quad IPv4 address such as 10.0.0.1")),
    (apply(request_id="", case_id=""), INVALID, "request_id is required"),
]


@pytest.mark.parametrize("request_, code, message", APPLY_REFUSALS)
@pytest.mark.parametrize("call", ["Apply", "Plan"])
def test_an_apply_request_is_refused_with_exactly_what_to_fix(stub, call, request_,
                                                               code, message):
    assert refusal(lambda: getattr(stub, call)(request_)) == (code, message)


@pytest.mark.parametrize("request_, code, message", APPLY_REFUSALS[:12])
def test_a_batch_refuses_each_item_as_its_own_call_would(stub, request_, code, message):
    results = stub.ApplyBatch(pb.ApplyBatchRequest(requests=[request_])).results
    assert [(r.code, r.message) for r in results] == [(code.value[0], message)]


@pytest.mark.parametrize("call, request_, message", [
    ("Lift", pb.LiftRequest(), "id is required"),
    ("Lift", pb.LiftRequest(id="e" * 129), "id is 129 characters long; at most 128 are allowed"),
    ("Lift", pb.LiftRequest(id="a b"), "id may hold only printable ASCII without spaces"),
    ("Lift", pb.LiftRequest(id="enf-1", reason="\x1b[31m"),
     "reason holds control characters; only printable text, tabs and newlines are allowed"),
    ("Lift", pb.LiftRequest(id="", reason="\x1b[31m"), "id is required"),
    ("Get", pb.GetRequest(), "id is required"),
    ("Get", pb.GetRequest(id="a\tb"), "id may hold only printable ASCII without spaces"),
    ("List", pb.ListRequest(states=[pb.STATE_UNSPECIFIED]),
     "states holds STATE_UNSPECIFIED or an unknown value"),
    ("List", pb.ListRequest(states=[pb.STATE_ACTIVE, 99]),
     "states holds STATE_UNSPECIFIED or an unknown value"),
    ("List", pb.ListRequest(page_size=1001), "page_size is at most 1000"),
    ("List", pb.ListRequest(page_token="x"), "page_token is not one this server gave"),
    ("List", pb.ListRequest(page_token="1" * 13), "page_token is not one this server gave"),
    ("List", pb.ListRequest(page_token="\u0663"), "page_token is not one this server gave"),
    ("List", pb.ListRequest(subscriber_ip="10.0.0.01"),
     ("subscriber_ip '10.0.0.01' is not an IPv4 address (Leading zeros are not permitted "
     "in '01' in '10.0.0.01'); give a dotted-quad IPv4 address such as 10.0.0.1")),
    ("List", pb.ListRequest(case_id="C" * 129),
     "case_id is 129 characters long; at most 128 are allowed"),
    ("List", pb.ListRequest(states=[0], page_size=1001, page_token="x", subscriber_ip="x"),
     "states holds STATE_UNSPECIFIED or an unknown value"),
    ("List", pb.ListRequest(page_size=1001, page_token="x"), "page_size is at most 1000"),
    ("List", pb.ListRequest(page_token="x", subscriber_ip="x"),
     "page_token is not one this server gave"),
    ("List", pb.ListRequest(subscriber_ip="", case_id="C" * 129),
     "case_id is 129 characters long; at most 128 are allowed"),
    ("ListAudit", pb.ListAuditRequest(limit=1001), "limit is at most 1000"),
    ("ListAudit", pb.ListAuditRequest(enforcement_id="e" * 129),
     "enforcement_id is 129 characters long; at most 128 are allowed"),
    ("ListAudit", pb.ListAuditRequest(case_id="C" * 129),
     "case_id is 129 characters long; at most 128 are allowed"),
    ("ListAudit", pb.ListAuditRequest(limit=1001, enforcement_id="e" * 129),
     "limit is at most 1000"),
    ("ListAudit", pb.ListAuditRequest(enforcement_id="e" * 129, case_id="C" * 129),
     "enforcement_id is 129 characters long; at most 128 are allowed"),
    ("ApplyBatch", pb.ApplyBatchRequest(), "requests is empty"),
    ("ApplyBatch", pb.ApplyBatchRequest(requests=[apply()] * 257),
     "requests holds 257 decisions; at most 256 per call"),
    ("LiftBatch", pb.LiftBatchRequest(), "requests is empty"),
    ("LiftBatch", pb.LiftBatchRequest(requests=[pb.LiftRequest(id="x")] * 257),
     "requests holds 257 decisions; at most 256 per call"),
])
def test_every_other_request_is_refused_with_exactly_what_to_fix(stub, call, request_,
                                                                  message):
    assert refusal(lambda: getattr(stub, call)(request_)) == (INVALID, message)


@pytest.mark.parametrize("request_, message", [
    (pb.WatchRequest(subscriber_ip="fe80::1%eth0"),
     "subscriber_ip 'fe80::1%eth0' has a zone index; give the address without %zone"),
    (pb.WatchRequest(case_id="C" * 129),
     "case_id is 129 characters long; at most 128 are allowed"),
    (pb.WatchRequest(subscriber_ip="x", case_id="C" * 129),
     ("subscriber_ip 'x' is not an IP address; give a dotted-quad IPv4 address such as "
     "10.0.0.1")),
])
def test_a_watch_with_a_bad_filter_ends_at_once_with_what_to_fix(stub, request_, message):
    assert refusal(lambda: next(iter(stub.Watch(request_, timeout=5)))) == (INVALID, message)


def test_a_lift_batch_refuses_each_item_as_lift_would(stub):
    results = stub.LiftBatch(pb.LiftBatchRequest(requests=[
        pb.LiftRequest(), pb.LiftRequest(id="enf-1", reason="\x07"),
        pb.LiftRequest(id="enf-0000000000000000")])).results
    assert [(r.code, r.message) for r in results] == [
        (INVALID.value[0], "id is required"),
        (INVALID.value[0], ("reason holds control characters; "
                           "only printable text, tabs and newlines are allowed")),
        (grpc.StatusCode.NOT_FOUND.value[0], "no enforcement with id 'enf-0000000000000000'")]


def test_the_largest_page_and_the_longest_duration_are_accepted(stub):
    assert stub.List(pb.ListRequest(page_size=1000)).next_page_token == ""
    assert stub.ListAudit(pb.ListAuditRequest(limit=1000)) is not None
    planned = stub.Plan(apply(duration=seconds(TEN_YEARS)))
    assert planned.action.kind == pb.ACTION_KIND_BLOCK
