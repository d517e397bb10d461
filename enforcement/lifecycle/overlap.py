"""Work a thread does while it waits for a switch to confirm.

A decision waits about as long for the switch's barrier as it spends on
everything after it (its records, events and audit entries, their encoding
for the store). That work does not depend on what the switch answers, only
on whether it confirms, so the thread that sent the change does it while the
answer travels, and throws it away (enforcement.lifecycle.service rolls the ledger
back) if the switch refuses. Nothing is written or announced before the
confirmation: the store commit and the events still come after it.

Thread-local, because the waiting happens several calls down
(reconcile -> switch sync -> session) from the code that knows the work.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_LOCAL = threading.local()


@contextlib.contextmanager
def meanwhile(work: Callable[[], None]) -> Iterator[Callable[[], bool]]:
    """Within the block, work() runs once, the first time this thread waits
    for a switch (waiting()). Yields ran(): whether it has run, so the
    caller runs it itself after a block that never waited. An exception of
    work() is raised when the block ends, not into the wait: the switch's
    answer is still awaited and booked."""
    outer = getattr(_LOCAL, "work", None)
    state: dict = {"ran": False, "error": None}

    def once() -> None:
        state["ran"] = True
        try:
            work()
        except BaseException as exc:  # raised at the block's end
            state["error"] = exc
    _LOCAL.work = once
    try:
        yield lambda: state["ran"]
    finally:
        _LOCAL.work = outer
    if state["error"] is not None:
        raise state["error"]


def waiting() -> None:
    """Called right after sending, before waiting for the answer: the
    pending work of this thread, if any, runs now (once)."""
    work = getattr(_LOCAL, "work", None)
    if work is not None:
        _LOCAL.work = None
        work()
