"""Packet-ins, taken off the OpenFlow event thread into a bounded queue.

OS-Ken delivers every message of a switch, barrier and stats replies
included, through one event queue per app, in order. If learning from
packet-ins ran there, a burst of them would sit in front of the barrier
replies every decision waits for, and a full queue would stall the
switch's reader (echo replies too, until the switch drops the connection).
So the handler only appends here, and one worker learns. When packet-ins
come faster than the worker learns, the oldest are dropped: they describe
the network as it was, and the newest say the same or more.
"""
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)

DEFAULT_DEPTH = 1024


class PacketInQueue:
    def __init__(self, handle: Callable[[int, int, bytes], None],
                 depth: int = DEFAULT_DEPTH):
        if depth < 1:
            raise ValueError("the packet-in queue needs room for one packet at least")
        self._handle = handle
        self._items: collections.deque = collections.deque(maxlen=depth)
        self._ready = threading.Condition()
        self._stopped = False
        self.received = 0
        self.dropped = 0
        self.handled = 0

    def put(self, dpid: int, in_port: int, data: bytes) -> None:
        """Called on the event thread: constant time, never blocks long."""
        with self._ready:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1  # deque(maxlen) evicts the oldest
            self._items.append((dpid, in_port, data))
            self.received += 1
            self._ready.notify()

    def run(self) -> None:
        while True:
            with self._ready:
                while not self._items and not self._stopped:
                    self._ready.wait()
                if self._stopped:
                    return
                dpid, in_port, data = self._items.popleft()
            try:
                self._handle(dpid, in_port, data)
            except Exception:  # one bad frame must not stop learning
                LOG.exception("packet-in from %016x port %d could not be handled",
                              dpid, in_port)
            self.handled += 1

    def start(self) -> threading.Thread:
        worker = threading.Thread(target=self.run, name="packet-in", daemon=True)
        worker.start()
        return worker

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify_all()

    def depth(self) -> int:
        with self._ready:
            return len(self._items)
