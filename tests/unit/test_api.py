"""The gRPC API over a real socket, with the switch side replaced by a
recording double (the Mininet tests cover the real switch)."""
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from enforcement.api.servicer import SERVICE_NAME, create_server
from enforcement.domain import policy
from enforcement.domain.model import HostView, SwitchView, TopologyView
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from tests.cases import spam
from tests.doubles import V6, DualStackNetwork, RecordingNetwork, served


@pytest.fixture
def network():
    return RecordingNetwork()


@pytest.fixture
def service(network, tmp_path):
    return EnforcementService(network, policy.load(), Store(f"sqlite:///{tmp_path}/state.db"))


@pytest.fixture
def channel(service):
    server, port = create_server("127.0.0.1:0", service)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    server.stop(None)


@pytest.fixture
def stub(channel):
    return pb_grpc.EnforcementServiceStub(channel)


def code_of(call):
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_apply_returns_the_installed_rule_and_lift_removes_it(stub, network):
    enforcement = stub.Apply(spam())
    assert enforcement.state == pb.STATE_ACTIVE
    assert enforcement.action.kind == pb.ACTION_KIND_BLOCK
    assert {r.datapath_id for r in enforcement.rules} == {1}
    rule = next(r for r in enforcement.rules if not r.actions)
    assert {m.field: m.value for m in rule.match}["tcp_dst"] == "25"
    assert "actions=drop" in rule.text
    assert len(network.flows) == 2  # TCP 25 over IPv4, and over IPv6
    assert enforcement.escalation.step == 1 and enforcement.escalation.of_steps == 3
    assert stub.Get(pb.GetRequest(id=enforcement.id)) == enforcement
    lifted = stub.Lift(pb.LiftRequest(id=enforcement.id, reason="case closed"))
    assert lifted.state == pb.STATE_LIFTED
    assert network.flows == set()
    assert stub.Lift(pb.LiftRequest(id=enforcement.id)).state == pb.STATE_LIFTED


def test_same_request_id_replays_and_different_content_is_refused(stub, network):
    first = stub.Apply(spam())
    assert stub.Apply(spam()) == first
    assert len(stub.List(pb.ListRequest()).enforcements) == 1
    code, details = code_of(lambda: stub.Apply(spam(ip="10.0.0.3")))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "request_id" in details


def test_a_repeat_climbs_the_ladder_and_says_why(stub, network):
    first = stub.Apply(spam("r1"))
    second = stub.Apply(spam("r2"))
    assert second.escalation.step == 2
    assert "2nd spam violation by 10.0.0.1" in second.escalation.reason
    assert first.id in second.escalation.reason
    assert "cut 10.0.0.1 off" in second.escalation.next_action
    assert second.action.kind == pb.ACTION_KIND_QUARANTINE
    third = stub.Apply(spam("r3"))
    assert third.action.kind == pb.ACTION_KIND_CUTOFF
    fourth = stub.Apply(spam("r4"))
    assert fourth.escalation.step == 3  # the last step repeats
    assert len({e.id for e in (first, second, third, fourth)}) == 4


