"""Work handed off the OpenFlow event thread, with a bound on threads.

The event thread must never block (a store write, a switch's barrier), so
what a topology event sets off runs elsewhere. A thread per event let a
burst of events (links flapping) start threads without limit. Coalesced is
a call whose latest state is all that matters (the links changed: re-place
what the new paths affect): it runs on one thread at most, which exists
only while there is work, and requests made while it runs make it run once
more, not once each.
"""
from __future__ import annotations

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
