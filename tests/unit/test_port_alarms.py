"""Port alarms (EVENT_KIND_PORT_OVER_BUDGET): reported by the controller from
its own threads, stored like every event, streamed by Watch over a real gRPC
socket, counted in the metrics, printed by enforcementctl, and an existing
database upgraded to hold them. The switch side is tests/doubles.py's recording
double; the store is real (an SQLite file, and PostgreSQL where the
database_url fixture runs one)."""
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from alembic import command

from enforcement.api.servicer import event_to_proto, serve
from enforcement.domain.model import PortAlarm
from enforcement.lifecycle.metrics import Metrics
from enforcement.v1 import enforcement_pb2 as pb
from tests.cases import spam
from tests.doubles import recording_service, served
from tests.events import event_columns, from_a_thread, migrate, once, watched

STORM = PortAlarm(dpid=2, port=3, budget="storm", rate_pps=2500.0, limit=1000.0,
                  subscriber_ip="10.0.0.1", detail="broadcast ARP flood")
LEARN = PortAlarm(dpid=1, port=1, budget="learn", rate_pps=412.5, limit=200.0,
                  subscriber_ip="10.0.0.3")
CROWDED = PortAlarm(dpid=1, port=4, budget="max_hosts", rate_pps=9, limit=8,
                    subscriber_ip=None, detail="9th MAC 00:00:00:00:00:99 refused")


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture
def service(url):
    return recording_service(url)


@pytest.fixture
def metrics(service):
    return Metrics(service)


@pytest.fixture
def stub(service):
    with served(service) as stub:
        yield stub


def assert_is_storm(event: pb.Event) -> None:
    assert event.kind == pb.EVENT_KIND_PORT_OVER_BUDGET
    assert (event.datapath_id, event.port, event.subscriber_ip) == (2, 3, "10.0.0.1")
    assert (event.budget, event.rate, event.limit) == ("storm", 2500.0, 1000.0)
    assert event.detail == "broadcast ARP flood"
    # Raised by the controller, not by a decision: no enforcement behind it.
    assert (event.enforcement_id, event.case_id, event.state) == ("", "", pb.STATE_UNSPECIFIED)


def test_an_alarm_comes_out_of_watch_with_every_field(service, stub, metrics):
    applied = stub.Apply(spam())
    before = time.time()
    from_a_thread(service.report_port_alarm, STORM)
    after = time.time()
    events = watched(stub)
    assert [e.kind for e in events] == [pb.EVENT_KIND_APPLIED, pb.EVENT_KIND_PORT_OVER_BUDGET]
    lifecycle, alarm = events
    assert_is_storm(alarm)
    assert alarm.sequence > lifecycle.sequence
    assert before <= alarm.at.ToNanoseconds() / 1e9 <= after
    # Enforcement events carry none of the port fields.
    assert lifecycle.enforcement_id == applied.id and lifecycle.state == pb.STATE_ACTIVE
    assert (lifecycle.datapath_id, lifecycle.port, lifecycle.budget) == (0, 0, "")
    assert watched(stub, after_sequence=lifecycle.sequence) == [alarm]


def test_the_metrics_count_alarms_by_budget(service, metrics):
    from_a_thread(service.report_port_alarm, STORM, STORM, LEARN)
    sample = metrics.registry.get_sample_value
    assert sample("enforcement_port_over_budget_total", {"budget": "storm"}) == 2
    assert sample("enforcement_port_over_budget_total", {"budget": "learn"}) == 1
    # Budgets not over yet are there at zero, not missing.
    assert sample("enforcement_port_over_budget_total", {"budget": "learning_ban"}) == 0
    assert sample("enforcement_events_total", {"kind": "port_over_budget"}) == 3


def test_watch_filters_alarms_by_subscriber(service, stub):
    stub.Apply(spam())  # 10.0.0.1, case C-1
    from_a_thread(service.report_port_alarm, STORM, LEARN, CROWDED)
    mine = watched(stub, subscriber_ip="10.0.0.1")
    assert [e.kind for e in mine] == [pb.EVENT_KIND_APPLIED, pb.EVENT_KIND_PORT_OVER_BUDGET]
    assert_is_storm(mine[1])
    assert [(e.budget, e.subscriber_ip) for e in watched(stub, subscriber_ip="10.0.0.3")] \
        == [("learn", "10.0.0.3")]
    # An alarm belongs to no case; one whose subscriber is unknown to no one.
    assert [e.kind for e in watched(stub, case_id="C-1")] == [pb.EVENT_KIND_APPLIED]
    everything = watched(stub)
    assert [e.budget for e in everything] == ["", "storm", "learn", "max_hosts"]
    crowded = everything[-1]
    assert (crowded.subscriber_ip, crowded.rate, crowded.limit) == ("", 9.0, 8.0)


def test_reporting_needs_no_lifecycle_lock_and_wakes_a_waiting_watch(service):
    seen = []
    # A poll far longer than the test: only the wake-up can deliver in time.
    watcher = threading.Thread(target=lambda: seen.append(next(service.watch(poll=60))),
                               daemon=True)
    watcher.start()
    time.sleep(0.3)  # the watcher has found nothing and waits
    started = time.monotonic()
    with service.ledger.lock:  # a batch of decisions holding the lifecycle
        from_a_thread(service.report_port_alarm, STORM)
    watcher.join(10)
    assert not watcher.is_alive() and time.monotonic() - started < 10
    assert [(e.kind, e.budget, e.datapath_id, e.port) for e in seen] == [
        ("port_over_budget", "storm", 2, 3)]