@pytest.mark.parametrize("apply_request, expected, words", [
    (spam(ip="10.0.0.300"), grpc.StatusCode.INVALID_ARGUMENT, "subscriber.ip"),
    (pb.ApplyRequest(request_id="r", case_id="c", subscriber=pb.Subscriber(ip="10.0.0.1")),
     grpc.StatusCode.INVALID_ARGUMENT, "violation"),
    (pb.ApplyRequest(request_id="r", case_id="c", subscriber=pb.Subscriber(ip="10.0.0.1"),
                     violation=999), grpc.StatusCode.INVALID_ARGUMENT, "violation"),
    (spam(request_id=""), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    (spam(ip="10.0.0.99"), grpc.StatusCode.NOT_FOUND, "has not been seen"),
    (spam(mac="00:00:00:00:00:09"), grpc.StatusCode.FAILED_PRECONDITION, "MAC"),
    (spam(ip="10.0.0.250"), grpc.StatusCode.FAILED_PRECONDITION, "protected asset"),
])
def test_bad_requests_get_a_status_that_says_what_to_fix(stub, network, apply_request,
                                                          expected, words):
    code, details = code_of(lambda: stub.Apply(apply_request))
    assert code == expected and words in details
    assert network.flows == set()


def test_unknown_ids_are_not_found(stub):
    assert code_of(lambda: stub.Get(pb.GetRequest(id="enf-nope")))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.Lift(pb.LiftRequest(id="enf-nope")))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.Get(pb.GetRequest()))[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_disconnected_switch_leaves_the_decision_pending_until_it_connects(
        stub, network, service):
    network.connected.discard(1)
    pending = stub.Apply(spam())
    assert pending.state == pb.STATE_PENDING and "not connected" in pending.state_reason
    assert network.flows == set()
    network.connected.add(1)
    service.resync(1)
    assert stub.Get(pb.GetRequest(id=pending.id)).state == pb.STATE_ACTIVE
    assert len(network.flows) == 2


def test_switch_refusal_is_reported_as_failed_with_the_reason(stub, network):
    network.refuse = "OFPET_BAD_MATCH/OFPBMC_BAD_PREREQ on OFPFlowMod"
    enforcement = stub.Apply(spam())
    assert enforcement.state == pb.STATE_FAILED
    assert "OFPBMC_BAD_PREREQ" in enforcement.state_reason
    # a failed enforcement does not block a new attempt
    network.refuse = None
    assert stub.Apply(spam("r2")).state == pb.STATE_ACTIVE


def test_list_filters(stub):
    a = stub.Apply(spam("r1", ip="10.0.0.1"))
    b = stub.Apply(spam("r2", ip="10.0.0.3"))
    stub.Lift(pb.LiftRequest(id=a.id))
    everything = stub.List(pb.ListRequest()).enforcements
    assert [e.id for e in everything] == [a.id, b.id]
    active = stub.List(pb.ListRequest(states=[pb.STATE_ACTIVE])).enforcements
    assert [e.id for e in active] == [b.id]
    mine = stub.List(pb.ListRequest(subscriber_ip="10.0.0.1")).enforcements
    assert [e.id for e in mine] == [a.id]


def test_health_and_reflection_are_served(channel):
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "enforcement.v1.EnforcementService" in names


def test_plan_is_what_apply_then_installs_and_touches_nothing(stub, network):
    plan = stub.Plan(spam())
    assert network.flows == set()
    assert stub.List(pb.ListRequest()).enforcements == []
    applied = stub.Apply(spam())
    assert list(plan.rules) == list(applied.rules)
    assert plan.action == applied.action and plan.escalation == applied.escalation
    assert plan.location == applied.location


def test_a_request_may_choose_its_own_action_within_bounds(stub, network):
    request = spam()
    request.action.CopyFrom(pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT, rate=512,
                                             unit=pb.RATE_UNIT_KBPS, burst=64))
    enforcement = stub.Apply(request)
    assert enforcement.action.kind == pb.ACTION_KIND_RATE_LIMIT
    assert [(m.rate, m.burst, m.unit) for m in enforcement.meters] == [(512, 64, "kbps")]
    assert "chose its own action" in enforcement.escalation.reason
    too_fast = spam("r2")
    too_fast.action.CopyFrom(pb.ActionRequest(kind=pb.ACTION_KIND_RATE_LIMIT, rate=1,
                                              unit=pb.RATE_UNIT_KBPS))
    code, details = code_of(lambda: stub.Apply(too_fast))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "action.rate is 1" in details
    nonsense = spam("r3")
    nonsense.action.CopyFrom(pb.ActionRequest(kind=pb.ACTION_KIND_CUTOFF, ports=[25]))
    code, details = code_of(lambda: stub.Apply(nonsense))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "action.ports" in details


