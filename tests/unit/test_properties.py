"""Property-based tests (hypothesis): generated requests, well-formed, nearly
well-formed and hostile, against the validator and, through a real gRPC
socket, the whole Apply/Plan path down to the rules a switch would get.

CI runs the "ci" profile (fixed seed, fixed budget); a longer run on demand:
    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/unit/test_properties.py
"""
import ipaddress
import os

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from enforcement.api.servicer import EnforcementServicer
from enforcement.domain import errors, policy
from enforcement.domain.flows import VLAN_PRESENT
from enforcement.domain.validation import parse_ip, parse_prefix
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from tests.doubles import RecordingNetwork, served

settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

POLICY = policy.load()

# Strings that have broken address parsers somewhere.
ODD_ADDRESSES = [
    "10.0.0.1", "10.0.0.3", "10.0.0.2", "010.0.0.1", "10.0.0.01", "10.1", "10.0.1",
    "0x0a.0.0.1", "012.0.0.1", "10.0.0.1 ", " 10.0.0.1", "10.0.0.1\n", "10.0.0.256",
    "10.0.0.-1", "10.0.0.1/32", "10.0.0.1%eth0", "::ffff:10.0.0.1", "::10.0.0.1",
    "fe80::1%eth0", "2001:db8::1", "2001:DB8::1", "::", "::1", "1::2::3", ":::",
    "2001:db8:0:0:0:0:0:1:2", "１０.0.0.1", "10.0.0.1\x00", "", "255.255.255.255",
    "0.0.0.0", "127.0.0.1", "224.0.0.1", "169.254.1.1", "10.0.0.250", "10.0.0.0",
    "1e1.0.0.1", "10..0.1", "10.0.0.", ".10.0.0.1",
]
ASSET_NAMES = ["dns", "portal", "billing_portal", "mail_servers", "smarthosts",
               "protected", "nope"]
PREFIXES = ["10.0.0.0/24", "10.0.0.0/255.255.255.0", "10.0.0.0/08", "10.0.0.1/24",
            "10.0.0.0/33", "192.0.2.0/24", "0.0.0.0/0", "10.0.0.2", "10.0.0.0/-1"]

junk = st.text(max_size=80)
addresses = st.one_of(st.sampled_from(ODD_ADDRESSES), junk,
                      st.ip_addresses().map(str))
identifiers = st.one_of(st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
                        st.text(max_size=200))
enum_numbers = st.integers(min_value=-3, max_value=20)
u64 = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def actions(draw):
    return pb.ActionRequest(
        kind=draw(enum_numbers),
        protocol=draw(st.sampled_from(["", "tcp", "udp", "icmp", "any", "sctp"]) | junk),
        ports=draw(st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=70)),
        direction=draw(enum_numbers),
        to=draw(st.lists(st.sampled_from(ASSET_NAMES + PREFIXES) | junk, max_size=20)),
        except_to=draw(st.lists(st.sampled_from(ASSET_NAMES + PREFIXES) | junk,
                                max_size=3)),
        rate=draw(st.one_of(st.integers(min_value=0, max_value=20000), u64)),
        unit=draw(enum_numbers),
        burst=draw(st.one_of(st.integers(min_value=0, max_value=20000), u64)),
        portal=draw(st.sampled_from(["", "portal", "billing_portal", "evil"]) | junk))


@st.composite
def apply_requests(draw):
    request = pb.ApplyRequest(
        request_id=draw(identifiers), case_id=draw(identifiers),
        subscriber=pb.Subscriber(
            ip=draw(addresses),
            mac=draw(st.sampled_from(["", "00:00:00:00:00:01", "00:00:00:00:00:03",
                                      "01:00:5e:00:00:01", "00-00-00-00-00-01",
                                      "00:00:00:00:00:01\n"]) | junk)),
        violation=draw(enum_numbers),
        reason=draw(st.text(max_size=3000)),
        scope=draw(st.sampled_from(["", "10.0.0.1/32", *PREFIXES]) | junk))
    if draw(st.booleans()):
        request.action.CopyFrom(draw(actions()))
    choice = draw(st.integers(min_value=0, max_value=3))
    if choice == 1:
        request.duration.seconds = draw(st.integers(min_value=-2**40, max_value=2**40))
        request.duration.nanos = draw(st.integers(min_value=-10**9, max_value=10**9))
    elif choice == 2:
        request.expires_at.seconds = draw(st.integers(min_value=-2**40, max_value=2**40))
        request.expires_at.nanos = draw(st.integers(min_value=-10**9, max_value=2**31 - 1))
    return request


