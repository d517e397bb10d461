"""The gRPC server's worker threads, lighter than a ThreadPoolExecutor.

grpcio's synchronous server hands every call to its executor with submit()
and only ever calls add_done_callback() on what comes back (to count calls in
flight). concurrent.futures pays for a full Future per call (a Python
Condition over an RLock, state machine, notify_all): the profile of the
controller at 32 concurrent clients put a fifth of its GIL time in
ThreadPoolExecutor.submit and Future. Here a call is a queue entry and a
C lock: same contract for grpcio, a fraction of the cost.
"""
from __future__ import annotations

import logging
import queue
import threading

LOG = logging.getLogger(__name__)


class _Call:
    __slots__ = ("fn", "args", "kwargs", "_lock", "_callbacks", "_done")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self._lock = threading.Lock()
        self._callbacks: list = []
        self._done = False

    def add_done_callback(self, callback) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def run(self) -> None:
        try:
            self.fn(*self.args, **self.kwargs)
        except BaseException:  # grpcio's behaviours handle their own errors
            LOG.exception("a gRPC worker task failed")
        finally:
            with self._lock:
                self._done = True
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback(self)


class Workers:
    """submit(fn, *args) runs fn on one of at most `count` threads, in order
    of submission; what it returns supports add_done_callback only. Threads
    are started when no idle one is left, as a ThreadPoolExecutor would."""

    def __init__(self, count: int, name: str = "grpc-worker"):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._count = count
        self._name = name
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0

    def submit(self, fn, *args, **kwargs) -> _Call:
        call = _Call(fn, args, kwargs)
        self._queue.put(call)
        with self._lock:
            if self._idle:
                self._idle -= 1  # that one is taking this call
            elif len(self._threads) < self._count:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return call

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join(5)

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            call.run()
            with self._lock:
                self._idle += 1
