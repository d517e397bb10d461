"""controller/process/heap.py on the real lifecycle (the switch side a recording
double): once enabled, a full collection walks only what is newer than the
last one, not every enforcement the controller knows, and a record that is
replaced or forgotten is still freed (records are acyclic)."""
import gc
import weakref

import pytest

from controller.process import heap
from enforcement.domain import policy
from enforcement.domain.model import Location, Violation
from enforcement.domain.validation import validate_apply
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.doubles import Clock, Switches


@pytest.fixture
def service(tmp_path):
    switches = Switches()
    for n in range(3, 200):
        switches.hosts[f"10.0.0.{n}"] = Location(1, n, f"00:00:00:00:00:{n:02x}")
    yield EnforcementService(switches, policy.load(), Store(f"sqlite:///{tmp_path}/s.db"),
                             clock=Clock())
    heap.stop_freezing()


def decide(service, first, count):
    ips = [f"10.0.0.{n}" for n in range(3, 200)]
    return service.apply_many([validate_apply(
        request_id=f"r{k}", case_id="c", ip=ips[k % len(ips)], mac="",
        violation=Violation.SPAM, reason="heap test") for k in range(first, first + count)])


def test_a_full_collection_walks_only_what_is_newer(service):
    decide(service, 0, 2000)
    heap.keep_full_collections_short()
    frozen = gc.get_freeze_count()
    assert len(gc.get_objects()) < frozen / 20  # what a full collection walks now
    decide(service, 2000, 2000)
    grown = len(gc.get_objects())
    gc.collect()  # a full collection, as CPython starts by itself
    assert gc.get_freeze_count() > frozen + grown / 2  # the survivors frozen in turn
    assert len(gc.get_objects()) < gc.get_freeze_count() / 20
    assert len(service.ledger.by_id) == 4000


def test_a_frozen_record_that_is_replaced_is_still_freed(service):
    [record] = decide(service, 0, 1)
    enforcement_id = record.id
    del record
    heap.keep_full_collections_short()
    frozen = weakref.ref(service.ledger.by_id[enforcement_id])
    assert frozen() is not None
    service.lift_many([(enforcement_id, "over")])  # the ledger keeps the new version
    assert service.ledger.by_id[enforcement_id].state.value == "lifted"
    assert frozen() is None  # reference counting freed the old one, frozen or not