def test_alarms_reported_together_are_all_stored(service, metrics):
    threads = [threading.Thread(target=lambda i=i: [
        service.report_port_alarm(PortAlarm(i, port, "learn", 300.0, 200.0))
        for port in range(1, 11)]) for i in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    events = list(service.watch(still_wanted=once()))
    assert sorted((e.datapath_id, e.port) for e in events) == [
        (i, port) for i in range(1, 9) for port in range(1, 11)]
    assert len({e.sequence for e in events}) == 80
    assert metrics.registry.get_sample_value("enforcement_port_over_budget_total",
                                             {"budget": "learn"}) == 80


def test_an_alarm_survives_a_restart(database_url):
    first = recording_service(database_url)
    from_a_thread(first.report_port_alarm, STORM)
    first._store.close()
    again = recording_service(database_url)
    with served(again) as stub:
        events = watched(stub)
    assert len(events) == 1
    assert_is_storm(events[0])


def test_the_widest_datapath_id_is_stored_and_streamed_whole(database_url):
    service = recording_service(database_url)
    widest = PortAlarm((1 << 64) - 2, (1 << 32) - 1, "learn", 1.0, 0.5)
    from_a_thread(service.report_port_alarm, widest)
    (event,) = service.watch(still_wanted=once())
    assert (event.datapath_id, event.port) == ((1 << 64) - 2, (1 << 32) - 1)
    streamed = event_to_proto(event)
    assert (streamed.datapath_id, streamed.port) == ((1 << 64) - 2, (1 << 32) - 1)


PORT_COLUMNS = {"datapath_id", "port", "budget", "rate", "budget_limit"}


def test_a_database_at_0001_upgrades_and_keeps_its_events(database_url):
    engine = sa.create_engine(database_url)
    try:
        migrate(engine, command.upgrade, "0001")
        assert not event_columns(engine) & PORT_COLUMNS
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO events (at, kind, enforcement_id, case_id, subscriber_ip, "
                "state, detail) VALUES (1.5, 'lifted', 'enf-old', 'CASE-0', '10.0.0.1', "
                "'lifted', 'closed before alarms existed')"))
        service = recording_service(database_url)  # opening the store migrates to the head
        assert event_columns(engine) >= PORT_COLUMNS
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")
                                ).scalar_one() == "0006"
        from_a_thread(service.report_port_alarm, STORM)
        old, alarm = service.watch(subscriber_ip="10.0.0.1", still_wanted=once())
        assert (old.kind, old.enforcement_id, old.budget, old.datapath_id) == (
            "lifted", "enf-old", None, None)
        assert (alarm.kind, alarm.budget, alarm.rate, alarm.budget_limit) == (
            "port_over_budget", "storm", 2500.0, 1000.0)
        service._store.close()
        # And back: the alarms go with their columns, the rest stays.
        migrate(engine, command.downgrade, "0001")
        assert not event_columns(engine) & PORT_COLUMNS
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT kind FROM events")).scalars().all() == [
                "lifted"]
    finally:
        engine.dispose()


def test_enforcementctl_watch_prints_an_alarm_readably(service):
    from_a_thread(service.report_port_alarm, CROWDED, STORM)
    serving = serve("127.0.0.1:0", service)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "enforcement.clients.cli",
             "--server", f"127.0.0.1:{serving.port}",
             "watch", "--count", "2"], capture_output=True, text=True, timeout=60,
            check=False)
    finally:
        serving.stop(None)
    assert out.returncode == 0, out.stderr
    header, crowded, storm = out.stdout.splitlines()
    assert header.split()[:3] == ["TIME", "SEQ", "EVENT"]
    assert "port_over_budget" in storm
    assert "switch 0000000000000002 port 3" in storm and "subscriber 10.0.0.1" in storm
    assert "storm 2500 packets/s (limit 1000)" in storm and "broadcast ARP flood" in storm
    assert "subscriber unknown" in crowded and "max_hosts 9 hosts (limit 8)" in crowded


def test_an_alarm_must_name_a_known_budget():
    with pytest.raises(ValueError, match="budget"):
        PortAlarm(1, 1, "bandwidth", 1.0, 1.0)
    with pytest.raises(ValueError):
        PortAlarm(1, -1, "storm", 1.0, 1.0)
    with pytest.raises(ValueError):
        PortAlarm(1 << 64, 1, "storm", 1.0, 1.0)
    with pytest.raises(ValueError):
        PortAlarm(1, 1, "storm", 1.0, 1.0, subscriber_ip="10.0.0.300")
    unnamed = PortAlarm(0x2a, 7, "learning_ban", 12.0, 5.0, "10.0.0.9")
    assert unnamed.text() == ("switch 000000000000002a port 7 (10.0.0.9) over its "
                              "learning_ban budget: 12 new MACs/s, limit 5")


def test_report_takes_only_port_alarms(service):
    with pytest.raises(TypeError):
        service.report_port_alarm({"dpid": 1, "port": 1, "budget": "storm"})


def test_a_datapath_id_with_its_top_bit_set_is_stored_and_read_back(service):
    # Stored in a signed BIGINT as its two's complement, by the write path
    # that runs on the driver's own cursor as by SQLAlchemy's column type.
    high = PortAlarm(dpid=0xF000_0000_0000_00AB, port=7, budget="storm", rate_pps=1.0,
                     limit=0.5)
    service.report_port_alarm(high)
    events = list(service.watch(still_wanted=once()))
    assert [(e.datapath_id, e.port) for e in events] == [(0xF000_0000_0000_00AB, 7)]