@st.composite
def nearly_valid_requests(draw):
    """A request the controller accepts, with some fields redrawn: most
    examples then get past validation and exercise the planner."""
    request = pb.ApplyRequest(
        request_id=draw(st.from_regex(r"r-[0-9a-f]{8}", fullmatch=True)), case_id="C-1",
        subscriber=pb.Subscriber(ip=draw(st.sampled_from(["10.0.0.1", "10.0.0.3"]))),
        violation=draw(st.integers(min_value=1, max_value=13)), reason="generated")
    if draw(st.booleans()):
        request.action.CopyFrom(draw(actions()))
    if draw(st.booleans()):
        other = draw(apply_requests())
        field = draw(st.sampled_from(["subscriber", "scope", "reason", "violation",
                                      "case_id"]))
        if field == "subscriber":
            request.subscriber.CopyFrom(other.subscriber)
        else:
            setattr(request, field, getattr(other, field))
    return request


# ---- the validator alone --------------------------------------------------------------

@given(addresses)
def test_address_parsing_accepts_only_canonical_forms(text):
    try:
        address = parse_ip(text, "ip")
    except errors.InvalidArgument as exc:
        assert "ip" in str(exc) and len(str(exc)) < 400
        return
    # What was accepted reads back the same (case aside for IPv6).
    assert str(address) == str(ipaddress.ip_address(text))
    assert text.strip() == text and "%" not in text
    if address.version == 4:
        assert str(address) == text


@given(st.sampled_from(PREFIXES) | junk)
def test_prefix_parsing_is_strict(text):
    try:
        network = parse_prefix(text, "scope")
    except errors.InvalidArgument:
        return
    assert str(network) == text or f"{network.network_address}" == text


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    network = RecordingNetwork()
    service = EnforcementService(network, POLICY, Store(
        f"sqlite:///{tmp_path_factory.mktemp('props')}/state.db"))
    return network, service, EnforcementServicer(service)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=apply_requests())
def test_the_validator_never_crashes_and_only_says_what_to_fix(rig, request):
    _, _, servicer = rig
    try:
        decision = servicer._decision(request)
    except errors.InvalidArgument as exc:
        assert str(exc) and len(str(exc)) < 600  # never echoes a huge value
        return
    assert decision.subscriber.ip.version == 4
    assert len(decision.request_id) <= 128 and len(decision.reason) <= 2048


# ---- the whole path over gRPC ---------------------------------------------------------

@pytest.fixture(scope="module")
def server(rig):
    _, service, _ = rig
    with served(service) as stub:
        yield stub


ANSWERS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


def _touches_only(rule, ip: str, mac: str, port: int, dpid: int, vlan: int) -> bool:
    """A rule is about the subscriber: its port on its switch, its addresses,
    or the quarantine VLAN that carries only quarantined traffic."""
    match = dict(rule.match)
    if rule.dpid == dpid and match.get("in_port") == port:
        return True
    for field in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"):
        value = match.get(field)
        if value == ip:
            return True
    if match.get("eth_src") == mac or match.get("eth_dst") == mac:
        return True
    return match.get("vlan_vid") == VLAN_PRESENT | vlan


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=st.one_of(apply_requests(), nearly_valid_requests()),
       plan_first=st.booleans())
def test_no_request_crashes_the_server_and_no_refused_request_reaches_a_switch(
        rig, server, request, plan_first):
    network, _, _ = rig
    before = set(network.flows)
    planned = None
    if plan_first:
        try:
            planned = server.Plan(request, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() in ANSWERS, (exc.code(), exc.details())
        assert set(network.flows) == before  # Plan touches no switch
    try:
        record = server.Apply(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in ANSWERS, (exc.code(), exc.details())
        assert set(network.flows) == before
        event(f"refused {exc.code().name}")
        return
    event(f"applied {pb.ActionKind.Name(record.action.kind)}")
    added = set(network.flows) - before
    # Every new rule is about this subscriber and nobody else.
    for rule in added:
        assert _touches_only(rule, record.subscriber.ip, record.location.mac,
                             record.location.port, record.location.datapath_id,
                             POLICY.quarantine_vlan), rule
    assert {r.text for r in record.rules} >= {r.text() for r in added}
    if planned is not None and added:
        assert planned.action.kind == record.action.kind
        assert {r.text for r in planned.rules} == {r.text for r in record.rules} or \
            record.HasField("expires_at")  # the backstop timeout is Apply's alone
    # Leave the network as it was for the next example.
    if record.state in (pb.STATE_ACTIVE, pb.STATE_PENDING):
        server.Lift(pb.LiftRequest(id=record.id, reason="property test"), timeout=10)
