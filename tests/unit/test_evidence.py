"""Evidence: counters added up across resets (pure), and the book that reads
them every interval, stores them with a real database (SQLite and
PostgreSQL), answers Get and List over a real gRPC socket and streams
evidence events on Watch. The switches are a double here; the Mininet
tests (tests/e2e/test_evidence.py) count real packets on Open vSwitch."""
import contextlib
import dataclasses

import grpc

from enforcement.api.servicer import create_server
from enforcement.domain import evidence as ev
from enforcement.domain import policy
from enforcement.domain.evidence import (
    FlowSample,
    MeterSample,
    Owners,
    SwitchCounters,
    advance,
    fold,
)
from enforcement.lifecycle.evidence import EvidenceBook
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc
from tests.cases import decision
from tests.doubles import Clock, RecordingNetwork

T0 = 1_800_000_000.0
KEY = (1, 0, 3000, (("tcp_dst", 25),))
OTHER_KEY = (1, 0, 3000, (("tcp_dst", 465),))


# ---- one counter ----------------------------------------------------------------


def test_a_counter_read_again_adds_only_what_grew():
    count, reset = advance(None, (10, 600), T0 + 5)
    assert count.totals == (10, 600) and not reset and count.last_matched_at == T0 + 5
    count, reset = advance(count, (25, 1500), T0 + 15)
    assert count.totals == (25, 1500) and not reset and count.last_matched_at == T0 + 15
    still, _ = advance(count, (25, 1500), T0 + 25)
    assert still.totals == (25, 1500) and still.last_matched_at == T0 + 15  # not moved


def test_a_counter_found_smaller_was_reset_and_its_new_count_is_added():
    count, _ = advance(None, (100, 6000), T0 + 10)
    count, reset = advance(count, (7, 420), T0 + 20)
    assert reset and count.totals == (107, 6420)


def test_a_counter_that_kept_its_count_is_not_counted_again():
    # Open vSwitch keeps a flow's counters when the controller adds the same
    # flow again in place (a restart's reconcile), its duration starting
    # over: the reading goes on from where it was, whatever the age says.
    count, _ = advance(None, (50, 2700), T0 + 10)
    count, reset = advance(count, (50, 2700), T0 + 40)
    assert not reset and count.totals == (50, 2700)
    count, _ = advance(count, (80, 4320), T0 + 50)
    assert count.totals == (80, 4320)


# ---- a read of a switch -----------------------------------------------------------


def owners(**by_cookie):
    return Owners({int(c[1:]): i for c, i in by_cookie.items()}, {(1, 7): "enf-m"})


def flow(cookie, packets, key=KEY, verdict=ev.DROPPED):
    return FlowSample(1, key, cookie, packets, packets * 60, verdict)


def test_a_read_folds_into_the_owner_of_each_cookie_and_ignores_the_rest():
    read = SwitchCounters(1, (flow(5, 10), flow(5, 2, OTHER_KEY),
                              flow(9, 4)), ())
    changed = fold({}, read, owners(c5="enf-a"), T0)
    assert set(changed) == {"enf-a"}
    a = changed["enf-a"]
    assert a.total(ev.DROPPED) == (12, 720) and a.unreported and a.last_matched_at == T0
    assert sorted(r.packets for r in a.rules) == [2, 10]
    assert "tcp_dst=25" in a.rules[0].rule and "cookie" not in a.rules[0].rule


def test_an_idle_read_changes_nothing():
    first = fold({}, SwitchCounters(1, (flow(5, 10),), ()), owners(c5="enf-a"), T0)
    again = fold(first, SwitchCounters(1, (flow(5, 10),), ()), owners(c5="enf-a"),
                 T0 + 10)
    assert again == {}


def test_a_rule_re_added_between_reads_is_added_up_across_the_reset():
    book = fold({}, SwitchCounters(1, (flow(5, 40),), ()), owners(c5="enf-a"), T0)
    # the switch reconnected empty and got the rule back 5 s ago: 12 since
    book.update(fold(book, SwitchCounters(1, (flow(5, 12),), ()), owners(c5="enf-a"),
                     T0 + 10))
    a = book["enf-a"]
    assert a.total(ev.DROPPED)[0] == 52 and a.resets == 1


