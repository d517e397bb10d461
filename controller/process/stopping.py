"""SIGTERM and SIGINT: the main thread waits for one, then stops the controller.

The signal's number reaches a pipe the main thread reads, written by
Python's own C-level handler (signal.set_wakeup_fd), on whichever thread the
kernel delivered the signal to. The Python-level handler alone was not
enough: it runs on the main thread between two of its bytecodes, and a main
thread blocked reading the pipe runs none when the signal lands on one of
the controller's many other threads (the read is not interrupted): a stop
that never came, and SIGKILL after the timeout. Before that, a handler that
set a threading.Event could interrupt Event.wait() while it held the event's
own lock, and wait for that lock forever. A pipe needs no lock, and a signal
that came before the wait is still there to be read.
"""
from __future__ import annotations

import os
import signal


class StopSignals:
    """Created on the main thread (set_wakeup_fd and signal.signal want it)."""

    def __init__(self, signums=(signal.SIGINT, signal.SIGTERM)):
        self._signums = set(signums)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # the wakeup fd must not block
        for signum in signums:
            signal.signal(signum, self._handler)
        signal.set_wakeup_fd(self._write)

    def _handler(self, signum, frame) -> None:
        """The wakeup fd already has the number: a handler is what makes
        Python catch the signal (instead of the default, ending the process)."""

    def wait(self) -> int:
        """Until a stop signal came (at once if one came already); its number.
        Every signal Python handles writes its number there (SIGHUP too):
        the others only wake the main thread, which then runs their handlers."""
        while True:
            signum = os.read(self._read, 1)[0]
            if signum in self._signums:
                return signum
