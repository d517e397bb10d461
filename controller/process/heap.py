"""Keeps CPython's full garbage collections short as the controller's
memory grows.

Every enforcement the controller knows (live or ended: the ledger keeps
them) is some 25 tracked objects: rules, matches, addresses. A full
collection walks every tracked object with the GIL held, and CPython runs
one each time the objects that survived since the last grew by a quarter:
at 6,000 enforcements a walk took 0.22 s on a 2-core VM, at 100,000 several
seconds, during which no decision, barrier reply or packet-in moves. That
was the Apply tail at tens of thousands of live enforcements
(bench/results/2026-12-01-latency.md).

So what survives a full collection is frozen (gc.freeze: moved where
collections never look), at start after the store is loaded and after each
full collection, and the next walks only what is newer. What the freeze
gives up: a reference cycle that was alive when frozen and dies later is
never reclaimed. The records, rules and matches are acyclic (frozen
dataclasses, tuples and strings): when a record is replaced or forgotten its
objects are freed by reference counting as before, frozen or not.
"""
from __future__ import annotations

import gc
import logging

LOG = logging.getLogger(__name__)


def _freeze_after_full(phase: str, info: dict) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def keep_full_collections_short() -> None:
    """Collects once, freezes what survived, and freezes again after each
    full collection from now on."""
    gc.collect()
    gc.freeze()
    if _freeze_after_full not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full)
    LOG.info("garbage collection: %d long-lived objects frozen", gc.get_freeze_count())


def stop_freezing() -> None:
    """Undoes keep_full_collections_short (tests)."""
    if _freeze_after_full in gc.callbacks:
        gc.callbacks.remove(_freeze_after_full)
    gc.unfreeze()
