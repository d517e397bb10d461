"""SIGTERM and SIGINT: the main thread waits for one, then stops the controller.

The handlers only write a byte to a pipe the main thread reads. A Python
handler runs on the main thread between two of its bytecodes: one that set a
threading.Event could interrupt that thread inside Event.wait() while it
holds the event's own lock, and then wait for that lock forever (a stop
that never came, and systemd's SIGKILL after its timeout). A pipe needs no
lock, and a signal that came before the wait is still there to be read.
"""
from __future__ import annotations

import contextlib
import os
import signal


class StopSignals:
    def __init__(self, signums=(signal.SIGINT, signal.SIGTERM)):
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        for signum in signums:
            signal.signal(signum, self._handler)

    def _handler(self, signum, frame) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a stop is pending anyway
            os.write(self._write, bytes([signum]))

    def wait(self) -> int:
        """Until a stop signal came (at once if one came already); its number."""
        return os.read(self._read, 1)[0]
