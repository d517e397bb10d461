"""Work handed off the OpenFlow event thread, with a bound on threads.

The event thread must never block (a store write, a switch's barrier), so
what a topology event sets off runs elsewhere. A thread per event let a
burst of events (links flapping, a subscriber's forged frames) start
threads without limit. Here each kind of work has at most one thread, which
exists only while there is work:

- Coalesced: a call whose latest state is all that matters (the links
  changed: re-place what the new paths affect). Requests made while it runs
  make it run once more, not once each.
- Mailbox: items each delivered once, in order, up to a depth; beyond it
  the newest are dropped and counted (the sender is already bounded by its
  own throttle: this is the backstop).
"""
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)


class Coalesced:
    def __init__(self, call: Callable[[], object], name: str):
        self._call = call
        self._name = name
        self._lock = threading.Lock()
        self._pending = False
        self._running = False
        self.runs = 0

    def request(self) -> None:
        with self._lock:
            self._pending = True
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    return
                self._pending = False
            self.runs += 1
            try:
                self._call()
            except Exception:
                LOG.exception("%s failed", self._name)


class Mailbox:
    def __init__(self, deliver: Callable[[object], object], name: str, depth: int = 256):
        self._deliver = deliver
        self._name = name
        self._depth = depth
        self._lock = threading.Lock()
        self._items: collections.deque = collections.deque()
        self._running = False
        self.dropped = 0

    def put(self, item: object) -> bool:
        with self._lock:
            if len(self._items) >= self._depth:
                self.dropped += 1
                return False
            self._items.append(item)
            if self._running:
                return True
            self._running = True
        threading.Thread(target=self._run, name=self._name, daemon=True).start()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    self._running = False
                    return
                item = self._items.popleft()
            try:
                self._deliver(item)
            except Exception:
                LOG.exception("%s: not delivered", self._name)
