"""Refused identity claims (EVENT_KIND_IDENTITY_REFUSED): reported by the
controller from its own threads, throttled, stored like every event, streamed
by Watch over a real gRPC socket, counted in the metrics (scraped over
HTTP), printed by enforcementctl, and an existing database upgraded to hold
them. The switch side is tests/doubles.py's recording double; the store is real
(an SQLite file, and PostgreSQL where the database_url fixture runs one)."""
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import sqlalchemy as sa
from alembic import command
from prometheus_client.parser import text_string_to_metric_families

from enforcement.api.servicer import serve
from enforcement.cluster.leadership import Leadership
from enforcement.domain import policy
from enforcement.domain.model import IdentityEvent, PortAlarm
from enforcement.lifecycle.identity import CLAIMS_PER_PORT
from enforcement.lifecycle.metrics import Metrics
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from enforcement.v1 import enforcement_pb2 as pb
from tests.cases import spam
from tests.doubles import RecordingNetwork, recording_service, served
from tests.events import event_columns, from_a_thread, migrate, once, stands_for, watched

OWNER = "00:00:00:00:00:01 at switch 0000000000000001 port 1"
# 10.0.0.3 (switch 2 port 1) claims 10.0.0.1's address.
CLAIM = IdentityEvent("address_claim", dpid=2, port=1, mac="00:00:00:00:00:03",
                      claimed="10.0.0.1", owner=OWNER, subscriber_ip="10.0.0.3",
                      detail="gratuitous ARP reply")
# Forged LLDP from a port whose subscriber is unknown, on a switch whose id
# has its top bit set (a signed BIGINT column holds it as two's complement).
LLDP = IdentityEvent("lldp_forged", dpid=0xF000_0000_0000_00AB, port=4,
                     mac="00:00:00:00:00:99", claimed="switch 0000000000000003 port 2")
IDENTITY_COLUMNS = {"identity", "claimant_mac", "claimed", "owner"}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture
def service(url):
    service = recording_service(url)
    yield service
    service.identity_reports.stop()


@pytest.fixture
def stub(service):
    with served(service) as stub:
        yield stub


def reported(service, *events) -> None:
    """Reported from a controller thread, then stored (the writer is asynchronous)."""
    from_a_thread(service.report_identity_event, *events)
    assert service.identity_reports.flush()


def assert_is_claim(event: pb.Event) -> None:
    assert event.kind == pb.EVENT_KIND_IDENTITY_REFUSED
    assert (event.datapath_id, event.port, event.subscriber_ip) == (2, 1, "10.0.0.3")
    assert (event.identity, event.claimant_mac, event.claimed, event.owner) == (
        "address_claim", "00:00:00:00:00:03", "10.0.0.1", OWNER)
    assert event.detail == "gratuitous ARP reply"
    # Raised by the controller, not by a decision: no enforcement behind it.
    assert (event.enforcement_id, event.case_id, event.state) == ("", "", pb.STATE_UNSPECIFIED)
    assert (event.budget, event.rate, event.limit) == ("", 0.0, 0.0)


def test_a_refused_claim_comes_out_of_watch_with_every_field(service, stub):
    applied = stub.Apply(spam())
    before = time.time()
    reported(service, CLAIM)
    after = time.time()
    events = watched(stub)
    assert [e.kind for e in events] == [pb.EVENT_KIND_APPLIED, pb.EVENT_KIND_IDENTITY_REFUSED]
    lifecycle, claim = events
    assert_is_claim(claim)
    assert claim.sequence > lifecycle.sequence
    assert before <= claim.at.ToNanoseconds() / 1e9 <= after
    # Enforcement events carry none of the claim's fields.
    assert lifecycle.enforcement_id == applied.id
    assert (lifecycle.identity, lifecycle.claimant_mac, lifecycle.claimed, lifecycle.owner,
            lifecycle.datapath_id) == ("", "", "", "", 0)
    assert watched(stub, after_sequence=lifecycle.sequence) == [claim]


