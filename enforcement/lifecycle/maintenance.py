"""The controller-side schedule: expiry and the periodic drift audit.

Runs on every instance and does its work only on the leader, so a follower
that takes over finds the schedule already running.
"""
from __future__ import annotations

import logging
import threading
import time

from enforcement.domain.errors import NotLeader

LOG = logging.getLogger(__name__)


class Maintenance:
    """The controller-side schedule: expiry and the periodic drift audit,
    on one thread that stops when asked (OS-Ken's hub cannot kill threads)."""

    def __init__(self, service, *, audit_interval: float = 10.0,
                 tick: float = 0.25):
        self._service = service
        self._audit_interval = audit_interval
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        next_audit = time.monotonic() + self._audit_interval
        next_report, reported = time.monotonic() + 10, self._service.batch_counts
        while not self._stop.wait(self._tick):
            try:
                if not self._service.leading():
                    # A new leader reconciles every switch as it takes over;
                    # its first audit comes an interval after.
                    next_audit = time.monotonic() + self._audit_interval
                    continue
                if time.monotonic() >= next_report:
                    batches, decisions = self._service.batch_counts
                    if batches > reported[0]:
                        # How well group commit is sharing the work.
                        LOG.info("%d decision(s) in %d batch(es) in the last 10 s",
                                 decisions - reported[1], batches - reported[0])
                    next_report, reported = time.monotonic() + 10, (batches, decisions)
                self._service.expire_due()
                if self._audit_interval > 0 and time.monotonic() >= next_audit:
                    next_audit = time.monotonic() + self._audit_interval
                    self._service.repair_drift()
            except NotLeader as exc:
                # The lease ran out between the look and the round: the new
                # leader runs the schedule.
                LOG.warning("maintenance round not run: %s", exc)
            except Exception:  # keep the schedule alive; the log has it
                LOG.exception("maintenance round failed")
