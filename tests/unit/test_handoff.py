"""Work handed off the event thread starts one thread at most, whatever the
burst (controller/openflow/handoff.py): each new link used to start a thread."""
import threading
import time

from controller.openflow.handoff import Coalesced


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_burst_of_requests_runs_the_call_once_more_not_once_each():
    release = threading.Event()
    running, most = [0], [0]
    lock = threading.Lock()

    def links_changed():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1

    call = Coalesced(links_changed, "links-changed")
    threads_before = threading.active_count()
    call.request()
    wait_for(lambda: call.runs == 1)
    for _ in range(1000):  # a link flapping, forged frames...
        call.request()
    assert threading.active_count() <= threads_before + 1
    release.set()
    wait_for(lambda: not call._running)
    assert call.runs == 2 and most[0] == 1
    call.request()  # idle again: a new request runs it again
    wait_for(lambda: call.runs == 3 and not call._running)


def test_a_failing_call_does_not_stop_later_ones():
    calls = []

    def flaky():
        calls.append(1)
        raise RuntimeError("the store is away")

    call = Coalesced(flaky, "flaky")
    call.request()
    wait_for(lambda: not call._running)
    call.request()
    wait_for(lambda: len(calls) == 2 and not call._running)