def test_a_meter_reports_what_it_let_through_and_what_it_dropped():
    meter = MeterSample(1, 7, packets=300, bytes=30000, dropped_packets=260,
                        dropped_bytes=26000)
    changed = fold({}, SwitchCounters(1, (), (meter,)), owners(), T0)
    (counted,) = changed["enf-m"].meters
    assert counted.passed == (40, 4000) and counted.dropped == (260, 26000)
    grown = ev.moved_between(None, changed["enf-m"])
    assert grown == {"meter_passed": (40, 4000), "meter_dropped": (260, 26000)}


def test_the_stored_form_round_trips_and_a_restart_counts_nothing_twice():
    book = fold({}, SwitchCounters(1, (flow(5, 40),), ()), owners(c5="enf-a"), T0)
    stored = ev.from_dict(ev.to_dict(book["enf-a"]))
    assert stored == book["enf-a"]
    # the controller restarted; the switch kept its flow, which counted 5 more
    after = fold({"enf-a": stored}, SwitchCounters(1, (flow(5, 45),), ()),
                 owners(c5="enf-a"), T0 + 60)
    assert after["enf-a"].total(ev.DROPPED)[0] == 45


# ---- the book, with a real store and a real gRPC socket -----------------------------


class CountingNetwork(RecordingNetwork):
    """The recording double, whose switches report the counters a test sets."""

    def __init__(self):
        super().__init__()
        self.counters: dict[int, list] = {}  # dpid -> [(rule, packets)]
        self.reads = []

    def read_counters(self, dpid, flows, meters, timeout, full=False):
        self.reads.append((dpid, flows, full))
        return SwitchCounters(dpid, tuple(
            FlowSample(r.dpid, r.key, r.cookie, packets, packets * 54, ev.DROPPED)
            for r, packets in self.counters.get(dpid, ())), ())


@dataclasses.dataclass
class Setup:
    network: CountingNetwork
    service: EnforcementService
    book: EvidenceBook
    clock: Clock
    store: Store


def started(url, clock=None, network=None) -> Setup:
    clock = clock or Clock()
    network = network or CountingNetwork()
    store = Store(url)
    service = EnforcementService(network, policy.load(), store, clock=clock)
    book = EvidenceBook(network, service.ledger, store, leading=service.leading,
                        interval=10.0, clock=clock)
    return Setup(network, service, book, clock, store)


def count(setup, record, packets):
    """The switch reports packets on every rule of record."""
    setup.network.counters[1] = [(r, packets) for r in record.rules if r.dpid == 1]


def evidence_events(setup):
    return [e for e in setup.store.events_after(0) if e.kind == "evidence"]


def test_the_book_reports_moved_enforcements_at_most_once_per_interval(database_url):
    s = started(database_url)
    moving = s.service.apply(decision("r1", "10.0.0.1"))
    idle = s.service.apply(decision("r2", "10.0.0.3"))
    count(s, moving, 10)
    s.book.run_round()
    # one read per switch holding enforcement state, never one per enforcement;
    # the first since the book loaded its memory reads every part
    assert sorted(s.network.reads) == [(1, 2, True), (2, 2, True)]
    (first,) = evidence_events(s)
    assert first.enforcement_id == moving.id and first.evidence
    s.clock.now += 4
    count(s, moving, 30)
    s.book.run_round()
    assert len(evidence_events(s)) == 1  # moved again, but within the interval
    assert [full for _, _, full in s.network.reads[2:]] == [False, False]
    s.clock.now += 6
    s.book.run_round()  # nothing new counted, yet the move above is now reported
    events = evidence_events(s)
    assert [e.enforcement_id for e in events] == [moving.id, moving.id]
    assert idle.id not in {e.enforcement_id for e in events}
    s.clock.now += 10
    s.book.run_round()  # stood still: no event
    assert len(evidence_events(s)) == 2
    with served_with(s) as stub:
        got = stub.Get(pb.GetRequest(id=moving.id))
        assert got.evidence.dropped_packets == 30 * len(moving.rules)
        assert got.evidence.HasField("last_matched_at")
        assert not stub.Get(pb.GetRequest(id=idle.id)).HasField("evidence")
        listed = {e.id: e for e in stub.List(pb.ListRequest()).enforcements}
        assert listed[moving.id].evidence == got.evidence
        (streamed,) = [e for e in stub.Watch(pb.WatchRequest(after_sequence=0))
                       if e.kind == pb.EVENT_KIND_EVIDENCE][:1] or [None]
        assert streamed is not None and streamed.evidence.dropped_packets == 10 * len(
            moving.rules)


