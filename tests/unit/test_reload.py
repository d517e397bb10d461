"""Live reload of policy, access and inventory (controller/process/reload.py), on
the real lifecycle and a real store file: a changed ladder takes effect for
the next decision only, every enforcement records the policy version it was
planned with, a broken file changes nothing and is reported, each reload is
an event and an audit entry. The real process and SIGHUP are in
tests/unit/test_service_unit.py; traffic in tests/e2e/test_policy_reload.py."""
import importlib.resources
import ipaddress

import pytest

from controller.process import reload
from enforcement.api import access
from enforcement.domain import policy
from enforcement.domain.model import Decision, Location, State, Subscriber, Violation
from enforcement.lifecycle.service import EnforcementService
from enforcement.store.database import Store
from tests.doubles import Clock, Switches

SHIPPED = importlib.resources.files("enforcement.domain").joinpath(
    "default_policy.toml").read_text(encoding="utf-8")
# Spam's first step becomes a cutoff instead of a port-25 block.
HARSHER = SHIPPED.replace(
    '{ action = "block", protocol = "tcp", ports = [25], direction = "from_subscriber" },',
    '{ action = "cutoff" },', 1)


def decide(service, request_id, ip, violation=Violation.SPAM):
    return service.apply(Decision(request_id, "CASE-1", Subscriber(ipaddress.ip_address(ip)),
                                  violation, "test"), actor="me")


@pytest.fixture
def files(tmp_path):
    assert HARSHER != SHIPPED
    path = tmp_path / "policy.toml"
    path.write_text(SHIPPED)
    return path, reload.Sources(policy=str(path))


@pytest.fixture
def running(files, tmp_path):
    path, sources = files
    switches = Switches()
    service = EnforcementService(switches, policy.load(path), Store(
        f"sqlite:///{tmp_path / 'store.db'}"), clock=Clock())
    reloader = reload.Reloader(sources, reload.load(sources), service)
    return path, service, reloader, switches


def test_the_version_is_the_content_hash_the_same_everywhere(files):
    path, _ = files
    assert policy.load(path).version == policy.load(None).version == policy.version_of(SHIPPED)
    path.write_text(HARSHER)
    assert policy.load(path).version != policy.version_of(SHIPPED)
    assert len(policy.load(path).version) == 16


def test_a_changed_ladder_takes_effect_for_the_next_decision_only(running):
    path, service, reloader, switches = running
    before = decide(service, "r1", "10.0.0.1")
    assert before.action.kind.value == "block"
    assert before.policy_version == policy.version_of(SHIPPED)
    rules_before = switches.rules()
    path.write_text(HARSHER)
    assert reloader.reload(actor="test") is True
    after = decide(service, "r2", "10.0.0.2")
    assert after.action.kind.value == "cutoff"
    assert after.policy_version == policy.version_of(HARSHER) != before.policy_version
    # The live one is untouched: same rules, same version, in memory and store.
    assert service.get(before.id) == before
    assert [r for r in switches.rules() if r.cookie == before.cookie] == [
        r for r in rules_before if r.cookie == before.cookie]
    # Re-planned for a move, it keeps the action of the policy it had.
    switches.hosts["10.0.0.1"] = Location(1, 7, "00:00:00:00:00:01")
    service.host_moved("00:00:00:00:00:01")
    moved = service.get(before.id)
    assert moved.location.port == 7
    assert moved.action == before.action and moved.policy_version == before.policy_version
    assert {dict(r.match).get("tcp_dst") for r in moved.rules} - {None} == {25}


def test_a_broken_file_changes_nothing_and_says_what_is_wrong(running, tmp_path):
    path, service, reloader, _ = running
    version = service.policy.version
    path.write_text(SHIPPED.replace("window_days", "window_dayz", 1))
    assert reloader.reload(actor="test") is False
    assert service.policy.version == version
    assert decide(service, "r1", "10.0.0.1").action.kind.value == "block"
    refused = [e for e in service.watch(still_wanted=iter([True, False]).__next__)
               if e.kind == "reload_refused"]
    assert len(refused) == 1 and "window_days" in refused[0].detail
    assert refused[0].enforcement_id == "" and refused[0].state == ""
    entry = next(e for e in service.audit_log(limit=10) if e.call == "Reload")
    assert (entry.outcome, entry.actor) == ("REFUSED", "test")


def test_every_mistake_in_every_file_is_named_at_once(tmp_path):
    bad_policy = tmp_path / "policy.toml"
    bad_policy.write_text(SHIPPED.replace("window_days", "window_dayz", 1))
    bad_access = tmp_path / "access.toml"
    bad_access.write_text("[clients.x]\nrole = 'nobody-knows-this-role'\n")
    with pytest.raises(reload.Refused) as refused:
        reload.load(reload.Sources(str(bad_policy), str(bad_access),
                                   str(tmp_path / "missing.toml")))
    said = refused.value.mistakes
    assert [m.split(":")[0] for m in said] == ["policy", "access", "inventory"]
    assert "window_days" in said[0] and "missing.toml" in said[2]


