"""Group commit: calls that arrive together are run together.

While one batch of decisions is waiting for its switch barrier and its
database commit, the calls that arrive queue up; when it is done, they all
go as the next batch, so the round trip and the fsync are paid once per
batch instead of once per call. A lone call is a batch of one and pays no
extra wait: nothing is delayed to gather company.

No thread of its own: the first caller to find nobody running a batch runs
one (its own call and whatever queued behind it), then hands the role to
the oldest call still queued. Each caller gets its own result or exception.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence


class _Slot:
    __slots__ = ("job", "result", "error", "done", "lead", "wake")

    def __init__(self, job):
        self.job = job
        self.result = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False
        # A bare lock as a one-shot signal, held until the slot is woken:
        # lighter than an Event, and there is exactly one waiter.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    def __init__(self, run: Callable[[Sequence], Sequence], max_batch: int = 256):
        """run(jobs) returns one outcome per job: a value, or an exception
        instance to raise in that job's caller."""
        self._run = run
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: collections.deque[_Slot] = collections.deque()
        self._running = False
        self.batches = 0
        self.jobs = 0

    @property
    def busy(self) -> bool:
        """Whether a batch is running or calls are queued (read without the
        lock: a hint for work that means to let them go first)."""
        return self._running

    def submit(self, job):
        slot = self._enqueue([job])[0]
        self._await(slot)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def submit_many(self, jobs: Sequence) -> list:
        """Several jobs at once (they go in as few batches as the limit
        allows); returns their outcomes in order, exceptions as values."""
        slots = self._enqueue(jobs)
        for slot in slots:
            self._await(slot)
        return [slot.error if slot.error is not None else slot.result for slot in slots]

    def _enqueue(self, jobs: Sequence) -> list[_Slot]:
        slots = [_Slot(job) for job in jobs]
        with self._lock:
            self._queue.extend(slots)
            if slots and not self._running:
                self._running = slots[0].lead = True
        return slots

    def _await(self, slot: _Slot) -> None:
        """Until the slot is done; leads a batch when handed the role (the
        slot is then the oldest queued, so the batch includes it)."""
        if not slot.lead:
            slot.wake.acquire()
        if slot.lead and not slot.done:
            self._lead()

    def _lead(self) -> None:
        with self._lock:
            batch = [self._queue.popleft()
                     for _ in range(min(self._max_batch, len(self._queue)))]
        try:
            outcomes = self._run([slot.job for slot in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(outcomes)} outcomes")
        except BaseException as exc:  # every caller of the batch learns it
            outcomes = [exc] * len(batch)
        for slot, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                slot.error = outcome
            else:
                slot.result = outcome
            slot.done = True
        with self._lock:
            self.batches += 1
            self.jobs += len(batch)
            nxt = self._queue[0] if self._queue else None
            if nxt is None:
                self._running = False
            else:
                nxt.lead = True
        for slot in batch:
            if slot.wake.locked():
                slot.wake.release()
        if nxt is not None:
            nxt.wake.release()