def served_with(setup):
    """The service's gRPC API, with the book's evidence, on a real socket."""
    @contextlib.contextmanager
    def serving():
        server, port = create_server("127.0.0.1:0", setup.service, evidence=setup.book)
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.EnforcementServiceStub(channel)
                yield _Finite(stub)
        finally:
            server.stop(None)
    return serving()


class _Finite:
    """A stub whose Watch ends once the stored events are out."""

    def __init__(self, stub):
        self._stub = stub

    def __getattr__(self, name):
        return getattr(self._stub, name)

    def Watch(self, request):
        return list(_until_idle(self._stub.Watch(request, timeout=2)))


def _until_idle(stream):
    try:
        yield from stream
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise


def test_evidence_survives_a_restart_and_a_reset_after_it(database_url):
    s = started(database_url)
    record = s.service.apply(decision("r1", "10.0.0.1"))
    count(s, record, 40)
    s.book.run_round()
    rules = len([r for r in record.rules if r.dpid == 1])
    # a restart: a new service and book on the same database; the switch
    # kept its flows, which counted 5 more meanwhile
    again = started(database_url, clock=s.clock)
    s.clock.now += 30
    count(again, record, 45)
    again.book.run_round()
    (found,) = again.book.of([record]).values()
    assert found.total(ev.DROPPED)[0] == 45 * rules
    # then the switch reconnected empty and got its flows back: 3 since
    s.clock.now += 30
    count(again, record, 3)
    again.book.run_round()
    (found,) = again.book.of([record]).values()
    assert found.total(ev.DROPPED)[0] == 48 * rules and found.resets == rules
    # a lifted one is answered from the store
    lifted = again.service.lift(record.id, "over")
    assert again.book.of([lifted])[record.id].total(ev.DROPPED)[0] == 48 * rules


def test_a_follower_answers_from_the_store(database_url):
    s = started(database_url)
    record = s.service.apply(decision("r1", "10.0.0.1"))
    count(s, record, 40)
    s.book.run_round()
    follower = EvidenceBook(s.network, s.service.ledger, s.store, leading=lambda: False)
    assert follower.run_round() is None
    assert follower.of([record])[record.id] == dataclasses.replace(
        s.book.of([record])[record.id], read_at=follower.of([record])[record.id].read_at)


# ---- the reader: only parts whose aggregate moved are read ---------------------


