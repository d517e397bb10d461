"""The typed client and enforcementctl against several controller instances
(high availability): real gRPC servers on real sockets, each a small
servicer that answers, refuses with UNAVAILABLE, loses its answer or freezes,
and records what it was asked. The instances share one store, as real ones
share the database."""
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest

from enforcement.clients.cli import build_parser
from enforcement.clients.client import ClientError, EnforcementClient
from enforcement.v1 import enforcement_pb2 as pb
from enforcement.v1 import enforcement_pb2_grpc as pb_grpc


def dead_address() -> str:
    """An address nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class Store:
    """What the instances share: enforcements by id, events by sequence."""

    def __init__(self, events: int = 0):
        self.lock = threading.Lock()
        self.enforcements: dict[str, pb.Enforcement] = {}
        self.events = [pb.Event(sequence=n, enforcement_id=f"enf-{n}")
                       for n in range(1, events + 1)]


class Instance(pb_grpc.EnforcementServiceServicer):
    """behaviour: "answer"; "unavailable" (refuses every call); "loses"
    (does the work, then the answer is lost); "frozen" (takes the call and
    never answers). Watch streams the shared events after the one asked for,
    up to `stream_until`, then holds the stream open."""

    def __init__(self, store: Store, behaviour: str = "answer", stream_until: int = 0):
        self.store = store
        self.behaviour = behaviour
        self.stream_until = stream_until
        self.calls: list[tuple[str, str]] = []
        self.watched_after: list[int] = []
        self.agents: list[str] = []
        self.thaw = threading.Event()

    def _answer(self, context, answer):
        if self.behaviour == "frozen":
            self.thaw.wait(30)
        if self.behaviour in ("unavailable", "loses", "frozen"):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"instance {self.behaviour}")
        return answer

    def Apply(self, request, context):
        self.calls.append(("Apply", request.request_id))
        if self.behaviour == "unavailable":
            return self._answer(context, None)
        with self.store.lock:
            record = next((e for e in self.store.enforcements.values()
                           if e.request_id == request.request_id), None)
            if record is None:
                record = pb.Enforcement(id=f"enf-{len(self.store.enforcements) + 1}",
                                        request_id=request.request_id,
                                        case_id=request.case_id, state=pb.STATE_ACTIVE)
                self.store.enforcements[record.id] = record
        return self._answer(context, record)

    def Lift(self, request, context):
        self.calls.append(("Lift", request.id))
        if self.behaviour == "unavailable":
            return self._answer(context, None)
        with self.store.lock:
            record = self.store.enforcements[request.id]
            if record.state == pb.STATE_LIFTED:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "already lifted")
            record.state = pb.STATE_LIFTED
        return self._answer(context, record)

    def Get(self, request, context):
        self.calls.append(("Get", request.id))
        record = self.store.enforcements.get(request.id, pb.Enforcement(id=request.id))
        return self._answer(context, record)

    def List(self, request, context):
        self.calls.append(("List", ""))
        self.agents.append(dict(context.invocation_metadata()).get("user-agent", ""))
        return self._answer(context, pb.ListResponse(
            enforcements=list(self.store.enforcements.values())))

    def Watch(self, request, context):
        self.watched_after.append(request.after_sequence)
        if self.behaviour == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "instance unavailable")
        for event in self.store.events:
            if request.after_sequence < event.sequence <= self.stream_until:
                yield event
        while context.is_active() and not self.thaw.wait(0.05):
            pass


@pytest.fixture
def cluster():
    """start(instance) -> its address; every server stops at the end."""
    servers: list[tuple[grpc.Server, Instance]] = []

    def start(instance: Instance) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_EnforcementServiceServicer_to_server(instance, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        instance.server = server
        servers.append((server, instance))
        return f"127.0.0.1:{port}"

    yield start
    for server, instance in servers:
        instance.thaw.set()
        server.stop(None)


def timed(call):
    began = time.monotonic()
    try:
        return call(), time.monotonic() - began
    except ClientError as err:
        return err, time.monotonic() - began


# ---- addresses ---------------------------------------------------------------------


def test_addresses_as_one_a_comma_list_or_a_list():
    assert EnforcementClient("a:1").addresses == ("a:1",)
    assert EnforcementClient("a:1, b:2,,c:3 ").addresses == ("a:1", "b:2", "c:3")
    assert EnforcementClient(["a:1", "b:2"]).addresses == ("a:1", "b:2")
    assert EnforcementClient(("[::1]:1", "b:2")).addresses == ("[::1]:1", "b:2")
    for nothing in ("", " , ", []):
        with pytest.raises(ValueError, match="no controller address"):
            EnforcementClient(nothing)


def test_channel_options_reach_every_instance(cluster):
    store = Store()
    refusing, live = Instance(store, "unavailable"), Instance(store)
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.primary_user_agent", "bench")]
    with EnforcementClient([cluster(refusing), cluster(live)],
                           channel_options=options) as ctl:
        ctl.list()
    assert refusing.agents[0].startswith("bench ") and live.agents[0].startswith("bench ")


def test_construction_never_waits_for_an_instance():
    began = time.monotonic()
    # A blackholed address and a refused one: nothing is dialled until a call.
    with EnforcementClient(["192.0.2.1:50051", dead_address()]):
        pass
    assert time.monotonic() - began < 0.5


# ---- unary calls -------------------------------------------------------------------


def test_a_dead_first_address_fails_over_to_the_second_at_once(cluster):
    store = Store()
    live = Instance(store)
    address = cluster(live)
    with EnforcementClient(f"{dead_address()},{address}", timeout=5) as ctl:
        record, took = timed(lambda: ctl.apply(ip="10.0.0.1", violation="spam",
                                               case_id="C-1"))
        assert record.state == pb.STATE_ACTIVE
        # Moving on to an instance not tried yet does not back off.
        assert took < 0.5
        # And the next call goes straight to the instance that answered.
        ctl.get(record.id)
    assert [c[0] for c in live.calls] == ["Apply", "Get"]


def test_an_instance_answering_unavailable_hands_the_call_to_the_next(cluster):
    store = Store()
    refusing, live = Instance(store, "unavailable"), Instance(store)
    with EnforcementClient([cluster(refusing), cluster(live)], timeout=5) as ctl:
        record, took = timed(lambda: ctl.apply(ip="10.0.0.1", violation="spam",
                                               case_id="C-1"))
    assert record.state == pb.STATE_ACTIVE and took < 0.5
    assert [c[0] for c in refusing.calls] == ["Apply"]
    assert [c[0] for c in live.calls] == ["Apply"]


def test_healthy_calls_stick_to_one_instance_and_stay_after_a_failover(cluster):
    store = Store()
    first, second = Instance(store), Instance(store)
    with EnforcementClient([cluster(first), cluster(second)], timeout=5) as ctl:
        for _ in range(5):
            ctl.list()
        assert len(first.calls) == 5 and not second.calls  # no round robin
        first.behaviour = "unavailable"
        ctl.list()
        first.behaviour = "answer"  # back, but the client has moved on
        for _ in range(3):
            ctl.list()
    assert len(first.calls) == 6 and len(second.calls) == 4


def test_when_every_instance_is_dead_the_error_comes_within_the_deadline():
    addresses = [dead_address() for _ in range(3)]
    with EnforcementClient(addresses, timeout=1.5, attempts=100) as ctl:
        error, took = timed(lambda: ctl.get("enf-1"))
    assert isinstance(error, ClientError) and error.unreachable
    assert error.code == grpc.StatusCode.UNAVAILABLE  # the real cause, not "no time"
    # Backoff between rounds, but none slept past the deadline.
    assert took < 1.5 + 0.3


def test_a_frozen_instance_gets_only_its_share_of_the_deadline(cluster):
    store = Store()
    frozen, live = Instance(store, "frozen"), Instance(store)
    addresses = [cluster(frozen), cluster(live)]
    with EnforcementClient(addresses, timeout=2.0) as ctl:
        record, took = timed(lambda: ctl.get("enf-1"))
        # Two instances: the frozen one had half the deadline, then the live
        # one answered with the other half still in hand.
        assert record.id == "enf-1", record
        assert 0.9 < took < 1.6
        _, again = timed(lambda: ctl.get("enf-1"))
    assert again < 0.5 and len(frozen.calls) == 1  # it stays on the live one
    with EnforcementClient(addresses, timeout=2.0, attempt_timeout=0.3) as ctl:
        record, took = timed(lambda: ctl.get("enf-1"))
    assert record.id == "enf-1" and 0.25 < took < 0.8


def test_a_dead_instance_leaves_its_share_to_the_others(cluster):
    store = Store()
    frozen, live = Instance(store, "frozen"), Instance(store)
    with EnforcementClient([dead_address(), cluster(frozen), cluster(live)],
                           timeout=2.0) as ctl:
        record, took = timed(lambda: ctl.get("enf-1"))
    # The dead one failed at once, so the frozen one had half of the two
    # seconds, not a third.
    assert record.id == "enf-1" and 0.9 < took < 1.6


def test_only_frozen_instances_end_in_deadline_exceeded_on_time(cluster):
    store = Store()
    addresses = [cluster(Instance(store, "frozen")), cluster(Instance(store, "frozen"))]
    with EnforcementClient(addresses, timeout=1.0, attempts=100) as ctl:
        error, took = timed(lambda: ctl.get("enf-1"))
    assert isinstance(error, ClientError)
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.9 < took < 1.4


def test_apply_retried_on_another_instance_carries_the_same_request_id(cluster):
    store = Store()
    losing, live = Instance(store, "loses"), Instance(store)
    with EnforcementClient([cluster(losing), cluster(live)], timeout=5) as ctl:
        record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1")
    (_, first_id), = losing.calls
    (_, second_id), = live.calls
    assert first_id == second_id == record.request_id
    # The first instance did the work; the second found it by its request id.
    assert list(store.enforcements) == [record.id]


def test_a_lift_lost_on_one_instance_and_retried_on_another_returns_the_lifted(cluster):
    store = Store()
    losing, live = Instance(store), Instance(store)
    with EnforcementClient([cluster(losing), cluster(live)], timeout=5) as ctl:
        record = ctl.apply(ip="10.0.0.1", violation="spam", case_id="C-1")
        losing.behaviour = "loses"
        lifted = ctl.lift(record.id, "done")
    assert lifted.state == pb.STATE_LIFTED
    assert [c[0] for c in live.calls] == ["Lift", "Get"]


def test_refusals_do_not_fail_over(cluster):
    class Refusing(Instance):
        def Get(self, request, context):
            self.calls.append(("Get", request.id))
            context.abort(grpc.StatusCode.NOT_FOUND, "no such enforcement")

    store = Store()
    refusing, other = Refusing(store), Instance(store)
    with (EnforcementClient([cluster(refusing), cluster(other)], timeout=5) as ctl,
          pytest.raises(ClientError) as caught):
        ctl.get("enf-9")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert len(refusing.calls) == 1 and not other.calls


# ---- watch -------------------------------------------------------------------------


def test_watch_resumes_on_the_next_instance_after_the_last_event_seen(cluster):
    store = Store(events=6)
    dying, other = Instance(store, stream_until=3), Instance(store, stream_until=6)
    addresses = [cluster(dying), cluster(other)]
    seen = []
    with EnforcementClient(addresses) as ctl:
        for event in ctl.watch():
            seen.append(event.sequence)
            if event.sequence == 3:
                dying.server.stop(0)  # the instance goes away mid-stream
            if event.sequence == 6:
                break
    assert seen == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
    assert dying.watched_after == [0] and other.watched_after == [3]


def test_watch_skips_a_dead_and_a_refusing_instance(cluster, monkeypatch):
    import enforcement.clients.client as client_module
    slept: list[float] = []

    class Clock:
        """The client's time, recording its pauses (not timing them: a busy
        machine would make a timed check flake)."""
        def __getattr__(self, name):
            return getattr(time, name)

        def sleep(self, seconds):
            slept.append(seconds)
            time.sleep(seconds)
    monkeypatch.setattr(client_module, "time", Clock())
    store = Store(events=2)
    refusing, live = Instance(store, "unavailable"), Instance(store, stream_until=2)
    seen = []
    with EnforcementClient([dead_address(), cluster(refusing), cluster(live)]) as ctl:
        for event in ctl.watch(after_sequence=1):
            seen.append(event.sequence)
            break
    assert seen == [2] and slept == []  # no pause on the way to the live one
    assert refusing.watched_after == [1] and live.watched_after == [1]


# ---- enforcementctl ----------------------------------------------------------------


def _ctl(*args, env=None):
    return subprocess.run([sys.executable, "-m", "enforcement.clients.cli", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_cli_server_takes_a_comma_list():
    args = build_parser().parse_args(["--server", "ctl1:50051, ctl2:50051", "list"])
    assert EnforcementClient(args.server).addresses == ("ctl1:50051", "ctl2:50051")
    assert "separated by commas" in build_parser().format_help()


def test_cli_fails_over_from_a_dead_instance(cluster):
    store = Store()
    store.enforcements["enf-1"] = pb.Enforcement(id="enf-1", case_id="C-7",
                                                 state=pb.STATE_ACTIVE)
    address = cluster(Instance(store))
    listed = _ctl("--server", f"{dead_address()},{address}", "--timeout", "5", "list")
    assert listed.returncode == 0, listed.stderr
    assert "C-7" in listed.stdout
    from_env = _ctl("list", env={"ENFORCEMENT_SERVER": f"{dead_address()},{address}"})
    assert from_env.returncode == 0 and "C-7" in from_env.stdout
    all_dead = _ctl("--server", f"{dead_address()},{dead_address()}", "--timeout", "1",
                    "list")
    assert all_dead.returncode == 3 and "UNAVAILABLE" in all_dead.stderr
    assert _ctl("--server", ",", "list").returncode == 2