def test_watch_filters_refused_claims_by_subscriber(service, stub):
    stub.Apply(spam())  # 10.0.0.1, case C-1
    reported(service, CLAIM, LLDP)
    # The claimant's.
    (mine,) = watched(stub, subscriber_ip="10.0.0.3")
    assert_is_claim(mine)
    # The subscriber whose address was claimed sees the claim too.
    assert [e.kind for e in watched(stub, subscriber_ip="10.0.0.1")] == [
        pb.EVENT_KIND_APPLIED, pb.EVENT_KIND_IDENTITY_REFUSED]
    assert watched(stub, subscriber_ip="10.0.0.9") == []
    # A claim belongs to no case.
    assert [e.kind for e in watched(stub, case_id="C-1")] == [pb.EVENT_KIND_APPLIED]
    # An address claimed in any spelling is found by the filter's.
    spelled = IdentityEvent("address_claim", 2, 1, "00:00:00:00:00:03", "2001:DB8:0:0::1")
    reported(service, spelled)
    (found,) = watched(stub, subscriber_ip="2001:db8::1")
    assert found.claimed == "2001:db8::1"
    lldp = watched(stub)[-2]
    assert (lldp.identity, lldp.datapath_id, lldp.port, lldp.subscriber_ip, lldp.owner) == (
        "lldp_forged", 0xF000_0000_0000_00AB, 4, "", "")
    assert lldp.detail == LLDP.text()


def test_a_refused_claim_survives_a_restart(database_url):
    first = recording_service(database_url)
    reported(first, CLAIM, LLDP)
    first.identity_reports.stop()
    first._store.close()
    again = recording_service(database_url)
    with served(again) as stub:
        events = watched(stub)
    assert len(events) == 2
    assert_is_claim(events[0])
    assert (events[1].identity, events[1].datapath_id) == ("lldp_forged",
                                                           0xF000_0000_0000_00AB)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_metrics_count_every_refusal_by_kind(service):
    metrics = Metrics(service)
    server, port = metrics.serve("127.0.0.1", 0)
    try:
        reported(service, CLAIM, CLAIM, CLAIM, LLDP)
        seen = scrape(port)
    finally:
        server.shutdown()
    refused = {kind: seen[("enforcement_identity_refused_total", (("kind", kind),))]
               for kind in ("address_claim", "mac_claim", "lldp_forged", "dhcp_untrusted")}
    # Every refusal, throttled or not; kinds not seen yet are there at zero.
    assert refused == {"address_claim": 3, "mac_claim": 0, "lldp_forged": 1,
                       "dhcp_untrusted": 0}
    # Stored: one event per claim within the interval.
    assert seen[("enforcement_events_total", (("kind", "identity_refused"),))] == 2
    # Never a series per subscriber, switch or port.
    assert all(set(dict(labels)) <= {"kind"} for name, labels in seen
               if name.startswith("enforcement_identity_refused"))