class _Stats:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_the_reader_reads_the_flows_of_a_part_only_when_its_aggregate_moved():
    from controller.openflow.counters import CounterReader
    from enforcement.domain import pipeline
    asked = []
    packets = {"now": 5}

    def transact(dpid, requests, timeout):
        answers = {}
        for request in requests:
            request.xid = len(asked) + 1
            asked.append(type(request).__name__)
            if type(request).__name__ == "OFPAggregateStatsRequest":
                answers[request.xid] = [_Stats(flow_count=1, packet_count=packets["now"],
                                               byte_count=packets["now"] * 54)]
            else:
                answers[request.xid] = [_Stats(
                    table_id=0, priority=3000, cookie=pipeline.enforcement_cookie(1),
                    match=_Stats(items=lambda: [("tcp_dst", 25)]), instructions=[],
                    packet_count=packets["now"], byte_count=packets["now"] * 54)]
        return answers
    reader = CounterReader(transact)
    assert len(reader.read(1, 1, False, 1.0).flows) == 1
    assert reader.read(1, 1, False, 1.0).flows == ()       # nothing moved: not read
    assert len(reader.read(1, 1, False, 1.0, full=True).flows) == 1
    packets["now"] = 9
    (moved,) = reader.read(1, 1, False, 1.0).flows
    assert moved.packets == 9 and moved.verdict == ev.DROPPED
    reader.forget(1)                                           # reconnected: all again
    assert len(reader.read(1, 1, False, 1.0).flows) == 1
    assert asked.count("OFPFlowStatsRequest") == 4
    # 300 flows: four parts of up to 128, their aggregates asked in one
    # transaction, each part's flows (all moved: never read before) one by one
    asked.clear()
    reader.read(2, 300, False, 1.0)
    assert asked == ["OFPAggregateStatsRequest"] * 4 + ["OFPFlowStatsRequest"] * 4


def test_the_metrics_get_aggregates_by_action_and_verdict_never_by_enforcement(tmp_path):
    from prometheus_client import generate_latest

    from enforcement.lifecycle.metrics import Metrics
    s = started(f"sqlite:///{tmp_path}/state.db")
    metrics = Metrics()
    s.book.listeners.append(metrics.on_evidence)
    record = s.service.apply(decision("r1", "10.0.0.1"))
    count(s, record, 7)
    s.book.run_round()
    text = generate_latest(metrics.registry).decode()
    rules = len([r for r in record.rules if r.dpid == 1])
    assert (f'enforcement_evidence_packets_total{{action="block",verdict="dropped"}} '
            f'{float(7 * rules)}') in text
    assert 'enforcement_evidence_switch_reads_total{outcome="ok"} 1.0' in text
    assert record.id not in text and "10.0.0.1" not in text


# ---- the last hour -----------------------------------------------------------------


def dropped(e, packets):
    return dataclasses.replace(e, rules=(ev.RuleCount(1, "r", ev.DROPPED, ev.Count(
        (packets, packets * 54), (packets, packets * 54))),))


def test_the_last_hour_is_what_the_totals_grew_by_since_an_hour_ago_never_more():
    e = ev.noted(dropped(ev.Evidence("enf-a", T0), 0), T0)
    e = ev.noted(dropped(e, 100), T0 + 600)            # 100 by T0+10 min
    e = ev.noted(dropped(e, 130), T0 + 700)            # within 5 min: joins that entry
    assert [at for at, _ in e.history] == [T0, T0 + 600]
    e = ev.noted(dropped(e, 180), T0 + 4000)
    # An hour before T0+4100 is T0+500: 0 then, so all 180 in the last hour.
    assert ev.last_hour(e, T0 + 4100)[:2] == (180, 180 * 54)
    # An hour before T0+4300 is T0+700: 130 then (the joined entry says so
    # from T0+600: never more than was done), so 50.
    assert ev.last_hour(e, T0 + 4300)[:2] == (50, 50 * 54)
    e = ev.noted(dropped(e, 200), T0 + 9000)
    assert [at for at, _ in e.history] == [T0 + 4000, T0 + 9000]  # the hour's base kept
    assert ev.last_hour(e, T0 + 9100)[:2] == (20, 20 * 54)
    assert ev.from_dict(ev.to_dict(e)) == e
    # counted for over an hour with no history kept: not known
    assert ev.last_hour(dropped(ev.Evidence("enf-b", T0), 5), T0 + 7200) is None


def test_get_says_what_it_did_in_the_last_hour(tmp_path):
    s = started(f"sqlite:///{tmp_path}/state.db")
    record = s.service.apply(decision("r1", "10.0.0.1"))
    count(s, record, 7)
    s.book.run_round()
    with served_with(s) as stub:
        got = stub.Get(pb.GetRequest(id=record.id)).evidence
    rules = len([r for r in record.rules if r.dpid == 1])
    assert got.last_hour.dropped_packets == 7 * rules == got.dropped_packets


