"""SIGHUP (and `systemctl reload`, which sends it) reloads the policy, access
and inventory files (controller/process/reload.py).

The signal handler only wakes a thread of its own: a handler runs in the
main thread between two bytecodes, where taking the lifecycle lock that
thread may already hold would deadlock. Signals that arrive while a reload
runs fold into one more reload, so the files read last are the ones in
force. systemd hears RELOADING=1 before and READY=1 after (Type=notify).
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from controller.process import notify as systemd
from controller.process.reload import Reloader


class OnHangup:
    def __init__(self, reloader: Reloader, wanted: threading.Event,
                 notify: Callable[[str], object] = systemd.notify):
        """wanted: the event the SIGHUP handler sets (installed early by
        controller/main.py; install_handler() for anyone else)."""
        self._reloader = reloader
        self._notify = notify
        self._wanted = wanted
        self.reloads = 0

    @staticmethod
    def install_handler(wanted: threading.Event) -> None:
        signal.signal(signal.SIGHUP, lambda *_: wanted.set())

    def start(self) -> None:
        threading.Thread(target=self._run, name="reload", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            self._notify(systemd.reloading_message("reloading the files"))
            taken = self._reloader.reload(actor="SIGHUP")
            self.reloads += 1
            version = self._reloader.current.policy.version
            self._notify(f"READY=1\nSTATUS=policy {version}"
                         + ("" if taken else " (last reload refused, see the log)"))