def test_a_flood_of_one_claim_is_counted_whole_and_stored_bounded(service):
    metrics = Metrics(service)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [service.report_identity_event(CLAIM)
                                                for _ in range(2500)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    took = time.monotonic() - started
    assert metrics.registry.get_sample_value("enforcement_identity_refused_total",
                                             {"kind": "address_claim"}) == 10_000
    assert service.identity_reports.flush()
    stored = list(service.watch(still_wanted=once()))
    # Within one interval (the flood took far less): one stored event.
    assert took < 5 and len(stored) == 1
    # A clean stop stores the rest as one summary, and nothing is lost.
    service.identity_reports.stop()
    stored = list(service.watch(still_wanted=once()))
    assert len(stored) == 2 and "; and 9,998 more since " in stored[1].detail
    assert sum(stands_for(e.detail) for e in stored) == 10_000


def test_a_port_varying_its_claims_stores_a_bounded_number(service):
    metrics = Metrics(service)
    forged = [IdentityEvent("lldp_forged", 1, 4, "00:00:00:00:00:99",
                            f"switch {n:016x} port {n % 48 + 1}") for n in range(2000)]
    reported(service, *forged)
    stored = list(service.watch(still_wanted=once()))
    assert len(stored) == CLAIMS_PER_PORT + 1
    assert metrics.registry.get_sample_value("enforcement_identity_refused_total",
                                             {"kind": "lldp_forged"}) == 2000
    service.identity_reports.stop()
    rest = list(service.watch(after=stored[-1].sequence, still_wanted=once()))
    assert [e.detail.split("; and ")[1].split(" since")[0] for e in rest] == [
        f"{2000 - CLAIMS_PER_PORT - 2:,} more of other claims from this port"]


def test_reporting_never_waits_for_the_database_nor_the_lifecycle(service, tmp_path):
    seen = []
    # A poll far longer than the test: only the wake-up can deliver in time.
    watcher = threading.Thread(target=lambda: seen.append(next(service.watch(poll=60))),
                               daemon=True)
    watcher.start()
    time.sleep(0.3)  # the watcher has found nothing and waits
    # Another writer holds the database (SQLite's write lock), and a batch
    # of decisions holds the lifecycle.
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with service.ledger.lock:
            started = time.monotonic()
            from_a_thread(service.report_identity_event, CLAIM, LLDP)
            assert time.monotonic() - started < 0.5
        time.sleep(0.3)
        assert seen == []  # not stored yet: the database is held
    finally:
        other.execute("COMMIT")
        other.close()
    watcher.join(10)
    assert not watcher.is_alive()
    assert [(e.kind, e.identity) for e in seen] == [("identity_refused", "address_claim")]


def test_a_follower_reports_nothing(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/state.db")
    # Never started: it does not lead.
    follower = EnforcementService(RecordingNetwork(), policy.load(), store,
                                  leadership=Leadership(store, "b", "", lease=5.0))
    metrics = Metrics(follower)
    reported(follower, CLAIM)
    assert list(follower.watch(still_wanted=once())) == []
    assert metrics.registry.get_sample_value("enforcement_identity_refused_total",
                                             {"kind": "address_claim"}) == 0


def test_report_takes_only_identity_events(service):
    with pytest.raises(TypeError):
        service.report_identity_event({"kind": "address_claim", "claimed": "10.0.0.1"})


def test_a_database_at_0003_upgrades_and_keeps_its_events(database_url):
    engine = sa.create_engine(database_url)
    try:
        migrate(engine, command.upgrade, "0003")
        assert not event_columns(engine) & IDENTITY_COLUMNS
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO events (at, kind, enforcement_id, case_id, subscriber_ip, "
                "state, detail, datapath_id, port, budget, rate, budget_limit) VALUES "
                "(1.5, 'port_over_budget', '', '', '10.0.0.3', '', 'storm', 2, 1, 'storm', "
                "2500.0, 1000.0)"))
        service = recording_service(database_url)  # opening the store migrates to the head
        assert event_columns(engine) >= IDENTITY_COLUMNS
        reported(service, CLAIM)
        service.report_port_alarm(PortAlarm(2, 1, "learn", 300.0, 200.0, "10.0.0.3"))
        old, claim, alarm = service.watch(subscriber_ip="10.0.0.3", still_wanted=once())
        assert (old.kind, old.budget, old.identity, old.claimed) == (
            "port_over_budget", "storm", None, None)
        assert (claim.identity, claim.claimant_mac, claim.claimed, claim.owner) == (
            "address_claim", "00:00:00:00:00:03", "10.0.0.1", OWNER)
        assert (alarm.budget, alarm.identity) == ("learn", None)
        service.identity_reports.stop()
        service._store.close()
        # And back: the claims go with their columns, the rest stays.
        migrate(engine, command.downgrade, "0003")
        assert not event_columns(engine) & IDENTITY_COLUMNS
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT kind FROM events ORDER BY sequence")
                                ).scalars().all() == ["port_over_budget", "port_over_budget"]
    finally:
        engine.dispose()


def test_enforcementctl_watch_prints_a_refused_claim_readably(service):
    reported(service, CLAIM, LLDP, LLDP, LLDP)
    service.identity_reports.stop()  # the two LLDP frames held back: one summary
    serving = serve("127.0.0.1:0", service)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "enforcement.clients.cli",
             "--server", f"127.0.0.1:{serving.port}",
             "watch", "--count", "3"], capture_output=True, text=True, timeout=60,
            check=False)
    finally:
        serving.stop(None)
    assert out.returncode == 0, out.stderr
    header, claim, lldp, summary = out.stdout.splitlines()
    assert header.split()[:3] == ["TIME", "SEQ", "EVENT"]
    assert "identity_refused" in claim
    assert claim.split("identity_refused", 1)[1].strip() == (
        "switch 0000000000000002 port 1  subscriber 10.0.0.3  00:00:00:00:00:03 claimed "
        "an address another subscriber holds: 10.0.0.1 (held by 00:00:00:00:00:01 at "
        "switch 0000000000000001 port 1), refused  gratuitous ARP reply")
    # No detail of its own: the sentence is not printed twice.
    assert lldp.split("identity_refused", 1)[1].strip() == (
        "switch f0000000000000ab port 4  subscriber unknown  00:00:00:00:00:99 sent an "
        "LLDP frame that failed authentication: switch 0000000000000003 port 2, refused")
    assert re.search(r", refused  and 1 more since \d\d:\d\d:\d\d UTC$", summary), summary


def test_the_wire_numbers_of_identity_events():
    assert pb.EventKind.Value("EVENT_KIND_IDENTITY_REFUSED") == 12
    assert {name: pb.Event.DESCRIPTOR.fields_by_name[name].number
            for name in ("identity", "claimant_mac", "claimed", "owner")} == {
        "identity": 14, "claimant_mac": 15, "claimed": 16, "owner": 17}