def test_a_reload_is_an_event_on_watch_and_an_audit_entry(running):
    path, service, reloader, _ = running
    path.write_text(HARSHER)
    assert reloader.reload(actor="SIGHUP")
    events = list(service.watch(still_wanted=iter([True, False]).__next__))
    reloaded = [e for e in events if e.kind == "policy_reloaded"]
    assert len(reloaded) == 1
    assert policy.version_of(HARSHER) in reloaded[0].detail
    assert f"was {policy.version_of(SHIPPED)}" in reloaded[0].detail
    entry = service.audit_log(limit=10)[0]
    assert (entry.call, entry.outcome, entry.actor) == ("Reload", "OK", "SIGHUP")


def test_access_and_inventory_go_where_the_process_keeps_them(running, tmp_path):
    path, service, _, _ = running
    rules = tmp_path / "access.toml"
    rules.write_text('[clients.case-system]\nrole = "case_system"\n')
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[subscriber]]\naccount = "A-1"\nip = "10.0.0.9"\n'
                         'switch = "1"\nport = 9\n')
    sources = reload.Sources(str(path), str(rules), None)
    given: dict = {}
    reloader = reload.Reloader(sources, reload.load(sources), service,
                               set_access=lambda a: given.setdefault("access", a),
                               set_inventory=lambda p: given.setdefault("pinned", p))
    assert reloader.reload() and given == {}  # nothing changed, nothing replaced
    rules.write_text('[clients.case-system]\nrole = "engineer"\n')
    reloader.sources = reload.Sources(str(path), str(rules), str(inventory))
    assert reloader.reload()
    assert given["access"].role_of("case-system") == "engineer"
    assert [p.account for p in given["pinned"]] == ["A-1"]


def test_a_bucket_follows_reloaded_limits_without_a_fresh_burst():
    now = [0.0]
    limiter = access.ClientLimiter(clock=lambda: now[0])
    tight = access.Limits(requests_per_second=1.0, burst=2, max_in_flight=8,
                          max_watch_streams=2)
    for _ in range(2):
        assert limiter.acquire("c", tight, False) is None
        limiter.release("c", False)
    assert limiter.acquire("c", tight, False) is not None  # spent
    wider = access.Limits(requests_per_second=100.0, burst=200, max_in_flight=8,
                          max_watch_streams=2)
    assert limiter.acquire("c", wider, False) is not None  # still spent: no fresh burst
    now[0] += 0.05
    assert limiter.acquire("c", wider, False) is None  # refilled at the new rate


def test_a_live_enforcement_keeps_its_state_across_reloads(running):
    path, service, reloader, _ = running
    first = decide(service, "r1", "10.0.0.1")
    for text in (HARSHER, SHIPPED, HARSHER):
        path.write_text(text)
        assert reloader.reload()
    assert service.get(first.id).state is State.ACTIVE
    assert service.get(first.id).policy_version == policy.version_of(SHIPPED)


def test_the_metrics_say_which_version_this_instance_runs(running):
    from prometheus_client import generate_latest

    from enforcement.lifecycle.metrics import Metrics
    path, service, reloader, _ = running
    metrics = Metrics(service)

    def said():
        return [line for line in generate_latest(metrics.registry).decode().splitlines()
                if line.startswith("enforcement_policy_info")]
    assert said() == [f'enforcement_policy_info{{version="{policy.version_of(SHIPPED)}"}} 1.0']
    path.write_text(HARSHER)
    assert reloader.reload()
    assert said() == [f'enforcement_policy_info{{version="{policy.version_of(HARSHER)}"}} 1.0']


def test_a_reloaded_inventory_re_pins_and_moves_the_enforcements_it_moved():
    """The OS-Ken app's part of an inventory reload, on its real topology
    state: the new pins locate their subscribers, and a subscriber under
    enforcement whose line the inventory moved has its enforcements follow
    (as a host seen elsewhere does); an unmoved or unenforced one does not."""
    import types

    from controller.openflow.dataplane import Budgets
    from controller.osken.app import EnforcementApp
    from controller.topology.state import TopologyState
    from enforcement.domain.inventory import Pinned

    old = [Pinned("A-1", "10.0.0.1", "00:00:00:00:00:01", 1, 1),
           Pinned("A-2", "10.0.0.2", "00:00:00:00:00:02", 1, 2, ("2001:db8::2",))]
    new = [Pinned("A-1", "10.0.0.1", "00:00:00:00:00:01", 1, 1),
           Pinned("A-2", "10.0.0.2", "00:00:00:00:00:02", 2, 7, ("2001:db8::2",
                                                                 "2001:db8:2::/64")),
           Pinned("A-3", "10.0.0.3", None, 2, 8)]
    moved, marked = [], []
    app = types.SimpleNamespace(
        inventory=old, net=TopologyState(old, Budgets()),
        fabric=types.SimpleNamespace(mark_all=lambda: marked.append(True)),
        service=types.SimpleNamespace(
            is_enforced=lambda mac: mac in ("00:00:00:00:00:01", "00:00:00:00:00:02"),
            host_moved=moved.append))
    assert app.net.locate("10.0.0.2").dpid == 1
    EnforcementApp.repin(app, tuple(new))
    assert app.net.locate("10.0.0.2") == Location(2, 7, "00:00:00:00:00:02")
    assert app.net.host("2001:db8:2::9").account == "A-2"  # the new prefix names it
    assert app.net.host("10.0.0.3").account == "A-3"
    assert moved == [("00:00:00:00:00:02",)] and marked == [True]
