"""Live policy reload (SIGHUP) against the real controller and real traffic.

Topology (topologies.LinearTopo(2, 2)): h1 h3 on s1, h2 h4 on s2; h4 listens.
The policy file starts as the shipped one (spam: step 1 blocks TCP 25 from
the subscriber). After it is changed to cut the subscriber off at step 1 and
the controller gets SIGHUP, the next spam decision cuts its subscriber off,
while the subscriber enforced before keeps exactly its port-25 block (its
web traffic still flows). A broken file then changes nothing: the controller
says so on Watch and the next decision still follows the file in force.
"""
import importlib.resources
import signal
import threading

import pytest

from enforcement.domain import policy
from enforcement.v1 import enforcement_pb2 as pb
from testbed import lab as harness
from testbed import topologies

pytestmark = pytest.mark.mininet

SHIPPED = importlib.resources.files("enforcement.domain").joinpath(
    "default_policy.toml").read_text(encoding="utf-8")
CUTOFF_FIRST = SHIPPED.replace(
    '{ action = "block", protocol = "tcp", ports = [25], direction = "from_subscriber" },',
    '{ action = "cutoff" },', 1)


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(SHIPPED)
    return path


@pytest.fixture(scope="module")
def lab(lab_factory, policy_path):
    lab = lab_factory(topologies.LinearTopo(switches=2, hosts_per_switch=2), expected_links=2,
                      controller_args=["--policy", str(policy_path)])
    harness.start_listener(lab.host("h4"), (25, 80))
    return lab


def connects(lab, src, port):
    return harness.tcp_connects(lab.host(src), lab.host("h4").IP(), port)


def spam(lab, host, request_id):
    return lab.stub.Apply(pb.ApplyRequest(
        request_id=request_id, case_id=f"CASE-{request_id}",
        subscriber=pb.Subscriber(ip=lab.host(host).IP()),
        violation=pb.VIOLATION_SPAM, reason="test"))


class Events:
    """A Watch stream read in the background (from the first event: the
    module's store is its own)."""

    def __init__(self, lab):
        self.seen: list = []
        self._call = lab.stub.Watch(pb.WatchRequest())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for event in self._call:
                self.seen.append(event)
        except Exception:  # cancelled at the end of the test
            pass

    def of(self, kind):
        return [e for e in self.seen if e.kind == kind]

    def close(self):
        self._call.cancel()


def running_version(lab):
    return lab.stub.GetTopology(pb.GetTopologyRequest()).policy_version


def test_a_reloaded_ladder_applies_to_the_next_decision_and_not_to_live_ones(
        lab, policy_path):
    events = Events(lab)
    try:
        assert running_version(lab) == policy.version_of(SHIPPED)
        before = spam(lab, "h1", "before-reload")
        assert before.state == pb.STATE_ACTIVE, before.state_reason
        assert before.action.kind == pb.ACTION_KIND_BLOCK
        assert before.policy_version == policy.version_of(SHIPPED)
        assert not connects(lab, "h1", 25) and connects(lab, "h1", 80)

        policy_path.write_text(CUTOFF_FIRST)
        lab.controller.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: running_version(lab) == policy.version_of(CUTOFF_FIRST),
                           10, "the new policy to be in force")
        harness.wait_until(lambda: events.of(pb.EVENT_KIND_POLICY_RELOADED), 5,
                           "the reload on Watch")
        assert policy.version_of(CUTOFF_FIRST) in events.of(
            pb.EVENT_KIND_POLICY_RELOADED)[0].detail

        after = spam(lab, "h2", "after-reload")
        assert after.state == pb.STATE_ACTIVE, after.state_reason
        assert after.action.kind == pb.ACTION_KIND_CUTOFF
        assert after.policy_version == policy.version_of(CUTOFF_FIRST)
        assert not connects(lab, "h2", 80) and not connects(lab, "h2", 25)
        # The one enforced before keeps its rules: port 25 only.
        kept = lab.stub.Get(pb.GetRequest(id=before.id))
        assert kept.policy_version == before.policy_version
        assert list(kept.rules) == list(before.rules)
        assert not connects(lab, "h1", 25) and connects(lab, "h1", 80)
        # Nobody else is touched.
        assert connects(lab, "h3", 25) and connects(lab, "h3", 80)

        policy_path.write_text(CUTOFF_FIRST.replace("[escalation]", "[escalation", 1))
        lab.controller.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: events.of(pb.EVENT_KIND_RELOAD_REFUSED), 10,
                           "the refusal on Watch")
        refused = events.of(pb.EVENT_KIND_RELOAD_REFUSED)[0]
        assert "policy" in refused.detail and str(policy_path) in refused.detail
        assert running_version(lab) == policy.version_of(CUTOFF_FIRST)
        third = spam(lab, "h3", "after-refusal")
        assert third.action.kind == pb.ACTION_KIND_CUTOFF
        assert third.policy_version == policy.version_of(CUTOFF_FIRST)
        assert "reload refused" in lab.log_path.read_text()
    finally:
        events.close()
        for e in lab.stub.List(pb.ListRequest(states=[pb.STATE_ACTIVE])).enforcements:
            lab.stub.Lift(pb.LiftRequest(id=e.id, reason="test over"))
    assert connects(lab, "h1", 25) and connects(lab, "h2", 80)
    problems = [p for p in lab.log_problems() if "reload refused" not in p]
    assert problems == [], "the controller logged errors"