def test_wider_scope_is_refused_by_the_default_policy(stub, network):
    request = spam()
    request.scope = "10.0.0.0/29"
    code, details = code_of(lambda: stub.Apply(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "allow_wider_scope" in details
    request.scope = "10.0.0.1/29"
    assert code_of(lambda: stub.Apply(request))[0] == grpc.StatusCode.INVALID_ARGUMENT
    request.scope = "10.9.0.0/16"
    code, details = code_of(lambda: stub.Apply(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not contain" in details
    assert network.flows == set()


def test_list_pages_through_everything_in_order(stub):
    ids = [stub.Apply(spam(f"r{i}", ip=ip)).id
           for i, ip in enumerate(["10.0.0.1", "10.0.0.3"] * 3)]
    seen, token = [], ""
    while True:
        page = stub.List(pb.ListRequest(page_size=4, page_token=token))
        seen += [e.id for e in page.enforcements]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert code_of(lambda: stub.List(pb.ListRequest(page_token="x")))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_watch_streams_events_and_resumes(stub):
    first = stub.Apply(spam("r1"))
    stub.Lift(pb.LiftRequest(id=first.id))
    events = []
    with pytest.raises(grpc.RpcError) as err:
        for event in stub.Watch(pb.WatchRequest(), timeout=1.0):
            events.append(event)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [e.kind for e in events] == [pb.EVENT_KIND_APPLIED, pb.EVENT_KIND_LIFTED]
    assert events[1].state == pb.STATE_LIFTED and events[1].enforcement_id == first.id
    resumed = []
    with pytest.raises(grpc.RpcError):
        for event in stub.Watch(pb.WatchRequest(after_sequence=events[0].sequence),
                                timeout=1.0):
            resumed.append(event)
    assert [e.sequence for e in resumed] == [events[1].sequence]


def test_audit_names_the_caller_and_keeps_refusals(stub):
    applied = stub.Apply(spam("r1"))
    code_of(lambda: stub.Apply(spam("r2", ip="10.0.0.300")))
    entries = stub.ListAudit(pb.ListAuditRequest()).entries
    assert [(e.call, e.outcome) for e in entries] == [("Apply", "INVALID_ARGUMENT"),
                                                       ("Apply", "OK")]
    assert all(e.actor.startswith("unauthenticated 127.0.0.1:") for e in entries)
    assert entries[1].enforcement_id == applied.id and "tcp_dst=25" in entries[1].detail
    mine = stub.ListAudit(pb.ListAuditRequest(enforcement_id=applied.id)).entries
    assert len(mine) == 1


def test_duration_and_expiry_are_checked(stub):
    from google.protobuf import duration_pb2, timestamp_pb2
    request = spam()
    request.duration.CopyFrom(duration_pb2.Duration(seconds=3600))
    enforcement = stub.Apply(request)
    assert enforcement.HasField("expires_at")
    both = spam("r2")
    both.duration.CopyFrom(duration_pb2.Duration(seconds=60))
    both.expires_at.CopyFrom(timestamp_pb2.Timestamp(seconds=4_000_000_000))
    assert code_of(lambda: stub.Apply(both))[0] == grpc.StatusCode.INVALID_ARGUMENT
    negative = spam("r3")
    negative.duration.CopyFrom(duration_pb2.Duration(seconds=-5))
    assert code_of(lambda: stub.Apply(negative))[0] == grpc.StatusCode.INVALID_ARGUMENT
    past = spam("r4")
    past.expires_at.CopyFrom(timestamp_pb2.Timestamp(seconds=1))
    code, details = code_of(lambda: stub.Apply(past))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "past" in details


def test_a_batch_answers_each_decision_in_order_with_its_own_outcome(stub, network):
    """ApplyBatch over a real socket: valid decisions are installed, each
    refusal is the status Apply would have given (and audited), a repeated
    request id replays, and LiftBatch removes exactly what it names."""
    requests = [spam("b1"), spam("b2", ip="10.0.0.3"),
                spam("b3", ip="10.0.0.256"),          # not an address
                spam("b4", ip="10.0.0.250"),          # DNS: a protected asset
                spam("b5", ip="10.0.0.77"),           # never seen on a switch
                spam("b1")]                           # the first one again
    results = stub.ApplyBatch(pb.ApplyBatchRequest(requests=requests)).results
    codes = [grpc.StatusCode.OK.value[0] if r.HasField("enforcement") else r.code
             for r in results]
    assert codes == [0, 0, grpc.StatusCode.INVALID_ARGUMENT.value[0],
                     grpc.StatusCode.FAILED_PRECONDITION.value[0],
                     grpc.StatusCode.NOT_FOUND.value[0], 0]
    assert "protected asset" in results[3].message
    first, second = results[0].enforcement, results[1].enforcement
    assert first.state == second.state == pb.STATE_ACTIVE
    assert results[5].enforcement.id == first.id, "a repeated request id replays"
    assert {r.datapath_id for r in second.rules} == {2}
    assert len(network.flows) == 4  # each over both families
    refusals = [e for e in stub.ListAudit(pb.ListAuditRequest()).entries
                if e.outcome != "OK"]
    assert {e.outcome for e in refusals} >= {"INVALID_ARGUMENT", "FAILED_PRECONDITION",
                                             "NOT_FOUND"}

    lifted = stub.LiftBatch(pb.LiftBatchRequest(requests=[
        pb.LiftRequest(id=first.id, reason="done"),
        pb.LiftRequest(id="enf-0000000000000000")])).results
    assert lifted[0].enforcement.state == pb.STATE_LIFTED
    assert lifted[1].code == grpc.StatusCode.NOT_FOUND.value[0]
    assert {r.cookie for r in network.flows} == {second.rules[0].cookie}


def test_a_batch_too_big_or_empty_is_refused_whole(stub, network):
    code, details = code_of(lambda: stub.ApplyBatch(pb.ApplyBatchRequest(
        requests=[spam(f"x{n}") for n in range(257)])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 256" in details
    code, _ = code_of(lambda: stub.ApplyBatch(pb.ApplyBatchRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert network.flows == set()


# ---- dual stack ---------------------------------------------------------------------

@pytest.fixture
def dual_stub(tmp_path):
    service = EnforcementService(DualStackNetwork(), policy.load(),
                                 Store(f"sqlite:///{tmp_path}/dual.db"))
    with served(service) as stub:
        yield stub


def test_a_subscriber_named_by_ipv6_is_answered_with_all_its_addresses(dual_stub):
    by_v6 = dual_stub.Apply(spam("r1", ip=V6))
    assert by_v6.state == pb.STATE_ACTIVE and by_v6.subscriber.ip == V6
    assert {V6, "10.0.0.1", "2001:db8:1::/64"} <= set(by_v6.subscriber.addresses)
    assert dual_stub.Get(pb.GetRequest(id=by_v6.id)).subscriber.addresses == \
        by_v6.subscriber.addresses
    by_v4 = dual_stub.Apply(spam("r2", ip="10.0.0.1"))
    assert by_v4.subscriber.ip == "10.0.0.1" and V6 in by_v4.subscriber.addresses
    # Either address finds both: one subscriber, whichever address named it.
    for address in (V6, "10.0.0.1"):
        found = dual_stub.List(pb.ListRequest(subscriber_ip=address)).enforcements
        assert [e.id for e in found] == [by_v6.id, by_v4.id], address
    assert dual_stub.List(pb.ListRequest(subscriber_ip="10.0.0.3")).enforcements == []
    host = next(h for h in dual_stub.GetTopology(pb.GetTopologyRequest()).hosts
                if h.ip == "10.0.0.1")
    assert list(host.ipv6) == list(DualStackNetwork.IPV6)
    assert sorted(host.enforcement_ids) == sorted([by_v6.id, by_v4.id])


def test_a_decision_may_name_the_subscribers_inventory_account(dual_stub):
    by_account = dual_stub.Apply(pb.ApplyRequest(
        request_id="acct-1", case_id="C-1", subscriber=pb.Subscriber(account="ACME-1"),
        violation=pb.VIOLATION_SPAM, reason="bulk mail"))
    assert by_account.state == pb.STATE_ACTIVE and by_account.subscriber.ip == "10.0.0.1"
    assert V6 in by_account.subscriber.addresses
    code, details = code_of(lambda: dual_stub.Apply(pb.ApplyRequest(
        request_id="acct-2", case_id="C-1", violation=pb.VIOLATION_SPAM,
        subscriber=pb.Subscriber(account="NOBODY"))))
    assert code == grpc.StatusCode.NOT_FOUND and "NOBODY" in details
    code, details = code_of(lambda: dual_stub.Apply(pb.ApplyRequest(
        request_id="acct-3", case_id="C-1", violation=pb.VIOLATION_SPAM,
        subscriber=pb.Subscriber(account="ACME-1", ip="10.0.0.1"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not both" in details


def test_ipv6_filters_are_checked_like_addresses(dual_stub):
    code, details = code_of(lambda: dual_stub.List(pb.ListRequest(subscriber_ip="2001:db8::g")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "subscriber_ip" in details
    code, details = code_of(lambda: dual_stub.Apply(spam(ip="fe80::200:ff:fe00:1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "global IPv6" in details


class FixedService:
    """The answers a service would give, fixed: the conversion under test,
    not the decider's or the service's state."""

    def __init__(self, record, view, by_ip):
        self.record, self.view, self.by_ip = record, view, by_ip
        self.policy = policy.load()

    def get(self, enforcement_id):
        return self.record

    def topology(self):
        return self.view, self.by_ip

    def record_refusal(self, *args):
        pass


def test_addresses_and_ipv6_travel_in_the_answers(service):
    import dataclasses

    from enforcement.domain.model import Violation
    from enforcement.domain.validation import validate_apply
    record = service.apply(validate_apply(request_id="c1", case_id="C", ip="10.0.0.1",
                                          mac="", violation=Violation.SPAM, reason=""))
    record = dataclasses.replace(record, addresses=("10.0.0.1", V6, "2001:db8:1::/64"))
    subscriber = HostView("00:00:00:00:00:01", "10.0.0.1", 1, 1, account="ACME",
                          pinned=True, ipv6=("fe80::1", V6, "2001:db8:1::/64"))
    neighbour = HostView("00:00:00:00:00:03", "10.0.0.3", 2, 1, ipv6=("fe80::1",))
    v6_only = HostView("00:00:00:00:00:04", None, 2, 2, ipv6=("2001:db8:2::4",))
    by_ip = {"10.0.0.1": ["e-v4"], V6: ["e-v4", "e-v6"], "2001:db8:1::77": ["e-prefix"],
             "fe80::1": ["e-link-local"], "2001:db8:2::4": ["e-other"],
             "2001:db8:3::1": ["e-outside"]}
    view = TopologyView((SwitchView(1, ()),), (), (subscriber, neighbour, v6_only))
    server, port = create_server("127.0.0.1:0", FixedService(record, view, by_ip))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.EnforcementServiceStub(channel)
            answer = stub.Get(pb.GetRequest(id=record.id))
            hosts = stub.GetTopology(pb.GetTopologyRequest()).hosts
    finally:
        server.stop(None)
    assert answer.subscriber.ip == "10.0.0.1"
    assert list(answer.subscriber.addresses) == ["10.0.0.1", V6, "2001:db8:1::/64"]
    assert list(hosts[0].ipv6) == ["fe80::1", V6, "2001:db8:1::/64"]
    # Its IPv4 address, its IPv6 address, an address in its prefix; each id
    # once; a link-local address names no one host.
    assert list(hosts[0].enforcement_ids) == ["e-v4", "e-v6", "e-prefix"]
    assert (hosts[0].account, hosts[0].pinned) == ("ACME", True)
    assert list(hosts[1].enforcement_ids) == []
    assert hosts[2].ip == "" and list(hosts[2].enforcement_ids) == ["e-other"]


def test_a_request_with_addresses_is_read_by_its_ip_alone(stub):
    request = spam()
    request.subscriber.addresses.extend(["10.0.0.3", V6])
    answer = stub.Apply(request)
    assert answer.subscriber.ip == "10.0.0.1"
    assert "10.0.0.3" not in answer.subscriber.addresses
    assert {r.datapath_id for r in answer.rules} == {1}


def test_old_readers_still_read_the_new_messages():
    """Wire compatibility: the existing fields keep their numbers, and a
    reader built from the old Subscriber skips the new field."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    assert {f.name: f.number for f in pb.Subscriber.DESCRIPTOR.fields} == {
        "ip": 1, "mac": 2, "addresses": 3, "account": 4}
    assert {f.name: f.number for f in pb.Host.DESCRIPTOR.fields} == {
        "mac": 1, "ip": 2, "datapath_id": 3, "port": 4, "enforcement_ids": 5, "account": 6,
        "pinned": 7, "ipv6": 8}
    # Policy reloads (issue 16): new numbers only.
    assert pb.Enforcement.DESCRIPTOR.fields_by_name["policy_version"].number == 17
    assert pb.Topology.DESCRIPTOR.fields_by_name["policy_version"].number == 4
    assert [pb.EventKind.Value(k) for k in ("EVENT_KIND_PORT_OVER_BUDGET",
            "EVENT_KIND_POLICY_RELOADED", "EVENT_KIND_RELOAD_REFUSED")] == [9, 10, 11]
    old_file = descriptor_pb2.FileDescriptorProto(name="old.proto", package="old",
                                                  syntax="proto3")
    old_subscriber = old_file.message_type.add(name="Subscriber")
    for name, number in (("ip", 1), ("mac", 2)):
        old_subscriber.field.add(name=name, number=number,
                                 type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                                 label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(old_file)
    old = message_factory.GetMessageClass(pool.FindMessageTypeByName("old.Subscriber"))
    new = pb.Subscriber(ip=V6, mac="00:00:00:00:00:01", addresses=["10.0.0.1", V6])
    read = old.FromString(new.SerializeToString())
    assert (read.ip, read.mac) == (V6, "00:00:00:00:00:01")


@pytest.mark.parametrize("host_ipv6, owned", [
    (("2001:db8:1::5",), ["in-64", "in-56"]),                 # inside filed prefixes
    (("2001:db8:1::/64",), ["in-64", "in-56", "addr"]),       # nested both ways
    (("2001:db8:1::/48",), ["in-64", "in-56", "addr"]),
    (("2001:db8:1:80::/60",), ["in-56"]),                     # beside the /64
    (("2001:db8:2::5", "fe80::5"), []),                       # elsewhere; link-local
    (("not an address", "2001:db8:1::9"), ["addr", "in-64", "in-56"]),
])
def test_a_host_owns_what_any_of_its_ipv6_addresses_overlaps(host_ipv6, owned):
    from enforcement.domain.hostaddresses import AddressIndex
    index = AddressIndex({"2001:db8:1::/64": ["in-64"], "2001:db8:1::/56": ["in-56"],
                          "2001:db8:1::9": ["addr"], "fe80::5": ["link-local"],
                          "10.0.0.1": ["v4"]})
    assert sorted(index.of(None, host_ipv6)) == sorted(owned)
    assert index.of("10.0.0.1", host_ipv6)[0] == "v4"
