"""The gRPC worker pool (enforcement/api/workers.py): grpcio's contract (submit,
add_done_callback), threads only as needed, nothing lost under load."""
import threading
import time

from enforcement.api.workers import Workers


def test_every_call_runs_once_and_its_callbacks_follow():
    pool = Workers(8)
    ran, called = [], []
    lock = threading.Lock()

    def work(n):
        time.sleep(0.001)
        with lock:
            ran.append(n)
    calls = [pool.submit(work, n) for n in range(500)]
    for n, call in enumerate(calls):
        call.add_done_callback(lambda c, n=n: called.append(n))
    deadline = time.monotonic() + 10
    while len(called) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == list(range(500)) and sorted(called) == list(range(500))
    assert len(pool._threads) <= 8
    pool.shutdown()


def test_a_callback_added_after_the_call_finished_runs_at_once():
    pool = Workers(2)
    call = pool.submit(lambda: None)
    time.sleep(0.1)
    seen = []
    call.add_done_callback(seen.append)
    assert seen == [call]
    pool.shutdown()


def test_threads_are_started_only_as_calls_need_them():
    pool = Workers(64)
    for _ in range(20):
        pool.submit(lambda: None)
        time.sleep(0.005)
    assert len(pool._threads) <= 3, "an idle thread takes the next call"
    gate = threading.Event()
    for _ in range(10):
        pool.submit(gate.wait, 5)
    time.sleep(0.1)
    assert 10 <= len(pool._threads) <= 13
    gate.set()
    pool.shutdown()


def test_a_failing_call_is_logged_and_the_worker_goes_on(caplog):
    pool = Workers(1)
    pool.submit(lambda: 1 / 0)
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(5)
    assert "a gRPC worker task failed" in caplog.text
    pool.shutdown()
