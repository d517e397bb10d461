"""Switch sessions and confirmed transactions.

Owns the connected datapaths and every message sent to them that waits for
an answer: a transaction is a list of messages plus a barrier, sent in one
write; it returns once the switch confirmed all of them (with the bodies of
the multipart replies, per request xid), or raises SwitchError with the
switch's own words. OpenFlow errors are matched to the message that caused
them by xid; one that says this connection is no longer the switch's master
(another controller claimed it with a newer generation id) is also reported
to `on_fenced`, since it proves another instance leads.

Threading: replies arrive on OS-Ken's event thread; transactions are waited
for on any other thread (a transaction must never be run from a handler).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Callable

from controller.openflow import compiler
from enforcement.domain.errors import SwitchError, SwitchUnreachable

LOG = logging.getLogger(__name__)

# Our transaction ids live in the upper half of the 32-bit space so they never
# collide with the ones OS-Ken assigns itself (echo requests and the like).
_XID_BASE = 0x8000_0000


@dataclasses.dataclass
class _Transaction:
    """Messages sent to one switch and the barrier that closes them."""
    described: dict[int, str]
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    errors: list[str] = dataclasses.field(default_factory=list)
    # Bodies of multipart replies, per request xid.
    replies: dict[int, list] = dataclasses.field(default_factory=dict)
    lost: bool = False  # the switch went away before answering


class Sessions:
    def __init__(self, on_fenced: Callable[[int], None] = lambda dpid: None) -> None:
        """on_fenced: called (on the event thread) with the dpid of a switch
        that refused a change because this connection is a slave there."""
        self._lock = threading.Lock()
        self._datapaths: dict[int, object] = {}
        self._pending: dict[tuple[int, int], _Transaction] = {}
        self._xids = itertools.count(1)
        self._on_fenced = on_fenced

    def connected(self, dp) -> None:
        with self._lock:
            self._datapaths[dp.id] = dp

    def disconnected(self, dp) -> bool:
        """Forgets a switch's session, failing what waited on it; False when
        dp is not the current session (a newer one replaced it)."""
        with self._lock:
            if self._datapaths.get(dp.id) is not dp:
                return False
            del self._datapaths[dp.id]
            orphans = [t for (dpid, _), t in self._pending.items() if dpid == dp.id]
        for txn in orphans:
            txn.lost = True
            txn.done.set()
        return True

    def is_connected(self, dpid: int) -> bool:
        with self._lock:
            return dpid in self._datapaths

    def dpids(self) -> list[int]:
        with self._lock:
            return sorted(self._datapaths)

    def transact(self, dpid: int, messages: list, timeout: float,
                 meanwhile: Callable[[], None] | None = None) -> dict[int, list]:
        """Sends messages and a barrier; returns once the switch confirmed all
        of them, raises SwitchError with the switch's own words otherwise.
        meanwhile() is called once sent, before the answer is waited for:
        work of the caller's that needs no answer, done while it travels
        (it must not raise: the answer on its way would go unawaited)."""
        with self._lock:
            dp = self._datapaths.get(dpid)
        if dp is None:
            raise SwitchUnreachable(f"switch {dpid:016x} is not connected")
        # Built outside the lock: a reconcile may compile 100,000 messages.
        txn = _Transaction(described={})
        wire = bytearray()
        for message in [*messages, compiler.barrier()]:
            message.set_xid(_XID_BASE | (next(self._xids) & 0x7FFF_FFFF))
            if isinstance(message, compiler.Wire):
                txn.described[message.xid] = "OFPFlowMod"
                wire += message.bytes()
            else:
                message.datapath = dp
                message.serialize()
                txn.described[message.xid] = type(message).__name__
                wire += message.buf
        with self._lock:
            if self._datapaths.get(dpid) is not dp:
                raise SwitchUnreachable(f"switch {dpid:016x} disconnected")
            for xid in txn.described:
                self._pending[(dpid, xid)] = txn
        try:
            # One write for the whole transaction: the switch reads a stream
            # of messages, and one queue hand-off and one send beat thousands.
            if not dp.send(bytes(wire)):
                raise SwitchUnreachable(f"switch {dpid:016x} connection is closed")
            if meanwhile is not None:
                meanwhile()
            if not txn.done.wait(timeout):
                raise SwitchUnreachable(
                    f"switch {dpid:016x} did not confirm within {timeout:.1f} s")
            if txn.lost:
                raise SwitchUnreachable(
                    f"switch {dpid:016x} disconnected before confirming")
            if txn.errors:
                raise SwitchError(f"switch {dpid:016x} refused: "
                                  + "; ".join(txn.errors))
            return txn.replies
        finally:
            with self._lock:
                for xid in txn.described:
                    self._pending.pop((dpid, xid), None)

    # ---- from the event thread ---------------------------------------------

    def barrier_reply(self, msg) -> None:
        with self._lock:
            txn = self._pending.get((msg.datapath.id, msg.xid))
        if txn is not None:
            txn.done.set()

    def reply(self, msg) -> None:
        """A multipart or role reply: kept for the transaction that asked."""
        with self._lock:
            txn = self._pending.get((msg.datapath.id, msg.xid))
        if txn is not None:
            body = getattr(msg, "body", msg)
            txn.replies.setdefault(msg.xid, []).extend(
                body if isinstance(body, list) else [body])

    def error(self, msg) -> None:
        text = compiler.describe_error(msg.type, msg.code)
        dpid = msg.datapath.id
        if compiler.is_slave_refusal(msg.type, msg.code):
            self._on_fenced(dpid)
        with self._lock:
            txn = self._pending.get((dpid, msg.xid))
        if txn is None:
            if compiler.is_slave_refusal(msg.type, msg.code):
                # OS-Ken's own messages (the LLDP flow it installs at every
                # connection) reaching a switch after this follower's claim.
                LOG.info("switch %016x refused a message: this controller is its "
                         "slave", dpid)
                return
            LOG.error("switch %016x reported %s for xid %#x outside any change",
                      dpid, text, msg.xid)
            return
        txn.errors.append(f"{text} on {txn.described.get(msg.xid, 'a message')}")