def test_a_write_the_store_refused_is_made_at_the_next_round(tmp_path, monkeypatch):
    s = started(f"sqlite:///{tmp_path}/state.db")
    record = s.service.apply(decision("r1", "10.0.0.1"))
    count(s, record, 9)
    real_write = s.store.write

    def refused(*args, **kwargs):
        if kwargs.get("evidence"):
            raise OSError("disk full")
        return real_write(*args, **kwargs)
    monkeypatch.setattr(s.store, "write", refused)
    assert s.book.run_round().events == 0
    assert evidence_events(s) == [] and s.store.load_evidence() == {}
    monkeypatch.setattr(s.store, "write", real_write)
    s.clock.now += 10
    assert s.book.run_round().events == 1          # nothing new counted, yet written
    (stored,) = s.store.load_evidence().values()
    rules = len([r for r in record.rules if r.dpid == 1])
    assert stored.total(ev.DROPPED)[0] == 9 * rules and not stored.unreported


# ---- proof probes: counted by the rules, never evidence ----------------------------


def test_probes_a_rule_counted_are_left_out_and_are_no_match():
    count, _ = advance(None, (10, 540), T0)
    count, _ = advance(count, (11, 600), T0 + 10, probes=(1, 60))   # one probe alone
    assert count.net == (10, 540) and count.last_matched_at == T0
    count, _ = advance(count, (15, 822), T0 + 20, probes=(1, 60))   # a probe and 3 packets
    assert count.net == (13, 702) and count.last_matched_at == T0 + 20
    book = fold({}, SwitchCounters(1, (flow(5, 4),), ()), owners(c5="enf-a"), T0)
    probed = dataclasses.replace(flow(5, 5), probes=(1, 60))
    again = fold(book, SwitchCounters(1, (probed,), ()), owners(c5="enf-a"), T0 + 10)
    assert again["enf-a"].last_matched_at == T0   # the probe is no match
    assert again["enf-a"].total(ev.DROPPED) == (4, 240)
    meter = MeterSample(1, 7, packets=12, bytes=1200, dropped_packets=2, dropped_bytes=200,
                        probes=(2, 120))
    (counted,) = fold({}, SwitchCounters(1, (), (meter,)), owners(), T0)["enf-m"].meters
    assert counted.passed == (8, 880) and counted.dropped == (2, 200)


def test_the_reader_hands_on_the_probes_noted_at_its_next_read_of_the_switch():
    from controller.openflow.counters import CounterReader
    from enforcement.domain import pipeline
    from enforcement.domain.flows import FlowRule
    rule = FlowRule(1, 0, 3000, pipeline.enforcement_cookie(1), (("tcp_dst", 25),))
    switch = {"packets": 5}
    asked = []

    def transact(dpid, requests, timeout):
        answers = {}
        for request in requests:
            request.xid = len(asked) + 1
            asked.append(type(request).__name__)
            packets = switch["packets"]
            answers[request.xid] = [
                _Stats(flow_count=1, packet_count=packets, byte_count=packets * 60)
                if type(request).__name__ == "OFPAggregateStatsRequest" else
                _Stats(table_id=0, priority=3000, cookie=rule.cookie, instructions=[],
                       match=_Stats(items=lambda: [("tcp_dst", 25)]),
                       packet_count=packets, byte_count=packets * 60)]
        return answers
    reader = CounterReader(transact)
    reader.read(1, 1, False, 1.0)
    switch["packets"] = 6                      # a proof's probe, noted
    reader.probes.counted(1, rule, 60)
    (sample,) = reader.read(1, 1, False, 1.0).flows   # handed on at once
    assert (sample.packets, sample.probes) == (6, (1, 60))
    assert reader.read(1, 1, False, 1.0).flows == ()  # and once: nothing moved since
    switch["packets"] = 9                      # then 3 of the subscriber's
    (sample,) = reader.read(1, 1, False, 1.0).flows
    assert (sample.packets, sample.probes) == (9, (0, 0))
